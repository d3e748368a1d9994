"""The untracked ``runtime`` knobs, for the stages that run models (device, batch sizes, workers, result cache)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from capsearch.cache import ResultCache


@dataclass
class Runtime:
    """Untracked knobs, validated: where to run, how many at a time per task, where results are cached."""

    device: str
    batch_sizes: dict[str, int]  # caption, embed_images, embed_texts
    num_workers: int
    cache: ResultCache | None

    def cache_note(self) -> str:
        return f"cache {self.cache.path}" if self.cache is not None else "cache off"


def runtime(params: dict[str, Any], use_cache: bool = True) -> Runtime:
    """The ``runtime`` section (no stage lists it, so changing it re-runs nothing), all validated up front.

    ``use_cache=False`` for stages that cache nothing (the result cache is then not opened).
    """
    from capsearch.models.batching import AUTO_BATCH_SIZES, resolve_batch_size, resolve_num_workers  # imports torch
    from capsearch.models.runtime import resolve_device

    knobs = params.get("runtime") or {}
    if not isinstance(knobs, dict):
        raise ValueError("runtime: expected a mapping of device, num_workers, batch_size, cache, cache_dir")
    device = resolve_device(str(knobs.get("device", "auto")))
    sizes = knobs.get("batch_size") or {}
    if not isinstance(sizes, dict):
        raise ValueError(f"runtime.batch_size: expected a mapping of stage names to sizes, got {sizes!r}")
    batch_sizes = {
        task: resolve_batch_size(sizes.get(task, "auto"), task, device, f"runtime.batch_size.{task}")
        for task in AUTO_BATCH_SIZES
    }
    workers = resolve_num_workers(knobs.get("num_workers", "auto"), device)
    cache_on = knobs.get("cache", True)
    if not isinstance(cache_on, bool):
        raise ValueError(f"runtime.cache: expected true or false, got {cache_on!r}")
    cache = None
    if cache_on and use_cache:
        try:
            cache = ResultCache(knobs.get("cache_dir") or None)
        except OSError as exc:
            message = f"runtime.cache_dir: cannot use the result cache ({exc}); fix it or set runtime.cache: false"
            raise ValueError(message) from exc
    return Runtime(device.type, batch_sizes, workers, cache)
