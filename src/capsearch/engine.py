"""Captioning or embedding a run's images part by part, resumably, on the local engine or on Ray.

The caption and embed_images stages, and anyone using the library, build the job (:class:`capsearch.job.ImageTask`)
and call :func:`compute_parts`: it plans nothing itself (the parts come from :func:`capsearch.artifacts.plan_parts`),
reuses every part an earlier run finished (:class:`capsearch.artifacts.PartStore`), and computes the rest with

* ``local``: this process, the wrapper's own loop over images (``run_images``: decoding workers, OOM back-off, the
  per-image SQLite result cache), one part after another;
* ``ray``: Ray Data (:mod:`capsearch.ray_engine`, imported only then): images decoded and resized in CPU tasks,
  the model in a pool of actors (one per GPU, or per CPU slot).

Both run the same wrapper methods on the same uint8 pixels, so the engine never changes results; neither knows
which family or task it runs (the job's wrapper does). An undecodable
image is skipped and recorded with its reason in the manifest; a failure inside the model names the shard and the
image (:class:`EngineError`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from capsearch.artifacts import PartStore, PlannedPart
from capsearch.data.images import ImageSource
from capsearch.data.webdataset import file_sha256, index_shard, shards_digest
from capsearch.job import EngineError, ImageTask, PartResult
from capsearch.models.batching import per_image_tokens
from capsearch.models.runtime import Runtime, precision_name
from capsearch.params import ENGINES, RuntimeParams


@dataclass
class EngineRun:
    """What :func:`compute_parts` did."""

    engine: str
    parts: int = 0
    reused: int = 0
    computed_images: int = 0
    images: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    detail: str = ""  # the engine's own note (batch, workers, cache; or actors)
    manifest: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """For stage summaries."""
        rate = self.computed_images / max(self.seconds, 1e-9)
        parts = f"{self.parts} part{'s' if self.parts != 1 else ''}"
        computed = f"{self.parts - self.reused} computed: {self.computed_images} images at {rate:.1f} images/s"
        return (
            f"{self.images} images in {parts} ({self.reused} reused from an earlier run, {computed}), "
            f"{len(self.skipped)} skipped; engine {self.engine} ({self.detail})"
        )


def _local_parts(
    task: ImageTask, todo: Sequence[PlannedPart], runtime: Runtime, notes: dict[str, str]
) -> Iterator[PartResult]:
    """Parts computed one after another in this process through the wrapper's own loop."""
    if not todo:
        return
    wrapper = task.load(runtime.device)
    computed = cached = gpu = fallback = tokens = 0
    for part in todo:
        source = ImageSource(part.shard)
        try:
            values = task.run(wrapper, source, part.image_ids, runtime)
        except (RuntimeError, ValueError) as exc:
            raise EngineError(_naming(part.shard, exc)) from exc
        stats = wrapper.last_run
        unreadable = {image_id for image_id, _ in stats.skipped}
        good = [image_id for image_id in part.image_ids if image_id not in unreadable]
        computed, cached, tokens = computed + stats.computed, cached + stats.cached, tokens + stats.tokens
        gpu, fallback = gpu + stats.gpu_decoded, fallback + stats.cpu_fallbacks
        decoded = f", {gpu} decoded on the GPU and {fallback} on the CPU" if stats.decode == "gpu" else ""
        notes["detail"] = (
            f"{precision_name(wrapper.dtype)} on {wrapper.device.type}, batch {stats.batch_size}, "
            f"{runtime.num_workers} decode workers ({stats.decode} decoding{decoded}); {computed} images computed, "
            f"{cached} from the result cache ({runtime.cache_note()})"
        )
        per_image = per_image_tokens(tokens, computed)
        notes["detail"] += f"; {per_image}" if per_image else ""
        yield PartResult(part, good, values, stats.skipped)


def with_content(parts: Sequence[PlannedPart]) -> list[PlannedPart]:
    """``parts`` with the digest of their images' bytes (:meth:`ImageSource.content_digest`), which part keys use.
    A ``.tar`` shard's part is its whole shard: every shard is hashed in a thread pool (hashlib releases the GIL)
    while its tar headers are checked here (a truncated shard: one line naming it, before any model loads); a zip's
    digest comes from its directory alone; a folder's from each image file. One source is open at a time."""
    tars = list(dict.fromkeys(part.shard for part in parts if part.shard.endswith(".tar")))
    hashes: dict[str, str] = {}
    with ThreadPoolExecutor(min(len(tars), os.cpu_count() or 1, 16) or 1) as pool:
        pending = [pool.submit(_hash_file, shard) for shard in tars]
        for shard, future in zip(tars, pending, strict=True):
            try:
                index_shard(shard)
            except (OSError, ValueError) as exc:
                raise EngineError(_naming(shard, exc)) from exc
            result = future.result()
            if isinstance(result, OSError):
                raise EngineError(_naming(shard, result)) from result
            hashes[shard] = result
    done: list[PlannedPart] = []
    opened: tuple[str, ImageSource] | None = None  # parts come grouped by shard
    for part in parts:
        try:
            if part.shard in hashes:
                content = shards_digest([(Path(part.shard), hashes[part.shard])])
            else:
                if opened is None or opened[0] != part.shard:
                    opened = (part.shard, ImageSource(part.shard))
                content = opened[1].content_digest(part.image_ids)
        except (OSError, ValueError) as exc:
            raise EngineError(_naming(part.shard, exc)) from exc
        done.append(replace(part, content=content))
    return done


def _hash_file(path: str) -> str | OSError:
    """The file's SHA-256, or the error reading it (for the caller to name the shard)."""
    try:
        return file_sha256(path)
    except OSError as exc:
        return exc


def _naming(shard: str, exc: Exception) -> str:
    """One line naming the shard, without repeating it when the message already starts with it."""
    message = str(exc)
    return message if message.startswith(shard) else f"shard {shard}: {message}"


def compute_parts(
    task: ImageTask,
    parts: Sequence[PlannedPart],
    store: PartStore,
    runtime: Runtime,
    knobs: RuntimeParams,
) -> EngineRun:
    """Every part of ``parts`` in ``store``: reused where an earlier run finished it, else computed on the engine
    ``knobs.engine`` names; the manifest is complete when this returns."""
    if knobs.engine not in ENGINES:
        raise ValueError(f"runtime.engine: unknown engine {knobs.engine!r}; choose one of {', '.join(ENGINES)}")
    start = time.perf_counter()
    parts = with_content(parts)
    todo = [part for part in parts if not store.reusable(part)]
    run = EngineRun(knobs.engine, parts=len(parts), reused=len(parts) - len(todo))
    notes = {"detail": "nothing to compute"}
    if knobs.engine == "ray" and todo:
        from capsearch.ray_engine import ray_parts

        results: Iterator[PartResult] = ray_parts(task, todo, runtime, knobs, notes)
    else:
        results = _local_parts(task, todo, runtime, notes)
    for result in results:
        store.write(result.part, result.ids, task.wrapper_class.part_values(result.values), result.skipped)
        run.computed_images += len(result.ids)
    manifest = store.finish(parts)
    run.images = manifest["rows"]
    run.skipped = [(row[0], row[1]) for row in manifest["skipped"]]
    run.seconds = time.perf_counter() - start
    run.detail = notes["detail"]
    run.manifest = manifest
    return run
