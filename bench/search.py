"""Search at scale: each faiss index kind over 10^6 synthetic 512-d CLIP-like vectors, with text-like queries.

Per kind: build time and peak memory (each built in its own process), bytes per vector, recall@10 against exact
search (the index alone, and after re-ranking its candidates exactly, as `capsearch search` does), and the
latency of one query through capsearch's search code. Then, for the kind `auto` picks: CLIP text encoding
(random weights of the real ViT-B/32 size) timed apart, and the whole query through `capsearch serve` over HTTP.
Run: `python bench/search.py` (about 10 minutes on 2 cores; `--vectors 100000` for a quick look).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import torch
from base_models import build_base_models, describe_machine  # bench/ is the script folder

from capsearch.ann import build_index, choose_kind, load_index, save_index
from capsearch.data.images import ImageSource
from capsearch.demo.vectors import clip_like_images, text_like_queries
from capsearch.evaluation.index_quality import kth_scores, neighbour_recall
from capsearch.index import ModelRef, SearchIndex
from capsearch.params import IndexParams
from capsearch.search import search

KINDS = ("exact", "hnsw", "ivf_sq8", "ivf_pq")
SEARCH_KNOBS = {  # search-time settings tried on each built index (index.candidates exact re-ranks each time)
    "hnsw": [("hnsw_ef_search", 128), ("hnsw_ef_search", 256)],
    "ivf_sq8": [("ivf_nprobe", 32), ("ivf_nprobe", 64), ("ivf_nprobe", 128)],
    "ivf_pq": [("ivf_nprobe", 32), ("ivf_nprobe", 64)],
}
QUERIES = ["man riding a horse", "dog jumping into a pool", "children playing on the beach", "a red circle"]


def percentiles(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {"p50_ms": 1000 * statistics.median(ordered), "p95_ms": 1000 * ordered[int(0.95 * (len(ordered) - 1))]}


def memory_gb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process from /proc, in GiB; both are per process image, so a
    child started by spawn does not inherit its parent's peak (``ru_maxrss`` does)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 2**20
    raise KeyError(field)


def build_in_child(vectors_file: str, kind: str, index_file: str, queue: multiprocessing.Queue) -> None:
    """Build one kind in a fresh process, so its peak memory is its own."""
    vectors = np.load(vectors_file)  # the gallery in memory, as a build from the embed stage's output holds it
    before = memory_gb("VmRSS")
    ann = build_index(vectors, IndexParams(kind=kind))
    peak = memory_gb("VmHWM")  # before writing: faiss's writer may buffer
    queue.put(
        {
            "factory": ann.description,
            "build_s": ann.build_seconds,
            "bytes_per_vector": save_index(ann, index_file),
            "rss_with_vectors_gb": before,
            "peak_rss_gb": peak,
        }
    )


def build(vectors_file: Path, kind: str, index_file: Path) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=build_in_child, args=(str(vectors_file), kind, str(index_file), queue))
    child.start()
    result = queue.get()
    child.join()
    return result


def serve_in_thread(index: SearchIndex, embed) -> tuple[str, object]:
    import uvicorn

    from capsearch.serve import Service, bind, create_app

    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(create_app(Service(index, embed, "bench")), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    while not server.started:
        time.sleep(0.05)
    return url, server


def main() -> None:
    os.environ["CAPSEARCH_PROGRESS"] = "0"
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--latency-queries", type=int, default=200)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--out", default="bench/results/search.json")
    args = parser.parse_args()
    params = IndexParams()
    work = Path(tempfile.mkdtemp(prefix="capsearch-bench-search-"))
    started = time.perf_counter()
    images = clip_like_images(args.vectors, 512)
    queries, _ = text_like_queries(images, args.queries)
    np.save(work / "images.npy", images)
    print(f"{args.vectors} vectors generated in {time.perf_counter() - started:.0f}s", flush=True)
    started = time.perf_counter()
    image_queries = images[np.sort(np.random.default_rng(2).choice(len(images), 200, replace=False))]
    kth, image_kth = kth_scores(queries, images, 10), kth_scores(image_queries, images, 10)
    print(f"exact 10th scores of {args.queries} text queries in {time.perf_counter() - started:.0f}s", flush=True)
    del images
    gallery = np.load(work / "images.npy", mmap_mode="r")  # search reads the vectors memory-mapped
    ids = [f"{i:08d}.jpg" for i in range(args.vectors)]
    index = SearchIndex(ids, gallery, [""] * len(ids), gallery, ImageSource(work), ModelRef("synthetic"))
    results: dict = {"machine": describe_machine(torch.device("cpu")), "vectors": args.vectors, "kinds": {}}
    for kind in args.kinds.split(","):
        row = build(work / "images.npy", kind, work / f"{kind}.faiss")
        row["search"] = {}
        for knob, value in SEARCH_KNOBS.get(kind, [("default", 0)]):
            knobs = IndexParams(**{knob: value}) if knob != "default" else params
            ann = load_index(work / f"{kind}.faiss", knobs)
            raw = ann.candidates(queries, 10)
            index.ann, index.candidates = {"image": ann, "caption": ann}, params.candidates
            hits = search(index, queries, 10, "image")
            reranked = np.array([[int(h.image_id[:8]) for h in row_hits] for row_hits in hits])
            times = []
            for query in queries[: args.latency_queries]:
                begin = time.perf_counter()
                search(index, query[None, :], 10, "image")
                times.append(time.perf_counter() - begin)
            row["search"][f"{knob}={value}" if knob != "default" else "default"] = {
                "recall_at_10_text": neighbour_recall(queries, gallery, raw, 10, kth),
                "reranked_recall_at_10_text": neighbour_recall(queries, gallery, reranked, 10, kth),
                "recall_at_10_image": neighbour_recall(
                    image_queries, gallery, ann.candidates(image_queries, 10), 10, image_kth
                ),
                **percentiles(times),
            }
        results["kinds"][kind] = row
        print(f"{kind}: {json.dumps(row)}", flush=True)
    auto = choose_kind(args.vectors, params)
    if auto in results["kinds"]:
        _, clip_dir = build_base_models(work / "models", blip=False)
        from capsearch.models.embedder import DualEncoder

        embedder = DualEncoder(str(clip_dir), precision="auto", device="cpu")
        encode_times = []
        for i in range(args.latency_queries):
            begin = time.perf_counter()
            embedder.embed_texts([QUERIES[i % len(QUERIES)]])
            encode_times.append(time.perf_counter() - begin)
        index.ann = {side: load_index(work / f"{auto}.faiss", params) for side in ("image", "caption")}
        url, server = serve_in_thread(index, lambda texts: embedder.embed_texts(texts).vectors)
        http_times = []
        for i in range(args.latency_queries):
            query = urllib.parse.urlencode({"q": f"{QUERIES[i % len(QUERIES)]} {i}", "k": 10})
            begin = time.perf_counter()
            with urllib.request.urlopen(f"{url}/api/search?{query}") as response:
                assert len(json.loads(response.read())["hits"]) == 10
            http_times.append(time.perf_counter() - begin)
        server.should_exit = True
        results["auto"] = {
            "kind": auto,
            "clip_text_encode": percentiles(encode_times) | {"precision": str(embedder.dtype)},
            "http_end_to_end": percentiles(http_times),
        }
        print(f"auto = {auto}: {json.dumps(results['auto'])}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
