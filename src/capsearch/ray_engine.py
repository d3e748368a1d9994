"""The Ray engine: the only module that imports Ray (the optional ``capsearch[ray]`` extra).

One Ray Data pipeline over every part still to compute:

1. ``from_items``: one row per image (part, position, shard, image id), in blocks of about one batch;
2. ``map_batches(decode)`` in CPU tasks: the image's bytes read from its shard (or zip) and decoded with
   capsearch's own decoder, then resized/cropped to uint8 exactly as the local engine does. An undecodable image
   becomes a row with its reason instead of pixels (``ray.data.read_images`` would fail the whole job);
3. ``map_batches(_ModelActor, compute=ActorPoolStrategy(size=n), num_gpus=...)``: the BLIP or CLIP wrapper, one
   copy per actor (per GPU, or per CPU slot), running the same ``caption_pixels`` / ``embed_pixels`` as locally.

The driver (the stage script) gathers rows by part and hands each part back as soon as all its rows are in, so
the stage writes it at once and a killed run loses only the parts in flight. A failure in an actor is retried
image by image to name the one to blame, and ends the run with one :class:`capsearch.engine.EngineError` line.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch

from capsearch.artifacts import PlannedPart
from capsearch.data.images import ImageReadError, ImageSource
from capsearch.data.webdataset import ShardError
from capsearch.engine import EngineError, ImageTask, PartResult
from capsearch.models.pixels import PixelPipeline
from capsearch.models.runtime import Runtime
from capsearch.params import RuntimeParams

DECODE_CPUS = 0.5  # per decode task; CPU model actors always leave at least this much free, or decoding would starve
OPEN_SHARDS = 8  # shard readers a worker process keeps (tar headers indexed once each), least recently used out
_SOURCES: OrderedDict[str, ImageSource] = OrderedDict()


def _source(shard: str) -> ImageSource:
    if shard in _SOURCES:
        _SOURCES.move_to_end(shard)
        return _SOURCES[shard]
    try:
        _SOURCES[shard] = ImageSource(shard)
    except (ShardError, OSError) as exc:  # a truncated or missing shard fails the run, naming it
        raise EngineError(f"shard {shard}: {exc}") from None
    if len(_SOURCES) > OPEN_SHARDS:
        _SOURCES.popitem(last=False)
    return _SOURCES[shard]


def decode_batch(batch: dict[str, np.ndarray], pipeline: PixelPipeline) -> dict[str, np.ndarray]:
    """uint8 pixels of each row's image (zeros and a reason where it cannot be decoded)."""
    count = len(batch["image_id"])
    reasons = [""] * count
    pixels: list[np.ndarray | None] = [None] * count
    for i, (shard, image_id) in enumerate(zip(batch["shard"], batch["image_id"], strict=True)):
        try:
            image = _source(str(shard)).open_rgb(str(image_id), pipeline.draft_size)
            pixels[i] = pipeline(image).numpy()
        except ImageReadError as exc:
            reasons[i] = str(exc)
    shape = next((p.shape for p in pixels if p is not None), None)
    if shape is None:  # nothing decodable in this batch: the shape is the pipeline's output size
        shape = tuple(pipeline(_blank()).shape)
    stacked = np.stack([p if p is not None else np.zeros(shape, dtype=np.uint8) for p in pixels])
    return {**batch, "reason": np.asarray(reasons, dtype=object), "pixels": stacked}


def _blank() -> Any:
    from PIL import Image

    return Image.new("RGB", (8, 8))


class _ModelActor:
    """One model copy; rows in, results out (captions, or embedding rows) beside each row's part and position."""

    def __init__(self, task: ImageTask, device: str) -> None:
        self.task = task
        self.wrapper = task.load(device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = np.asarray([not reason for reason in batch["reason"]], dtype=bool)
        pixels = torch.from_numpy(np.ascontiguousarray(batch["pixels"][ok]))
        values = self._apply(pixels, batch, ok) if ok.any() else []
        out = {key: batch[key] for key in ("part", "row", "image_id", "reason")}
        if self.task.kind == "caption":
            captions = np.full(len(ok), "", dtype=object)
            captions[ok] = values
            out["value"] = captions
        else:
            dims = self.wrapper.dim
            vectors = np.zeros((len(ok), dims), dtype=np.float32)
            if len(values):
                vectors[ok] = np.stack(values)
            out["value"] = vectors
        return out

    def _apply(self, pixels: torch.Tensor, batch: dict[str, np.ndarray], ok: np.ndarray) -> list[Any]:
        try:
            return self.task.apply(self.wrapper, pixels)
        except Exception as exc:  # find the image to blame, then fail naming it
            shards, ids = batch["shard"][ok], batch["image_id"][ok]
            for one, shard, image_id in zip(pixels, shards, ids, strict=True):
                try:
                    self.task.apply(self.wrapper, one[None])
                except Exception as single:
                    raise EngineError(f"shard {shard}: image {image_id}: {type(single).__name__}: {single}") from None
            raise EngineError(f"shard {shards[0]}: batch of {len(ids)} images: {type(exc).__name__}: {exc}") from None


_ENGINE_ERROR = re.compile(r"EngineError: (.+)")


def _one_line(exc: BaseException) -> str:
    """The EngineError message inside a Ray error (which carries a traceback), else its last line."""
    found = _ENGINE_ERROR.findall(str(exc))
    if found:
        return found[-1].strip()
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(exc).__name__


def connect(address: str | None) -> bool:
    """Join the cluster at ``address`` (``auto``: the one ``ray start`` runs here), or start a local Ray when
    None; True when this call started Ray (the caller shuts it down)."""
    if ray.is_initialized():
        return False
    if address is None:  # "local": never attach to a cluster that happens to run here
        ray.init(address="local", include_dashboard=False)
    else:
        ray.init(address=address)
    return True


def actor_plan(knobs: RuntimeParams) -> tuple[int, float, float, str]:
    """(actors, GPUs per actor, CPUs per actor, device) from the runtime knobs and the cluster's resources.

    GPU actors take one GPU each and no CPU. CPU actors take one CPU each, less where that would leave no room
    for a decode task (say 2 actors on 2 CPUs: 0.75 each), so the pipeline can never wait on itself.
    """
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), float(resources.get("CPU", 1))
    if knobs.device == "cuda" and not gpus:
        raise ValueError("runtime.device: 'cuda' requested but the Ray cluster has no GPU")
    use_gpu = gpus > 0 and knobs.device != "cpu"
    actors = (gpus if use_gpu else 1) if knobs.ray_actors == "auto" else int(knobs.ray_actors)
    if use_gpu:
        return actors, 1.0, 0.0, "cuda"
    if cpus - DECODE_CPUS < 0.1 * actors:
        raise ValueError(f"runtime.ray_actors: {actors} CPU model actors do not fit the cluster's {cpus:g} CPUs")
    return actors, 0.0, min(1.0, (cpus - DECODE_CPUS) / actors), "cpu"


def ray_parts(
    task: ImageTask, todo: Sequence[PlannedPart], runtime: Runtime, knobs: RuntimeParams, notes: dict[str, str]
) -> Iterator[PartResult]:
    """Compute ``todo`` on Ray; each part is yielded as soon as all its rows are back."""
    started = connect(knobs.ray_address)
    try:
        actors, gpus, cpus, device = actor_plan(knobs)
        batch_size = runtime.batch_sizes[task.kind]
        # absolute paths: Ray's workers do not run in the driver's folder (on a cluster, every node must see the
        # shards at the same path: a shared file system)
        items = [
            {"part": p, "row": r, "shard": str(Path(part.shard).resolve()), "image_id": image_id}
            for p, part in enumerate(todo)
            for r, image_id in enumerate(part.image_ids)
        ]
        blocks = max(1, -(-len(items) // batch_size))
        dataset = (
            ray.data.from_items(items, override_num_blocks=blocks)
            # decode tasks ask for other resources than the actors, so Ray Data does not fuse decoding into the
            # model actors (it fuses map steps with equal remote args): decoding stays in CPU tasks beside them
            .map_batches(
                decode_batch,
                fn_kwargs={"pipeline": task.pixel_pipeline()},
                batch_size=batch_size,
                num_cpus=DECODE_CPUS,
            )
            .map_batches(
                _ModelActor,
                fn_constructor_kwargs={"task": task, "device": device},
                compute=ray.data.ActorPoolStrategy(size=actors),
                num_gpus=gpus,
                num_cpus=cpus,
                batch_size=batch_size,
            )
        )
        notes["detail"] = f"Ray, {actors} {device} model actor(s), batch {batch_size}, decoding in CPU tasks"
        rows: dict[int, dict[int, tuple[str, str, Any]]] = {}
        try:
            for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                for p, r, image_id, reason, value in zip(
                    batch["part"], batch["row"], batch["image_id"], batch["reason"], batch["value"], strict=True
                ):
                    rows.setdefault(int(p), {})[int(r)] = (str(image_id), str(reason), value)
                for p in [p for p, got in rows.items() if len(got) == len(todo[p].image_ids)]:
                    yield _part_result(todo[p], rows.pop(p))
        except Exception as exc:
            if isinstance(exc, EngineError):
                raise
            raise EngineError(_one_line(exc)) from None
        if rows:
            raise EngineError(f"Ray returned parts {sorted(rows)} incomplete")
    finally:
        if started:
            ray.shutdown()


def _part_result(part: PlannedPart, rows: dict[int, tuple[str, str, Any]]) -> PartResult:
    ids, values, skipped = [], [], []
    for r in range(len(part.image_ids)):
        image_id, reason, value = rows[r]
        if reason:
            skipped.append((image_id, reason))
        else:
            ids.append(image_id)
            values.append(value if isinstance(value, str) else np.asarray(value, dtype=np.float32))
    return PartResult(part, ids, values, skipped)
