"""Running a model over many images: worker decoding, cache look-up, and batch sizes that back off on OOM."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch

from capsearch.cache import ResultCache, content_hash
from capsearch.data.images import ImageDataset, ImageReadError, ImageSource
from capsearch.models.pixels import PixelPipeline
from capsearch.models.runtime import batch_loader
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

    def __call__(self, fn: Callable[[torch.Tensor], list[R]], batch: torch.Tensor) -> list[R]:
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
    """What one run over images did: computed vs taken from the cache, and the batch size it ended with."""

    images: int = 0
    computed: int = 0
    cached: int = 0
    batch_size: int = 0
    backoffs: int = 0
    num_workers: int = 0

    def describe(self) -> str:
        """For stage summaries."""
        backoff = f" after {self.backoffs} out-of-memory back-offs" if self.backoffs else ""
        return f"{self.computed} computed, {self.cached} from cache, batch {self.batch_size}{backoff}"


def _reraise_plainly(batches: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
    """Batches from a DataLoader; an ImageReadError from a worker keeps its one-line message (not a traceback)."""
    iterator = iter(batches)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except ImageReadError as exc:
            message = str(exc)
            if "Traceback" in message:  # re-raised by DataLoader: "Caught ... Original Traceback ... Error: <msg>"
                message = message.strip().splitlines()[-1].split("ImageReadError: ", 1)[-1]
            raise ImageReadError(message) from None
        yield batch


def run_over_images(
    source: ImageSource,
    image_ids: Sequence[str],
    pipeline: PixelPipeline,
    batch_fn: Callable[[torch.Tensor], list[R]],
    encode: Callable[[R], bytes],
    decode: Callable[[bytes], R],
    *,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    cache: ResultCache | None = None,
    cache_space: str = "",
    desc: str = "images",
) -> tuple[list[R], RunStats]:
    """``batch_fn`` over the uint8 pixels of every image not already cached; results in ``image_ids`` order.

    Images are decoded and resized in ``num_workers`` processes; each finished batch is stored in ``cache`` at
    once, so an interrupted run resumes where it stopped.
    """
    if batch_size <= 0:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    stats = RunStats(images=len(image_ids), batch_size=batch_size, num_workers=num_workers)
    hashes: list[str] = []
    found: dict[str, bytes] = {}
    if cache is not None:
        hashes = [content_hash(source.read_bytes(image_id)) for image_id in image_ids]
        found = cache.get_many(cache_space, hashes)
    todo = [i for i in range(len(image_ids)) if cache is None or hashes[i] not in found]
    computed: dict[int, R] = {}
    if todo:
        dataset = ImageDataset(source, [image_ids[i] for i in todo], pipeline, pipeline.draft_size)
        loader = batch_loader(dataset, batch_size, num_workers, device)
        backoff = OomBackoff(batch_size, device)
        position = 0
        for batch in _reraise_plainly(progress(loader, desc=desc, unit="batch")):
            results = backoff(batch_fn, batch)
            indices = todo[position : position + len(results)]
            position += len(results)
            computed.update(zip(indices, results, strict=True))
            if cache is not None:
                cache.put_many(cache_space, [(hashes[i], encode(r)) for i, r in zip(indices, results, strict=True)])
        stats.batch_size, stats.backoffs = backoff.limit, backoff.backoffs
    stats.computed = len(todo)
    stats.cached = len(image_ids) - len(todo)
    ordered = [computed[i] if i in computed else decode(found[hashes[i]]) for i in range(len(image_ids))]
    return ordered, stats
