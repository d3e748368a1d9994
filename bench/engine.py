"""``python bench/engine.py``: the local engine against Ray Data on the same images, same run, same machine.

embed_images of random-weight CLIP ViT-B/32 (the real size; see ``bench/stages.py``) over generated 500x375 JPEGs
packed as img2dataset shards, end to end from the shards through the stage's own call
(:func:`capsearch.engine.compute_parts`, parts written, nothing reused), model loading included:

- ``local``: this process (the wrappers' loop, ``runtime`` defaults for the device);
- ``ray, N actor(s)``: Ray Data on a local Ray of every core (started once, its start timed on its own), decoding
  in CPU tasks and N model actors;

then the two halves apart: decode + resize only (capsearch's decoder in this process, and as Ray tasks), and the
model only (uint8 batches already in memory); and subset's decodability checks in one process and on every
core. With ``--caption``, captioning (BLIP-base, greedy, 20 tokens) gets the local and one-actor Ray rows too.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import torch
from base_models import build_base_models, describe_machine  # bench/ is the script folder

from capsearch.artifacts import PartStore, plan_parts
from capsearch.data.images import ImageSource
from capsearch.data.subset import build_subset, check_workers
from capsearch.engine import compute_parts
from capsearch.job import ImageTask
from capsearch.models.captioner import Captioner
from capsearch.models.embedder import DualEncoder
from capsearch.models.runtime import resolve_device, resolve_runtime
from capsearch.params import RuntimeParams
from capsearch.ray_engine import decode_batch
from stages import GREEDY, write_photos

PRESETS = {
    "cpu": {"images": 256, "captions": 24, "batch": 64},
    "cuda": {"images": 8091, "captions": 2048, "batch": 1024},
}


def write_shards(photos: Path, names: list[str], out: Path, per_shard: int) -> Path:
    """The photos as img2dataset shards (KEY.jpg, KEY.txt, KEY.json) in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(names), per_shard):
        with tarfile.open(out / f"{start // per_shard:05d}.tar", "w") as tar:
            for offset, name in enumerate(names[start : start + per_shard]):
                key = f"{start // per_shard:05d}{offset:04d}"
                for suffix, data in (
                    (".jpg", (photos / name).read_bytes()),
                    (".txt", b"a photo"),
                    (".json", json.dumps({"key": key}).encode()),
                ):
                    info = tarfile.TarInfo(key + suffix)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return out


class Table:
    """Rows of the benchmark, printed as they come."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, work: str, way: str, count: int, seconds: float) -> float:
        rate = count / seconds
        self.rows.append(
            {"work": work, "way": way, "items": count, "seconds": round(seconds, 3), "per_second": round(rate, 2)}
        )
        print(f"{work:<28} {way:<52} {count:>6} in {seconds:8.2f}s = {rate:10.2f}/s", flush=True)
        return rate


def stage_call(task: ImageTask, rows: list[tuple[str, str]], knobs: RuntimeParams, out: Path) -> float:
    """Seconds for one stage call from nothing: load, compute every part, write parts and manifest."""
    store = PartStore(out, task.output_kind, task.identity())
    start = time.perf_counter()
    compute_parts(task, plan_parts(rows), store, resolve_runtime(knobs, use_cache=False), knobs)
    return time.perf_counter() - start


def decode_rates(table: Table, task: ImageTask, rows: list[tuple[str, str]], batch: int) -> None:
    pipeline = task.pixel_pipeline()
    sources: dict[str, ImageSource] = {}
    start = time.perf_counter()
    for image_id, shard in rows:
        source = sources.setdefault(shard, ImageSource(shard))
        pipeline(source.open_rgb(image_id, pipeline.draft_size))
    table.add("decode + resize only", "this process", len(rows), time.perf_counter() - start)
    items = [{"part": 0, "row": i, "shard": shard, "image_id": image_id} for i, (image_id, shard) in enumerate(rows)]
    start = time.perf_counter()
    dataset = ray.data.from_items(items, override_num_blocks=max(1, len(items) // batch)).map_batches(
        decode_batch, fn_kwargs={"pipeline": pipeline}, batch_size=batch
    )
    count = sum(len(b["image_id"]) for b in dataset.iter_batches(batch_size=None, batch_format="numpy"))
    table.add("decode + resize only", f"Ray tasks ({os.cpu_count()} CPUs)", count, time.perf_counter() - start)


def model_rate(table: Table, task: ImageTask, rows: list[tuple[str, str]], batch: int, device: str) -> None:
    pipeline = task.pixel_pipeline()
    source = ImageSource(rows[0][1])
    ids = [image_id for image_id, shard in rows if shard == rows[0][1]][:batch]
    pixels = torch.stack([pipeline(source.open_rgb(i, pipeline.draft_size)) for i in ids])
    wrapper = task.load(device)
    task.apply(wrapper, pixels[:2])  # warm-up
    repeats = max(1, len(rows) // len(ids))
    start = time.perf_counter()
    for _ in range(repeats):
        task.apply(wrapper, pixels)
    if device == "cuda":
        torch.cuda.synchronize()
    table.add(f"{task.kind} model only", f"{device}, batch {len(ids)}", repeats * len(ids), time.perf_counter() - start)


def subset_check_rates(table: Table, source: ImageSource) -> None:
    """subset's decodability checks (every image, at a reduced JPEG scale) in 1 process and in every core."""
    for workers in sorted({1, check_workers("auto")}):
        start = time.perf_counter()
        chosen = build_subset(None, source, "all", "all", 0, workers=workers)
        table.add("subset decode checks", f"{workers} process(es)", len(chosen.images), time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python bench/engine.py", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--images", type=int)
    parser.add_argument("--caption", action="store_true", help="also time captioning (slow on a CPU)")
    parser.add_argument("--models-dir", default="build/bench/models")
    parser.add_argument("--images-dir", default="build/bench/photos")
    parser.add_argument("--out", default="bench/results/engine.json")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    preset = PRESETS["cuda" if device.type == "cuda" else "cpu"]
    count = args.images or preset["images"]
    blip_dir, clip_dir = build_base_models(args.models_dir, blip=args.caption)
    photos = Path(args.images_dir)
    names = write_photos(photos, count)
    table = Table()
    with tempfile.TemporaryDirectory(prefix="capsearch-engine-bench-") as tmp:
        shard_dir = write_shards(photos, names, Path(tmp) / "shards", per_shard=max(16, count // 8))
        source = ImageSource(shard_dir)
        rows = [(image_id, str(source.shard_of(image_id))) for image_id in source.ids()]
        embed = ImageTask(DualEncoder, str(clip_dir), "main", "auto", device.type)
        batch = preset["batch"]
        local = RuntimeParams(device=device.type, batch_size={"embed_images": batch, "caption": 16})
        started = time.perf_counter()
        ray.init(address="local", include_dashboard=False, object_store_memory=1024**3)
        ray_start = time.perf_counter() - started
        print(f"Ray started in {ray_start:.1f}s", flush=True)
        base = table.add("embed_images", "local engine", len(rows), stage_call(embed, rows, local, Path(tmp) / "l"))
        ray_rates = {}
        for actors in (1, 2):
            knobs = RuntimeParams(device=device.type, batch_size=local.batch_size, engine="ray", ray_actors=actors)
            seconds = stage_call(embed, rows, knobs, Path(tmp) / f"r{actors}")
            ray_rates[actors] = table.add("embed_images", f"Ray engine, {actors} model actor(s)", len(rows), seconds)
        decode_rates(table, embed, rows, batch)
        subset_check_rates(table, source)
        model_rate(table, embed, rows, batch, device.type)
        if args.caption:
            caption = ImageTask(Captioner, str(blip_dir), "main", "auto", device.type, GREEDY)
            few = rows[: preset["captions"]]
            one = RuntimeParams(device=device.type, batch_size=local.batch_size, engine="ray", ray_actors=1)
            table.add(
                "caption (greedy, 20 tok)", "local engine", len(few), stage_call(caption, few, local, Path(tmp) / "cl")
            )
            table.add(
                "caption (greedy, 20 tok)",
                "Ray engine, 1 model actor",
                len(few),
                stage_call(caption, few, one, Path(tmp) / "cr"),
            )
        ray.shutdown()
    result = {
        "machine": describe_machine(device),
        "ray": ray.__version__,
        "ray_start_seconds": round(ray_start, 2),
        "rows": table.rows,
        "ray_over_local": {f"{a} actor(s)": round(rate / base, 3) for a, rate in ray_rates.items()},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"machine: {result['machine']}; Ray / local throughput: {result['ray_over_local']}; written to {out}")


if __name__ == "__main__":
    main()
