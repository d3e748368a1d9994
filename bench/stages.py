"""``python bench/stages.py``: each stage's real code path against the naive way, same run, same machine.

BLIP and CLIP are random-weight models of the real base sizes, built from ``BlipConfig()`` and ``CLIPConfig()``
(no download; the compute does not depend on the weights) and saved with ``save_pretrained``, so they load
through the same ``Captioner``/``DualEncoder`` as the hub models. Images are generated 500x375 JPEGs with
photo-like texture and file sizes. Every rate is end to end from the JPEG files, after the model is loaded:

- ``capsearch``: ``caption_images`` / ``embed_images`` / ``embed_texts`` as the stages call them (worker
  decoding, batched, ``auto`` precision, no result cache), then the same with a warm cache.
- ``naive``: the original notebook's way: one image (or text) at a time, fp32, transformers' processor.

Random weights never emit the end token, so captions always run to ``max_new_tokens``: the greedy rows use
exactly 20 new tokens, and the default-params row (3 beams, up to 30 tokens) is a pessimistic bound.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from base_models import build_base_models, describe_machine  # bench/ is the script folder
from PIL import Image

from capsearch.cache import ResultCache
from capsearch.data.images import ImageSource
from capsearch.models.batching import AUTO_BATCH_SIZES, resolve_num_workers, run_over_images
from capsearch.models.captioner import Captioner, DecodingSettings
from capsearch.models.embedder import DualEncoder
from capsearch.models.runtime import precision_name, resolve_device

PRESETS = {  # how many items each row times
    "cpu": {"caption": 24, "naive_caption": 4, "embed": 256, "naive_embed": 32, "texts": 4096, "naive_texts": 128},
    "cuda": {
        "caption": 4096,
        "naive_caption": 16,
        "embed": 8091,
        "naive_embed": 128,
        "texts": 40460,
        "naive_texts": 512,
    },
}
GREEDY = DecodingSettings(num_beams=1, max_new_tokens=20, min_new_tokens=20)
DEFAULT_PARAMS = DecodingSettings(num_beams=3, max_new_tokens=30, min_new_tokens=5)


def write_photos(folder: str | Path, count: int, seed: int = 0) -> list[str]:
    """``count`` 500x375 JPEGs (quality 90) with smooth colour fields and grain, about Flickr's file size."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = []
    for i in range(count):
        name = f"photo_{i:05d}.jpg"
        names.append(name)
        if (folder / name).exists():
            continue
        coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        field = np.asarray(Image.fromarray(coarse).resize((500, 375), Image.Resampling.BICUBIC), dtype=np.float32)
        grain = rng.normal(0, 12, field.shape).astype(np.float32)
        pixels = np.clip(field + grain, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / name, quality=90)
    return names


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn: Callable[[], Any], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _naive_caption(folder: Path, blip_dir: Path, files: list[str], device: torch.device) -> float:
    from transformers import BlipForConditionalGeneration, BlipProcessor

    processor = BlipProcessor.from_pretrained(blip_dir)
    model = BlipForConditionalGeneration.from_pretrained(blip_dir, dtype=torch.float32).to(device).eval()

    def one(name: str) -> None:
        inputs = processor(images=Image.open(folder / name).convert("RGB"), return_tensors="pt").to(device)
        with torch.no_grad():
            model.generate(**inputs, num_beams=1, max_new_tokens=20, min_new_tokens=20, do_sample=False)

    one(files[0])  # warm-up
    return _timed(lambda: [one(name) for name in files], device)


def _naive_embed(folder: Path, clip_dir: Path, files: list[str], texts: list[str], device: torch.device) -> tuple:
    from transformers import CLIPModel, CLIPProcessor

    processor = CLIPProcessor.from_pretrained(clip_dir)
    model = CLIPModel.from_pretrained(clip_dir, dtype=torch.float32).to(device).eval()

    def image(name: str) -> None:
        inputs = processor(images=Image.open(folder / name).convert("RGB"), return_tensors="pt").to(device)
        with torch.no_grad():
            model.get_image_features(**inputs)

    def text(value: str) -> None:
        inputs = processor(text=[value], return_tensors="pt", padding=True).to(device)
        with torch.no_grad():
            model.get_text_features(**inputs)

    image(files[0])
    text(texts[0])
    return _timed(lambda: [image(n) for n in files], device), _timed(lambda: [text(t) for t in texts], device)


def _texts(count: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    words = ("a", "man", "woman", "dog", "child", "red", "blue", "running", "jumping", "over", "the", "grass",
             "water", "beach", "street", "ball", "bike")  # fmt: skip
    return [" ".join(rng.choice(words, size=int(rng.integers(6, 16)))) for _ in range(count)]


class _Table:
    """Rows of the benchmark, printed as they come."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, work: str, way: str, count: int, seconds: float) -> None:
        rate = count / seconds
        self.rows.append({"work": work, "way": way, "items": count, "seconds": round(seconds, 3), "per_second": rate})
        print(f"{work:<36} {way:<44} {count:>6} in {seconds:8.2f}s = {rate:10.2f}/s", flush=True)


def _bench_caption(
    table: _Table, blip_dir: Path, source: ImageSource, ids: list[str], batch: int, workers: int, precision: str,
    device: torch.device,
) -> str:  # fmt: skip
    captioner = Captioner(str(blip_dir), precision=precision, device=device.type)
    dtype = precision_name(captioner.dtype)
    captioner.caption_images(source, ids[:batch], GREEDY, batch, 0)  # warm-up
    seconds = _timed(lambda: captioner.caption_images(source, ids, GREEDY, batch, workers), device)
    table.add("caption (greedy, 20 tokens)", f"capsearch {dtype}, batch {batch}, {workers} workers", len(ids), seconds)
    few = ids[: max(batch, 8)]
    seconds = _timed(lambda: captioner.caption_images(source, few, DEFAULT_PARAMS, batch, workers), device)
    table.add("caption (params: 3 beams, <=30 tok)", f"capsearch {dtype}, batch {batch}", len(few), seconds)
    with tempfile.TemporaryDirectory() as cache_dir:
        cache = ResultCache(cache_dir)
        captioner.caption_images(source, ids, GREEDY, batch, workers, cache)
        seconds = _timed(lambda: captioner.caption_images(source, ids, GREEDY, batch, workers, cache), device)
        table.add("caption (greedy, 20 tokens)", "capsearch, all cached (hash + look-up)", len(ids), seconds)
        cache.close()
    return dtype


def _bench_embed(
    table: _Table, clip_dir: Path, source: ImageSource, files: list[str], texts: list[str], batches: tuple[int, int],
    workers: int, precision: str, device: torch.device,
) -> None:  # fmt: skip
    embedder = DualEncoder(str(clip_dir), precision=precision, device=device.type)
    dtype = precision_name(embedder.dtype)
    image_batch, text_batch = batches
    embedder.embed_images(source, files[:image_batch], image_batch, 0)
    seconds = _timed(lambda: embedder.embed_images(source, files, image_batch, workers), device)
    table.add("embed_images", f"capsearch {dtype}, batch {image_batch}, {workers} workers", len(files), seconds)
    # the same run split in two: the loader alone (decode, resize, copy to the device), then the model alone
    seconds = _timed(lambda: _loader_only(embedder, source, files, image_batch, workers), device)
    table.add("embed_images: loader only", f"decode + resize + copy, {workers} workers", len(files), seconds)
    shape = embedder.pixels(source.open_rgb(files[0])).shape  # (3, H, W) as the model sees it
    pixels = torch.randint(0, 256, (image_batch, *shape), dtype=torch.uint8).to(device)
    rounds = max(1, len(files) // image_batch)
    with torch.inference_mode():
        embedder.embed_pixels(pixels)
        seconds = _timed(lambda: [embedder.embed_pixels(pixels) for _ in range(rounds)], device)
    way = f"{dtype}, batch {image_batch}, pixels on the device"
    table.add("embed_images: model only", way, rounds * image_batch, seconds)
    embedder.embed_texts(texts[:text_batch], text_batch)
    seconds = _timed(lambda: embedder.embed_texts(texts, text_batch), device)
    table.add("embed_texts", f"capsearch {dtype}, batch {text_batch}", len(texts), seconds)


def _loader_only(embedder: DualEncoder, source: ImageSource, files: list[str], batch: int, workers: int) -> None:
    """embed_images' loader with no model: each batch is only copied to the device."""
    run_over_images(
        source,
        files,
        embedder.pixels,
        lambda pixels: [0] * len(pixels.to(embedder.device)),
        lambda row: b"",
        lambda blob: 0,
        batch_size=batch,
        num_workers=workers,
        device=embedder.device,
    )


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Time every row and return the results (also the machine description)."""
    device = resolve_device(args.device)
    kind = "cuda" if device.type == "cuda" else "cpu"
    preset = dict(PRESETS[kind])
    preset.update({k: v for k, v in vars(args).items() if k in preset and v is not None})
    workers = resolve_num_workers(args.num_workers, device)
    blip_dir, clip_dir = build_base_models(args.models_dir)
    photos = Path(args.images_dir)
    files = write_photos(photos, max(preset["caption"], preset["embed"]))
    texts = _texts(preset["texts"])
    caption_batch = args.caption_batch or AUTO_BATCH_SIZES["caption"][kind]
    embed_batch = args.embed_batch or AUTO_BATCH_SIZES["embed_images"][kind]
    text_batch = args.text_batch or AUTO_BATCH_SIZES["embed_texts"][kind]
    table = _Table()

    source = ImageSource(photos)
    caption_ids = files[: preset["caption"]]
    dtype = _bench_caption(table, blip_dir, source, caption_ids, caption_batch, workers, args.precision, device)
    naive = files[: preset["naive_caption"]]
    seconds = _naive_caption(photos, blip_dir, naive, device)
    table.add("caption (greedy, 20 tokens)", "naive: 1 at a time, fp32, processor", len(naive), seconds)
    batches = (embed_batch, text_batch)
    _bench_embed(table, clip_dir, source, files[: preset["embed"]], texts, batches, workers, args.precision, device)
    image_seconds, text_seconds = _naive_embed(
        photos, clip_dir, files[: preset["naive_embed"]], texts[: preset["naive_texts"]], device
    )
    table.add("embed_images", "naive: 1 at a time, fp32, processor", preset["naive_embed"], image_seconds)
    table.add("embed_texts", "naive: 1 at a time, fp32, processor", preset["naive_texts"], text_seconds)
    rows = table.rows
    return {
        "machine": describe_machine(device),
        "device": device.type,
        "precision": dtype,
        "rows": rows,
        "speedups": speedups(rows),
        "pipeline_estimate_s": pipeline_estimate(rows),
    }


def speedups(rows: list[dict[str, Any]]) -> dict[str, float]:
    """capsearch's rate over the naive rate, per work."""
    out = {}
    for work in ("caption (greedy, 20 tokens)", "embed_images", "embed_texts"):
        ours = next(r["per_second"] for r in rows if r["work"] == work and r["way"].startswith("capsearch "))
        naive = next(r["per_second"] for r in rows if r["work"] == work and r["way"].startswith("naive"))
        out[work] = round(ours / naive, 1)
    for row in rows:
        row["per_second"] = round(row["per_second"], 2)
    return out


def pipeline_estimate(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds of model work for 1,000 and 8,091 images (5 captions each) at the measured rates, default params."""
    rate = {r["work"]: r["per_second"] for r in rows if r["way"].startswith("capsearch ")}
    out = {}
    for images in (1000, 8091):
        texts = 2 * (5 * images + images)  # references and generated captions, plain and CLIPScore-prefixed
        seconds = images / rate["caption (params: 3 beams, <=30 tok)"] + images / rate["embed_images"]
        out[f"{images}_images"] = round(seconds + texts / rate["embed_texts"], 1)
    return out


def main(argv: list[str] | None = None) -> None:
    """Parse options, run, print the table and write JSON."""
    parser = argparse.ArgumentParser(prog="python bench/stages.py", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "fp16", "bf16"))
    parser.add_argument("--num-workers", default="auto")
    parser.add_argument("--models-dir", default="build/bench/models")
    parser.add_argument("--images-dir", default="build/bench/photos")
    parser.add_argument("--out", default="bench/results/stages.json")
    parser.add_argument("--caption-batch", type=int)
    parser.add_argument("--embed-batch", type=int)
    parser.add_argument("--text-batch", type=int)
    for key in PRESETS["cpu"]:
        parser.add_argument(f"--{key.replace('_', '-')}", dest=key, type=int, help="items to time (default: preset)")
    args = parser.parse_args(argv)
    result = run_benchmark(args)
    result_path = Path(args.out)
    result_path.parent.mkdir(parents=True, exist_ok=True)
    result_path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"machine: {result['machine']}; speed-ups vs naive: {result['speedups']}")
    print(f"model work at these rates, default params: {result['pipeline_estimate_s']} s; written to {result_path}")


if __name__ == "__main__":
    main()
