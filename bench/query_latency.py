"""Query latency of `capsearch search`: text encode + one matrix product + top-k over 8,091 images.

Builds a random-weight CLIP of the real ViT-B/32 size from its default config (no download; compute does not
depend on the weights), saves it with save_pretrained and loads it through capsearch's own DualEncoder, then
times `embed_texts` + `search` exactly as the CLI runs them. Run: `python bench/query_latency.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from base_models import build_base_models, describe_machine  # bench/ is the script folder

from capsearch.data.images import ImageSource
from capsearch.index import ModelRef, SearchIndex
from capsearch.models.embedder import DualEncoder
from capsearch.search import search

QUERIES = ["man riding a horse", "dog jumping into a pool", "children playing on the beach", "a red circle"]


def unit_rows(rng: np.random.Generator, count: int, dim: int) -> np.ndarray:
    rows = rng.normal(size=(count, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=8091)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--out", default="bench/results/query_latency.json")
    args = parser.parse_args()
    os.environ["CAPSEARCH_PROGRESS"] = "0"
    torch.manual_seed(0)
    machine = describe_machine(torch.device("cpu"))
    results = {"machine": machine, "threads": torch.get_num_threads(), "images": args.images, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        _, clip_dir = build_base_models(tmp, blip=False)
        rng = np.random.default_rng(0)
        for precision in ("fp32", "auto"):
            embedder = DualEncoder(str(clip_dir), None, precision, "cpu")
            dim = embedder.dim
            index = SearchIndex(
                ids=[f"{i}.jpg" for i in range(args.images)],
                image_vectors=unit_rows(rng, args.images, dim),
                generated=["caption"] * args.images,
                generated_vectors=unit_rows(rng, args.images, dim),
                source=ImageSource(tmp),
                clip=ModelRef(str(clip_dir)),
            )
            for query in QUERIES:  # warm-up
                search(index, embedder.embed_texts([query]).vectors, 5)
            single = []
            for i in range(args.repeats):
                started = time.perf_counter()
                search(index, embedder.embed_texts([QUERIES[i % len(QUERIES)]]).vectors, 5)
                single.append(1000 * (time.perf_counter() - started))
            batch = [QUERIES[i % len(QUERIES)] + f" {i}" for i in range(args.batch)]
            started = time.perf_counter()
            hits = search(index, embedder.embed_texts(batch, batch_size=256).vectors, 5, method="fusion")
            batch_ms = 1000 * (time.perf_counter() - started)
            assert len(hits) == args.batch
            results["runs"].append(
                {
                    "precision": str(embedder.dtype).replace("torch.", ""),
                    "one_query_median_ms": round(statistics.median(single), 2),
                    "one_query_p90_ms": round(sorted(single)[int(0.9 * len(single)) - 1], 2),
                    f"batch_{args.batch}_queries_ms": round(batch_ms, 1),
                    "batch_ms_per_query": round(batch_ms / args.batch, 2),
                }
            )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
