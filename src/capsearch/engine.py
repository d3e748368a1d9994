"""Captioning or embedding a run's images part by part, resumably, on the local engine or on Ray.

The caption and embed_images stages, and anyone using the library, call :func:`compute_parts`: it plans nothing
itself (the parts come from :func:`capsearch.artifacts.plan_parts`), reuses every part an earlier run finished
(:class:`capsearch.artifacts.PartStore`), and computes the rest with

* ``local``: this process, the wrappers' own ``caption_images`` / ``embed_images`` (decoding workers, OOM
  back-off, the per-image SQLite result cache), one part after another;
* ``ray``: Ray Data (:mod:`capsearch.ray_engine`, the only module that imports Ray): images decoded and resized
  in CPU tasks, the model in a pool of actors (one per GPU, or per CPU slot).

Both run the same wrapper methods on the same uint8 pixels, so the engine never changes results. An undecodable
image is skipped and recorded with its reason in the manifest; a failure inside the model names the shard and the
image (:class:`EngineError`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from capsearch.artifacts import PartStore, PlannedPart
from capsearch.cache import model_fingerprint
from capsearch.data.images import ImageSource
from capsearch.data.webdataset import file_sha256, index_shard, shards_digest
from capsearch.imports import code_fingerprint
from capsearch.models.base import PretrainedWrapper, inspect_model, load_pixel_pipeline
from capsearch.models.families import check_prompt
from capsearch.models.gpu_decode import resolve_decode
from capsearch.models.pixels import PixelPipeline
from capsearch.models.runtime import Runtime, precision_name, resolve_device, resolve_model
from capsearch.params import ENGINES, RuntimeParams
from capsearch.versions import library_versions

# task (a wrapper's ``task_kind``) -> its model's params key and the sharded layout its results go to. The wrapper
# classes come from the caller (the stage imports the one it runs), so each stage depends on its own model code only.
TASKS = {"caption": ("caption.model", "captions"), "embed_images": ("clip.model", "image_embeddings")}


class EngineError(RuntimeError):
    """A failure while computing a part; the message names the shard and, where one is to blame, the image."""


@dataclass(frozen=True)
class ImageTask:
    """A model run over images, as both engines need it: the wrapper class (``Captioner`` captions,
    ``DualEncoder`` embeds images), the model and its settings. Picklable: Ray ships it to its workers.

    :meth:`identity` reads the model's config first: a model of the wrong kind, with remote code, or given a
    prompt it cannot take is refused there, before any image is read."""

    wrapper_class: type[PretrainedWrapper]
    model: str
    revision: str | None
    precision: str
    device: str = "auto"
    decoding: Any = None  # the captioner's DecodingSettings
    decode: str = "cpu"  # runtime.decode as asked: auto, cpu or gpu (see capsearch.models.gpu_decode)

    def __post_init__(self) -> None:
        if self.kind not in TASKS:
            raise ValueError(f"{self.wrapper_class.__name__} runs no image task; choose one of {', '.join(TASKS)}")
        if self.kind == "caption" and self.decoding is None:
            raise ValueError("a caption task needs its decoding settings")

    @property
    def kind(self) -> str:
        """``caption`` or ``embed_images``."""
        return str(getattr(self.wrapper_class, "task_kind", ""))

    @property
    def param(self) -> str:
        """The params key of the model, for errors."""
        return TASKS[self.kind][0]

    @property
    def output_kind(self) -> str:
        """The sharded layout its results go to (see :mod:`capsearch.artifacts`)."""
        return TASKS[self.kind][1]

    def decode_path(self) -> str:
        """``cpu`` or ``gpu``: where the images are decoded (the model's image processor read only on a GPU)."""
        device = resolve_device(self.device)
        pipeline = self.pixel_pipeline() if self.decode != "cpu" and device.type == "cuda" else None
        return resolve_decode(self.decode, device, pipeline)

    def identity(self) -> dict[str, Any]:
        """What decides the results besides the images: weights (commit or content hash), code, library versions,
        precision, where images are decoded, decoding settings."""
        source, family = inspect_model(self.wrapper_class.family_of, self.model, self.revision, self.param)
        if self.kind == "caption":
            check_prompt(family, self.decoding.prompt, "caption.prompt")
        return {
            "task": self.kind,
            "model": self.model,
            "revision": source.commit or self.revision,
            "family": family.model_type,
            "weights": model_fingerprint(self.model, source.load_revision),
            "code": code_fingerprint(self.wrapper_class.__module__),
            "libraries": library_versions(),
            "precision": self.precision,
            "decode": self.decode_path(),
            "decoding": asdict(self.decoding) if self.decoding else None,
        }

    def load(self, device: str | None = None) -> PretrainedWrapper:
        """The wrapper, on ``device`` (default: the task's)."""
        return self.wrapper_class(self.model, self.revision, self.precision, device or self.device, param=self.param)

    def pixel_pipeline(self) -> PixelPipeline:
        """The model's preprocessing, from its image processor alone (no weights loaded)."""
        source = resolve_model(self.model, self.revision, self.param)
        return load_pixel_pipeline(self.model, source.load_revision, self.param)[0]

    def apply(self, wrapper: Any, pixels: torch.Tensor) -> list[Any]:
        """Results of a uint8 batch from the pipeline: captions, or embedding rows."""
        if self.kind == "caption":
            return wrapper.caption_pixels(pixels, self.decoding)
        return list(wrapper.embed_pixels(pixels))

    def run(self, wrapper: Any, source: ImageSource, ids: Sequence[str], runtime: Runtime) -> list[Any]:
        """Results for the readable ones of ``ids`` through the wrapper's own loop (decoding workers, OOM back-off,
        result cache); ``wrapper.last_run.skipped`` names the unreadable ones."""
        workers, cache, size = runtime.num_workers, runtime.cache, runtime.batch_sizes[self.kind]
        loop = {"decode": self.decode, "skip_unreadable": True}
        if self.kind == "caption":
            return wrapper.caption_images(source, ids, self.decoding, size, workers, cache, **loop)
        return list(wrapper.embed_images(source, ids, size, workers, cache, **loop))


@dataclass
class PartResult:
    """One computed part: the kept image ids in order, their results, and the skipped images with reasons."""

    part: PlannedPart
    ids: list[str]
    values: list[Any]
    skipped: list[tuple[str, str]]


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
    computed = cached = gpu = fallback = 0
    for part in todo:
        source = ImageSource(part.shard)
        try:
            values = task.run(wrapper, source, part.image_ids, runtime)
        except (RuntimeError, ValueError) as exc:
            raise EngineError(_naming(part.shard, exc)) from exc
        stats = wrapper.last_run
        unreadable = {image_id for image_id, _ in stats.skipped}
        good = [image_id for image_id in part.image_ids if image_id not in unreadable]
        computed, cached = computed + stats.computed, cached + stats.cached
        gpu, fallback = gpu + stats.gpu_decoded, fallback + stats.cpu_fallbacks
        decoded = f", {gpu} decoded on the GPU and {fallback} on the CPU" if stats.decode == "gpu" else ""
        notes["detail"] = (
            f"{precision_name(wrapper.dtype)} on {wrapper.device.type}, batch {stats.batch_size}, "
            f"{runtime.num_workers} decode workers ({stats.decode} decoding{decoded}); {computed} images computed, "
            f"{cached} from the result cache ({runtime.cache_note()})"
        )
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
        values: Any = result.values
        if task.kind == "embed_images":
            values = np.stack(values).astype(np.float32) if values else np.zeros((0, 0), dtype=np.float32)
        store.write(result.part, result.ids, values, result.skipped)
        run.computed_images += len(result.ids)
    manifest = store.finish(parts)
    run.images = manifest["rows"]
    run.skipped = [(row[0], row[1]) for row in manifest["skipped"]]
    run.seconds = time.perf_counter() - start
    run.detail = notes["detail"]
    run.manifest = manifest
    return run
