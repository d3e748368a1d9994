"""``python bench/stages.py [--device cuda] [--quick]``: the stages' model work end to end, and where its time goes.

One call measures, on generated 500×375 JPEGs (photo-like texture and file sizes) with random-weight models of the
real base sizes (BLIP-base, CLIP ViT-B/32, built from their default configs and saved with ``save_pretrained``, so
they load through the same ``Captioner``/``DualEncoder`` as hub models; the compute does not depend on the
weights):

- the loader alone (decode, resize, copy to the device) with CPU decoding and, on a GPU with torchvision, with GPU
  decoding; and a bare PIL loop over the same files with the same number of processes (decode + resize, nothing
  sent back), the rate a loader can at best reach;
- the CLIP image tower alone on pixels already on the device;
- embed_images end to end, both decode paths; embed_texts;
- caption end to end, greedy 20 tokens and the default params (3 beams, up to 30 tokens);
- an instruction VLM next to BLIP-base: SmolVLM-256M's architecture (Idefics3: its processor splits a 500×375
  photo into 12 tiles of 512 px and a global image, 64 tokens each, asked through its chat template) with random
  weights, greedy 20 tokens, each model in its own process so that its peak memory is its own (peak RSS on the
  CPU, peak allocated on a GPU);
- all of Flickr8k's model work as the stages run it (``compute_parts`` for caption with the default params and
  embed_images, then ``embed_texts`` of 40,460 captions; model loading included);
- the decode deviation: the GPU path against the CPU path on the same photos (pixels, image-embedding cosine)
  and, with ``--toy-models``, Recall@K of the toy CLIP on generated scenes both ways. Without a GPU the deviation
  of the tensor resize alone is measured (PIL decodes, torch resizes as the GPU path does).

Random weights never emit the end token, so captions always run to ``max_new_tokens``: greedy rows generate
exactly 20 tokens, and the default-params rows (up to 30) are an upper bound on real captions' work.

Every row goes to the JSON (``--out``): ``work``, ``way``, ``decode``, ``images`` (texts for embed_texts),
``seconds``, ``images_per_s`` and the machine. ``--quick`` uses a few images and tiny counts (checks the script
on a CPU in a minute); ``--models toy`` uses the toy models instead of the base-size ones (the suite runs that).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from base_models import build_base_models, describe_machine  # bench/ is the script folder
from PIL import Image

from capsearch.artifacts import PartStore, plan_parts
from capsearch.data.images import ImageSource
from capsearch.demo.toy_vlms import SMOLVLM_256M, TINY_IDEFICS3, build_idefics3
from capsearch.engine import compute_parts
from capsearch.job import ImageTask
from capsearch.models.batching import AUTO_BATCH_SIZES, resolve_num_workers
from capsearch.models.captioner import Captioner, DecodingSettings
from capsearch.models.embedder import DualEncoder
from capsearch.models.gpu_decode import jpeg_decoder, resolve_decode
from capsearch.models.loader import ImageLoader
from capsearch.models.pixels import PixelPipeline
from capsearch.models.runtime import precision_name, resolve_device, resolve_runtime
from capsearch.params import RuntimeParams

GREEDY = DecodingSettings(num_beams=1, max_new_tokens=20, min_new_tokens=20)
DEFAULT_PARAMS = DecodingSettings(num_beams=3, max_new_tokens=30, min_new_tokens=5)
FLICKR8K_IMAGES, FLICKR8K_CAPTIONS = 8091, 40460
PRESETS = {  # how many images (or texts) each row uses
    "cuda": {
        "images": FLICKR8K_IMAGES,
        "caption": 4096,
        "params": 2048,
        "texts": FLICKR8K_CAPTIONS,
        "whole": 1,
        "vlm": 512,
    },
    "cpu": {"images": 256, "caption": 24, "params": 8, "texts": 4096, "whole": 0, "vlm": 4},
    "quick": {"images": 48, "caption": 8, "params": 4, "texts": 256, "whole": 1, "vlm": 2},
}
DEVIATION_IMAGES = {"cuda": 1024, "cpu": 64, "quick": 16}
BATCH_KEYS = {"caption": "caption", "embed_images": "embed", "embed_texts": "text"}


def _photo(args: tuple[Path, int]) -> None:
    path, seed = args
    if path.exists():
        return
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    field = np.asarray(Image.fromarray(coarse).resize((500, 375), Image.Resampling.BICUBIC), dtype=np.float32)
    grain = rng.normal(0, 12, field.shape).astype(np.float32)
    Image.fromarray(np.clip(field + grain, 0, 255).astype(np.uint8)).save(path, quality=90)


def write_photos(folder: str | Path, count: int, seed: int = 0, processes: int = 1) -> list[str]:
    """``count`` 500×375 JPEGs (quality 90) with smooth colour fields and grain, about Flickr's file size."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"photo_{i:05d}.jpg" for i in range(count)]
    jobs = [(folder / name, seed * 1_000_003 + i) for i, name in enumerate(names)]
    if processes > 1:
        with multiprocessing.get_context("fork").Pool(processes) as pool:
            pool.map(_photo, jobs, chunksize=64)
    else:
        for job in jobs:
            _photo(job)
    return names


def _texts(count: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    words = ("a", "man", "woman", "dog", "child", "red", "blue", "running", "jumping", "over", "the", "grass",
             "water", "beach", "street", "ball", "bike")  # fmt: skip
    return [" ".join(rng.choice(words, size=int(rng.integers(6, 16)))) for _ in range(count)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds ``fn`` takes, the device's queue drained before and after."""
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


class Table:
    """The benchmark's rows, printed as they come."""

    def __init__(self, machine: str) -> None:
        self.machine = machine
        self.rows: list[dict[str, Any]] = []
        self.deviation: list[dict[str, Any]] = []

    def add(
        self, work: str, way: str, decode: str, count: int, seconds: float, unit: str = "images", **extra: Any
    ) -> None:
        rate = count / seconds if seconds > 0 else float("inf")
        row = {
            "work": work,
            "way": way,
            "decode": decode,
            "images": count,
            "unit": unit,
            "seconds": round(seconds, 3),
            "images_per_s": round(rate, 2),
            "machine": self.machine,
            **extra,
        }
        self.rows.append(row)
        print(f"{work:<34} {way:<50} {decode:<4} {count:>6} {unit} in {seconds:8.2f}s = {rate:10.1f}/s", flush=True)


# ---- the loader against a bare PIL loop ------------------------------------------------------------------------

_BARE: tuple[Path, PixelPipeline] | None = None  # (folder, pipeline), inherited by the forked pool


def _bare_decode(name: str) -> int:
    assert _BARE is not None
    folder, pipeline = _BARE
    return int(pipeline(Image.open(folder / name).convert("RGB"))[0, 0, 0])


def bare_pil(folder: Path, names: list[str], pipeline: PixelPipeline, processes: int) -> float:
    """Seconds for ``processes`` processes to decode and resize every file with PIL, sending nothing back."""
    global _BARE
    _BARE = (folder, pipeline)
    start = time.perf_counter()
    if processes <= 1:
        for name in names:
            _bare_decode(name)
    else:
        with multiprocessing.get_context("fork").Pool(processes) as pool:
            for _ in pool.imap_unordered(_bare_decode, names, chunksize=16):
                pass
    return time.perf_counter() - start


def loader_only(
    source: ImageSource,
    ids: list[str],
    pipeline: PixelPipeline,
    batch: int,
    workers: int,
    device: torch.device,
    decode: str,
) -> ImageLoader:
    """Every image through the loader to the device (decoded, resized, copied), no model."""
    loader = ImageLoader(
        source,
        ids,
        pipeline,
        batch_size=batch,
        num_workers=workers,
        device=device,
        decode=decode,
        jpeg_decoder=jpeg_decoder(device) if decode == "gpu" else None,
    )
    for loaded in loader:
        loaded.pixels.sum()  # touch the batch where it is
    return loader


# ---- the rows --------------------------------------------------------------------------------------------------


def bench_embed(
    table: Table,
    clip_dir: Path,
    source: ImageSource,
    ids: list[str],
    texts: list[str],
    decodes: list[str],
    settings: dict[str, Any],
) -> DualEncoder:
    device, workers, batch, text_batch = (settings[k] for k in ("device", "workers", "embed_batch", "text_batch"))
    embedder = DualEncoder(str(clip_dir), precision=settings["precision"], device=device.type)
    dtype = precision_name(embedder.dtype)
    folder = Path(source.location)
    seconds = bare_pil(folder, ids, embedder.pixels, max(workers, 1))
    table.add("decode + resize", f"bare PIL loop, {max(workers, 1)} processes", "cpu", len(ids), seconds)
    for decode in decodes:
        seconds = timed(lambda d=decode: loader_only(source, ids, embedder.pixels, batch, workers, device, d), device)
        way = f"decode + resize + copy, batch {batch}, {workers} workers"
        table.add("embed_images: loader only", way, decode, len(ids), seconds)
    width, height = embedder.pixels.output_size()
    pixels = torch.randint(0, 256, (batch, 3, height, width), dtype=torch.uint8, device=device)
    rounds = max(1, len(ids) // batch)
    embedder.embed_pixels(pixels)  # warm-up
    seconds = timed(lambda: [embedder.embed_pixels(pixels) for _ in range(rounds)], device)
    table.add("embed_images: model only", f"{dtype}, batch {batch}, on the device", "none", rounds * batch, seconds)
    embedder.embed_images(source, ids[:batch], batch, 0)  # warm-up
    for decode in decodes:
        seconds = timed(lambda d=decode: embedder.embed_images(source, ids, batch, workers, decode=d), device)
        table.add("embed_images", f"capsearch {dtype}, batch {batch}, {workers} workers", decode, len(ids), seconds)
    embedder.embed_texts(texts[:text_batch], text_batch)
    seconds = timed(lambda: embedder.embed_texts(texts, text_batch), device)
    table.add("embed_texts", f"capsearch {dtype}, batch {text_batch}", "none", len(texts), seconds, unit="texts")
    return embedder


def bench_caption(
    table: Table,
    blip_dir: Path,
    source: ImageSource,
    ids: list[str],
    preset: dict[str, int],
    decode: str,
    settings: dict[str, Any],
) -> None:
    device, workers, batch = settings["device"], settings["workers"], settings["caption_batch"]
    captioner = Captioner(str(blip_dir), precision=settings["precision"], device=device.type)
    dtype = precision_name(captioner.dtype)
    captioner.caption_images(source, ids[: min(batch, 8)], GREEDY, batch, 0)  # warm-up
    runs = (
        ("greedy, 20 tokens", GREEDY, preset["caption"]),
        ("default params: 3 beams, <=30 tokens", DEFAULT_PARAMS, preset["params"]),
    )
    for name, decoding, count in runs:
        chosen = ids[:count]

        def caption(chosen: list[str] = chosen, decoding: DecodingSettings = decoding) -> None:
            captioner.caption_images(source, chosen, decoding, batch, workers, decode=decode)

        way = f"capsearch {dtype}, batch {batch}, {workers} workers"
        table.add(f"caption ({name})", way, decode, len(chosen), timed(caption, device))


def _caption_in_own_process(model: str, folder: str, ids: list[str], settings: dict[str, Any]) -> dict[str, Any]:
    """(In a fresh process) load ``model``, caption one image to warm up, then ``ids`` greedily: the seconds, the
    caption tokens per image and the process's peak memory in MB (RSS on the CPU, allocated on a GPU)."""
    import resource

    device, batch = settings["device"], settings["caption_batch"]
    captioner = Captioner(model, precision=settings["precision"], device=device.type)
    source = ImageSource(folder)
    captioner.caption_images(source, ids[:1], GREEDY, 1, 0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = timed(lambda: captioner.caption_images(source, ids, GREEDY, batch, settings["workers"]), device)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    run = captioner.last_run
    family = captioner.family.model_type
    return {"seconds": seconds, "tokens": run.tokens / max(run.computed, 1), "peak_mb": round(peak), "family": family}


def bench_vlm(table: Table, models: dict[str, Path], folder: Path, ids: list[str], settings: dict[str, Any]) -> None:
    """Greedy captions (20 tokens) by each of ``models`` (name -> folder), each in its own spawned process."""
    context = multiprocessing.get_context("spawn")
    for name, model in models.items():
        with context.Pool(1) as pool:
            got = pool.apply(_caption_in_own_process, (str(model), str(folder), ids, settings))
        way = f"{name} ({got['family']}), batch {settings['caption_batch']}, {settings['workers']} workers"
        table.add(
            "caption: VLM vs BLIP (greedy, 20 tokens)", way, "cpu", len(ids), got["seconds"],
            peak_mb=got["peak_mb"], tokens_per_image=round(got["tokens"], 1),
        )  # fmt: skip


def bench_whole(
    table: Table,
    models: tuple[Path, Path],
    folder: Path,
    ids: list[str],
    texts: list[str],
    decode: str,
    settings: dict[str, Any],
) -> None:
    """Flickr8k's model work as the stages run it: caption and embed_images through ``compute_parts`` (model loaded,
    parts written, manifest), embed_texts of every reference caption."""
    blip_dir, clip_dir = models
    device = settings["device"]
    knobs = RuntimeParams(
        device=device.type,
        num_workers=settings["workers"],
        batch_size={task: settings[f"{key}_batch"] for task, key in BATCH_KEYS.items()},
        cache=False,
        decode=decode,
    )
    runtime = resolve_runtime(knobs)
    parts = plan_parts([(image_id, str(folder)) for image_id in ids])
    precision = settings["precision"]
    total = 0.0
    with tempfile.TemporaryDirectory() as out:
        caption = ImageTask(Captioner, str(blip_dir), "main", precision, device.type, DEFAULT_PARAMS, decode)
        embed = ImageTask(DualEncoder, str(clip_dir), "main", precision, device.type, decode=decode)
        for name, task in (("caption (default params)", caption), ("embed_images", embed)):
            store = PartStore(Path(out) / name.split()[0], task.output_kind, task.identity())
            seconds = timed(lambda t=task, s=store: compute_parts(t, parts, s, runtime, knobs), device)
            total += seconds
            table.add(f"Flickr8k: {name}", "as the stage runs it (model load included)", decode, len(ids), seconds)

    def embed_texts() -> None:
        embedder = DualEncoder(str(clip_dir), precision=precision, device=device.type)
        embedder.embed_texts(texts, settings["text_batch"])

    seconds = timed(embed_texts, device)
    total += seconds
    way = "as the stage runs it (model load included)"
    table.add("Flickr8k: embed_texts", way, "none", len(texts), seconds, unit="texts")
    table.add("Flickr8k: all model work", f"{len(ids)} images + {len(texts)} captions", decode, len(ids), total)


def bench_deviation(
    table: Table,
    embedder: DualEncoder,
    source: ImageSource,
    ids: list[str],
    decode: str,
    settings: dict[str, Any],
    toy_models: Path | None,
) -> None:
    """The GPU path against the CPU path on the same photos; without a GPU, the tensor resize alone."""
    device, batch = settings["device"], settings["embed_batch"]
    decoder = jpeg_decoder(device) if decode == "gpu" else _pil_decoder
    way = "nvJPEG + GPU resize" if decode == "gpu" else "tensor resize on the CPU (PIL decodes)"
    cpu_rows = _pixels(source, ids, embedder.pixels, batch, device, "cpu", None)
    other_rows = _pixels(source, ids, embedder.pixels, batch, device, "gpu", decoder)
    difference = (cpu_rows.int() - other_rows.int()).abs()
    with torch.inference_mode():
        a = np.concatenate([embedder.embed_pixels(cpu_rows[i : i + batch]) for i in range(0, len(ids), batch)])
        b = np.concatenate([embedder.embed_pixels(other_rows[i : i + batch]) for i in range(0, len(ids), batch)])
    cosines = (a * b).sum(axis=1)
    row = {
        "compare": f"{way} vs the CPU path (PIL)",
        "model": embedder.model_id,
        "images": len(ids),
        "max_pixel_difference": int(difference.max()),
        "mean_pixel_difference": round(float(difference.float().mean()), 4),
        "share_of_pixels_differing": round(float((difference > 0).float().mean()), 4),
        "mean_cosine": round(float(cosines.mean()), 6),
        "min_cosine": round(float(cosines.min()), 6),
        "machine": table.machine,
    }
    table.deviation.append(row)
    print(f"deviation: {row}", flush=True)
    if toy_models is not None:
        table.deviation.append(_toy_recall(toy_models, decoder, way, settings, table.machine))
        print(f"deviation: {table.deviation[-1]}", flush=True)


def _pil_decoder(files: list[torch.Tensor]) -> list[torch.Tensor | None]:
    """PIL in place of nvJPEG (no GPU): what is left of the GPU path is its tensor resize."""
    import io

    out: list[torch.Tensor | None] = []
    for data in files:
        image = Image.open(io.BytesIO(bytes(data.numpy()))).convert("RGB")
        out.append(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1))
    return out


def _pixels(
    source: ImageSource,
    ids: list[str],
    pipeline: PixelPipeline,
    batch: int,
    device: torch.device,
    decode: str,
    decoder: Any,
) -> torch.Tensor:
    loader = ImageLoader(
        source, ids, pipeline, batch_size=batch, num_workers=0, device=device, decode=decode, jpeg_decoder=decoder
    )
    return torch.cat([loaded.pixels for loaded in loader])


def _toy_recall(toy_models: Path, decoder: Any, way: str, settings: dict[str, Any], machine: str) -> dict[str, Any]:
    """Text→image Recall@K of the toy CLIP on 200 generated scenes saved as JPEGs, CPU path vs the other path."""
    from capsearch.demo.scenes import generate_scenes
    from capsearch.evaluation.ranks import text_to_image_ranks
    from capsearch.evaluation.recall import recall_at_k

    device = settings["device"]
    with tempfile.TemporaryDirectory() as folder:
        scenes = generate_scenes(200, seed=4242)
        ids = [f"scene_{i:03d}.jpg" for i in range(len(scenes))]
        for image_id, (_, image, _) in zip(ids, scenes, strict=True):
            image.resize((320, 240), Image.Resampling.BICUBIC).save(Path(folder) / image_id, quality=90)
        source = ImageSource(folder)
        embedder = DualEncoder(str(toy_models / "toy-clip"), precision="fp32", device=device.type)
        texts = [captions[0] for _, _, captions in scenes]
        text_vectors = embedder.embed_texts(texts).vectors
        recalls = {}
        for name, decode, chosen in (("cpu", "cpu", None), ("other", "gpu", decoder)):
            pixels = _pixels(source, ids, embedder.pixels, 64, device, decode, chosen)
            with torch.inference_mode():
                vectors = np.concatenate([embedder.embed_pixels(pixels[i : i + 64]) for i in range(0, len(ids), 64)])
            ranks = text_to_image_ranks(text_vectors, vectors, np.arange(len(ids)))
            recalls[name] = {f"R@{k}": round(100 * recall_at_k(ranks, k), 2) for k in (1, 5, 10)}
    return {
        "compare": f"toy CLIP text→image recall, {way} vs the CPU path",
        "images": len(ids),
        "cpu_path": recalls["cpu"],
        "other_path": recalls["other"],
        "machine": machine,
    }


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Every row; the result also names the machine."""
    device = resolve_device(args.device)
    kind = "quick" if args.quick else ("cuda" if device.type == "cuda" else "cpu")
    preset = dict(PRESETS[kind])
    if args.images:
        preset["images"] = args.images
    hardware = "cuda" if device.type == "cuda" else "cpu"
    workers = resolve_num_workers(args.num_workers, device)
    settings = {
        "device": device,
        "workers": workers,
        "precision": args.precision,
        "caption_batch": args.caption_batch or AUTO_BATCH_SIZES["caption"][hardware],
        "embed_batch": args.embed_batch or AUTO_BATCH_SIZES["embed_images"][hardware],
        "text_batch": args.text_batch or AUTO_BATCH_SIZES["embed_texts"][hardware],
    }
    if args.models == "toy":
        toy = Path(args.toy_models)
        blip_dir, clip_dir = toy / "toy-blip", toy / "toy-clip"
    else:
        blip_dir, clip_dir = build_base_models(args.models_dir)
    table = Table(describe_machine(device))
    folder = Path(args.images_dir)
    started = time.perf_counter()
    ids = write_photos(folder, preset["images"], processes=max(1, len(os.sched_getaffinity(0))))
    print(f"{len(ids)} photos in {folder} ({time.perf_counter() - started:.1f}s)", flush=True)
    source = ImageSource(folder)
    texts = _texts(preset["texts"])
    gpu = resolve_decode("auto", device, None)
    decodes = ["cpu", "gpu"] if gpu == "gpu" else ["cpu"]
    embedder = bench_embed(table, clip_dir, source, ids, texts, decodes, settings)
    toy = Path(args.toy_models) if args.toy_models else None
    bench_deviation(table, embedder, source, ids[: DEVIATION_IMAGES[kind]], gpu, settings, toy)
    del embedder
    bench_caption(table, blip_dir, source, ids, preset, gpu, settings)
    shape = ("idefics3-tiny-random", TINY_IDEFICS3) if args.models == "toy" else ("smolvlm-256m-random", SMOLVLM_256M)
    vlm = Path(args.models_dir) / shape[0]
    if not (vlm / "model.safetensors").exists():
        build_idefics3(vlm, shape[1])
    bench_vlm(table, {"BLIP": blip_dir, "SmolVLM-256M shape": vlm}, folder, ids[: preset["vlm"]], settings)
    if preset["whole"]:
        whole_texts = _texts(FLICKR8K_CAPTIONS if kind == "cuda" else 5 * len(ids), seed=1)
        bench_whole(table, (blip_dir, clip_dir), folder, ids, whole_texts, gpu, settings)
    return {
        "machine": table.machine,
        "device": device.type,
        "precision": args.precision,
        "workers": workers,
        "decode_auto": gpu,
        "rows": table.rows,
        "deviation": table.deviation,
    }


def main(argv: list[str] | None = None) -> None:
    """Parse options, run, print the table and write the JSON."""
    parser = argparse.ArgumentParser(prog="python bench/stages.py", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "fp16", "bf16"))
    parser.add_argument("--num-workers", default="auto", help="decode workers (default: runtime.num_workers' auto)")
    parser.add_argument("--quick", action="store_true", help="a few images, tiny counts: checks the script")
    parser.add_argument("--images", type=int, help="photos to generate and use (default: the preset's)")
    parser.add_argument("--models", default="base", choices=("base", "toy"), help="base-size random, or the toys")
    parser.add_argument("--models-dir", default="build/bench/models")
    parser.add_argument("--toy-models", help="the toy models' folder (for --models toy and the toy recall row)")
    parser.add_argument("--images-dir", default="build/bench/photos")
    parser.add_argument("--out", default="bench/results/stages.json")
    parser.add_argument("--caption-batch", type=int)
    parser.add_argument("--embed-batch", type=int)
    parser.add_argument("--text-batch", type=int)
    args = parser.parse_args(argv)
    if args.models == "toy" and not args.toy_models:
        parser.error("--models toy needs --toy-models DIR")
    if args.num_workers != "auto":
        args.num_workers = int(args.num_workers)
    started = time.perf_counter()
    result = run_benchmark(args)
    result["seconds"] = round(time.perf_counter() - started, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"machine: {result['machine']}; {len(result['rows'])} rows in {result['seconds']}s, written to {out}")


if __name__ == "__main__":
    main()
