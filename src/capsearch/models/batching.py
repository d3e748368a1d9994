"""Running a model over many images: worker decoding, cache look-up, and batch sizes that back off on OOM."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from capsearch.cache import ResultCache, content_hash
from capsearch.data.images import ImageSource
from capsearch.models.loader import ImageLoader, ImagePipeline, JpegDecoder
from capsearch.progress import progress

R = TypeVar("R")

# Starting batch sizes for ``auto``: large on a GPU (backing off on out-of-memory), small on a CPU.
AUTO_BATCH_SIZES = {
    "caption": {"cuda": 256, "cpu": 8},
    "embed_images": {"cuda": 1024, "cpu": 64},
    "embed_texts": {"cuda": 2048, "cpu": 256},
}


def resolve_batch_size(value: int | str, task: str, device: torch.device, param: str) -> int:
    """A positive int, or ``auto``: the task's starting size for this device type."""
    if value == "auto":
        return AUTO_BATCH_SIZES[task]["cuda" if device.type == "cuda" else "cpu"]
    try:
        size = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{param}: expected a positive integer or 'auto', got {value!r}") from None
    if size <= 0 or str(size) != str(value).strip():
        raise ValueError(f"{param}: expected a positive integer or 'auto', got {value!r}")
    return size


def resolve_num_workers(value: int | str, device: torch.device, param: str = "runtime.num_workers") -> int:
    """0 or more decoding processes, or ``auto``: on a GPU every core but one (at most 16); on the CPU none.

    When the model runs on the CPU, decoding workers compete with its threads for the same cores; decoding in
    the main process measured faster on the 2-core CI machine (``bench/RESULTS.md``).
    """
    if value == "auto":
        if device.type != "cuda":
            return 0
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return max(0, min(16, cores - 1))
    try:
        workers = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{param}: expected 0 or more, or 'auto', got {value!r}") from None
    if workers < 0:
        raise ValueError(f"{param}: expected 0 or more, or 'auto', got {value!r}")
    return workers


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether an exception is an accelerator (or allocator) out-of-memory error."""
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


class OomBackoff:
    """Calls a batch function on chunks of at most ``limit`` rows, halving ``limit`` on out-of-memory."""

    def __init__(self, limit: int, device: torch.device | None = None) -> None:
        self.limit = limit
        self.backoffs = 0
        self.device = device

    def __call__(self, fn: Callable[[Any], list[R]], batch: Any) -> list[R]:
        """``fn`` over ``batch`` (a tensor, or anything sliced by row) in chunks."""
        results: list[R] = []
        start = 0
        while start < len(batch):
            chunk = batch[start : start + self.limit]
            try:
                results += fn(chunk)
            except (torch.OutOfMemoryError, RuntimeError) as exc:
                if not is_out_of_memory(exc) or self.limit == 1:
                    raise
                self.limit = max(1, self.limit // 2)
                self.backoffs += 1
                if self.device is not None and self.device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            start += len(chunk)
        return results


@dataclass
class RunStats:
    """What one run over images did: computed vs taken from the cache, where images were decoded, the batch size it
    ended with, and the images skipped as unreadable (id, reason)."""

    images: int = 0
    computed: int = 0
    cached: int = 0
    batch_size: int = 0
    backoffs: int = 0
    num_workers: int = 0
    decode: str = "cpu"
    gpu_decoded: int = 0
    cpu_fallbacks: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    tokens: int = 0  # caption tokens generated for the computed images (captioners)

    def describe(self) -> str:
        """For stage summaries."""
        backoff = f" after {self.backoffs} out-of-memory back-offs" if self.backoffs else ""
        decoded = ""
        if self.decode == "gpu":
            decoded = f", {self.gpu_decoded} decoded on the GPU, {self.cpu_fallbacks} on the CPU (not plain JPEGs)"
        tokens = per_image_tokens(self.tokens, self.computed)
        return f"{self.computed} computed, {self.cached} from cache, batch {self.batch_size}{backoff}{decoded}" + (
            f", {tokens}" if tokens else ""
        )


def per_image_tokens(tokens: int, images: int) -> str:
    """``12.3 caption tokens generated per image`` for a captioner's run that computed images, else empty."""
    return f"{tokens / images:.1f} caption tokens generated per image" if tokens and images else ""


def run_over_images(
    source: ImageSource,
    image_ids: Sequence[str],
    pipeline: ImagePipeline,
    batch_fn: Callable[[Any], list[R]],
    encode: Callable[[R], bytes],
    decode: Callable[[bytes], R],
    *,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    cache: ResultCache | None = None,
    cache_space: str = "",
    desc: str = "images",
    decode_path: str = "cpu",
    jpeg_decoder: JpegDecoder | None = None,
    skip_unreadable: bool = False,
) -> tuple[list[R], RunStats]:
    """``batch_fn`` over the uint8 pixels of every image not already cached; results in ``image_ids`` order.

    Images are decoded ``num_workers`` processes wide by :class:`ImageLoader` (``decode_path``: ``cpu``, or ``gpu``
    for nvJPEG); each finished batch is stored in ``cache`` at once, so an interrupted run resumes where it stopped.
    An unreadable image is an :class:`ImageReadError`, or with ``skip_unreadable`` left out of the results and
    listed in the stats' ``skipped``.
    """
    if batch_size <= 0:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    stats = RunStats(images=len(image_ids), batch_size=batch_size, num_workers=num_workers, decode=decode_path)
    hashes: list[str] = []
    found: dict[str, bytes] = {}
    if cache is not None:
        hashes = [content_hash(source.read_bytes(image_id)) for image_id in image_ids]
        found = cache.get_many(cache_space, hashes)
    todo = [i for i in range(len(image_ids)) if cache is None or hashes[i] not in found]
    computed: dict[int, R] = {}
    skipped: set[int] = set()
    if todo:
        if decode_path == "gpu" and jpeg_decoder is None:
            from capsearch.models.gpu_decode import jpeg_decoder as gpu_jpeg_decoder

            jpeg_decoder = gpu_jpeg_decoder(device)
        loader = ImageLoader(
            source,
            [image_ids[i] for i in todo],
            pipeline,
            batch_size=batch_size,
            num_workers=num_workers,
            device=device,
            decode=decode_path,
            jpeg_decoder=jpeg_decoder,
            skip_unreadable=skip_unreadable,
        )
        backoff = OomBackoff(batch_size, device)
        with progress(total=len(todo), desc=desc, unit="image") as bar:
            for batch in loader:
                results = backoff(batch_fn, batch.pixels) if batch.positions else []
                indices = [todo[p] for p in batch.positions]
                computed.update(zip(indices, results, strict=True))
                if cache is not None:
                    cache.put_many(cache_space, [(hashes[i], encode(r)) for i, r in zip(indices, results, strict=True)])
                bar.update(len(computed) + len(loader.stats.skipped) - bar.n)
        skipped = {todo[p] for p, _ in loader.stats.skipped}
        stats.batch_size, stats.backoffs = backoff.limit, backoff.backoffs
        stats.gpu_decoded, stats.cpu_fallbacks = loader.stats.gpu_decoded, loader.stats.cpu_fallbacks
        stats.skipped = [(image_ids[todo[p]], reason) for p, reason in loader.stats.skipped]
    stats.computed = len(todo) - len(stats.skipped)
    stats.cached = len(image_ids) - len(todo)
    ordered = [
        computed[i] if i in computed else decode(found[hashes[i]]) for i in range(len(image_ids)) if i not in skipped
    ]
    return ordered, stats
