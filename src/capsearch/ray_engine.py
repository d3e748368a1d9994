"""The Ray engine (the optional ``capsearch[ray]`` extra; joining the cluster is :mod:`capsearch.ray_cluster`'s).

One Ray Data pipeline over every part still to compute:

1. ``from_items``: one row per image (part, position, shard, image id), in blocks of about one batch;
2. ``map_batches(decode)`` in CPU tasks: the image's bytes read from its shard (or zip) and decoded with
   capsearch's own decoder, then resized/cropped to uint8 exactly as the local engine does. An undecodable image
   becomes a row with its reason instead of pixels (``ray.data.read_images`` would fail the whole job);
3. ``map_batches(_ModelActor, compute=ActorPoolStrategy(size=n), num_gpus=...)``: the job's wrapper, one copy per
   actor (per GPU, or per CPU slot), running the same ``run_pixels`` as the local engine's loop.

The driver (the stage script) gathers rows by part and hands each part back as soon as all its rows are in, so
the stage writes it at once and a killed run loses only the parts in flight. A failure in an actor is retried
image by image to name the one to blame, and ends the run with one :class:`capsearch.engine.EngineError` line.

At cluster scale (:func:`plan_actors`, :func:`_watched`, :func:`_blame_process_death`):

* actors are sized per node from the live nodes' resources, so that every node that can hold a decode task keeps
  room for one (Ray Data spreads actors over the nodes); a plan that cannot run is refused up front, in one line
  naming ``runtime.ray_actors`` and the nodes' resources;
* a model actor whose process dies (a segfault, an out-of-memory kill) is restarted at most
  :data:`PROCESS_DEATHS` times; then the unfinished images are run again in a fresh actor, bisecting the batch
  that kills it down to one image, and the run ends naming that image (it never loops);
* a watchdog ends a run that brings back nothing for ``runtime.ray_stall_seconds`` with one line saying what is
  waiting for what (a lost node, resources no node has free); every finished part is kept for the re-run.
"""

from __future__ import annotations

import queue
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch

from capsearch.artifacts import PlannedPart
from capsearch.data.images import ImageReadError, ImageSource
from capsearch.data.webdataset import ShardError
from capsearch.job import EngineError, ImageTask, PartResult
from capsearch.models.pixels import PixelPipeline
from capsearch.models.runtime import Runtime
from capsearch.params import RuntimeParams
from capsearch.ray_cluster import connect, one_line

DECODE_CPUS = 0.5  # per decode task; CPU model actors always leave at least this much free, or decoding would starve
PROCESS_DEATHS = 1  # restarts of a model actor whose process dies before the run stops and names the image
OPEN_SHARDS = 8  # shard readers a worker process keeps (tar headers indexed once each), least recently used out
_SOURCES: OrderedDict[str, ImageSource] = OrderedDict()


def _source(shard: str) -> ImageSource:
    if shard in _SOURCES:
        _SOURCES.move_to_end(shard)
        return _SOURCES[shard]
    try:
        _SOURCES[shard] = ImageSource(shard)
    except (ShardError, OSError) as exc:  # a truncated or missing shard fails the run, naming it
        message = str(exc)
        raise EngineError(message if message.startswith(shard) else f"shard {shard}: {message}") from None
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
        column = self.wrapper.result_column(len(ok))
        if len(values):
            column[ok] = self.task.wrapper_class.part_values(values)
        out["value"] = column
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


@dataclass(frozen=True)
class ActorPlan:
    """How many model actors, what each asks for, where they run."""

    actors: int
    gpus: float
    cpus: float
    device: str


def _node_name(node: dict[str, Any]) -> str:
    return str(node.get("NodeManagerAddress") or node.get("NodeID", "?")[:8])


def _resources(nodes: list[dict[str, Any]]) -> str:
    """The nodes' CPUs and GPUs, for messages."""
    parts = []
    for node in nodes:
        resources = node.get("Resources", {})
        gpus = f", {resources.get('GPU', 0):g} GPU" if resources.get("GPU") else ""
        parts.append(f"{_node_name(node)}: {resources.get('CPU', 0):g} CPU{gpus}")
    return "; ".join(parts) or "no live node"


def plan_actors(knobs: RuntimeParams, nodes: list[dict[str, Any]]) -> ActorPlan:
    """Model actors for the live ``nodes`` (``ray.nodes()``): one GPU each on a GPU cluster (no CPU: decoding keeps
    every core), else CPU actors sized per node so that each node that hosts some keeps :data:`DECODE_CPUS` free
    for decoding, with Ray Data spreading the actors evenly over the nodes that can hold one. A plan that cannot run
    is a ValueError naming ``runtime.ray_actors`` and the nodes' resources."""
    alive = [node for node in nodes if node.get("Alive")]
    cpus = [float(node.get("Resources", {}).get("CPU", 0)) for node in alive]
    gpus = int(sum(node.get("Resources", {}).get("GPU", 0) for node in alive))
    if knobs.device == "cuda" and not gpus:
        raise ValueError(f"runtime.device: 'cuda' requested but the Ray cluster has no GPU ({_resources(alive)})")
    if not any(cpu >= DECODE_CPUS for cpu in cpus):
        raise ValueError(f"runtime.ray_actors: no node has {DECODE_CPUS:g} CPU for decoding ({_resources(alive)})")
    use_gpu = gpus > 0 and knobs.device != "cpu"
    actors = (gpus if use_gpu else 1) if knobs.ray_actors == "auto" else int(knobs.ray_actors)
    if use_gpu:
        if actors > gpus:
            raise ValueError(
                f"runtime.ray_actors: {actors} GPU model actors need {actors} GPUs, the cluster has {gpus} "
                f"({_resources(alive)})"
            )
        return ActorPlan(actors, 1.0, 0.0, "cuda")
    hosts = [cpu for cpu in cpus if cpu - DECODE_CPUS >= 0.1]  # nodes with room for an actor and a decode task
    share = min((cpu - DECODE_CPUS) / -(-actors // len(hosts)) for cpu in hosts) if hosts else 0.0
    if share < 0.1:
        raise ValueError(
            f"runtime.ray_actors: {actors} CPU model actors do not fit beside decoding ({DECODE_CPUS:g} CPU kept free "
            f"on each node; {_resources(alive)}); use fewer actors or more CPUs"
        )
    return ActorPlan(actors, 0.0, round(min(1.0, share), 3), "cpu")


def actor_plan(knobs: RuntimeParams) -> ActorPlan:
    """:func:`plan_actors` for the cluster Ray is connected to, once what it needs is free there
    (:func:`wait_for_room`)."""
    plan = plan_actors(knobs, ray.nodes())
    wait_for_room(plan, ray.available_resources)
    return plan


ROOM_SECONDS = 15.0  # how long a plan waits for the resources a finishing run is still giving back


def wait_for_room(plan: ActorPlan, available: Any, seconds: float = ROOM_SECONDS) -> None:
    """Return once the cluster has free (``available()``: Ray's free resources) what ``plan``'s actors and one
    decode task need; after ``seconds``, a ValueError naming ``runtime.ray_actors``: another run holds them, and
    starting anyway would leave this run's decoding without a CPU until the watchdog ends both."""
    cpus, gpus = plan.actors * plan.cpus + DECODE_CPUS, plan.actors * plan.gpus
    deadline = time.monotonic() + seconds
    while True:
        free = available()
        if free.get("CPU", 0) + 1e-9 >= cpus and free.get("GPU", 0) + 1e-9 >= gpus:
            return
        if time.monotonic() > deadline:
            raise ValueError(
                f"runtime.ray_actors: {plan.actors} model actor(s) and decoding need {cpus:g} CPU and {gpus:g} GPU, "
                f"but the Ray cluster has {free.get('CPU', 0):g} CPU and {free.get('GPU', 0):g} GPU free (another "
                f"run holds the rest); wait for it, or lower runtime.ray_actors"
            )
        time.sleep(0.2)


def ray_parts(
    task: ImageTask, todo: Sequence[PlannedPart], runtime: Runtime, knobs: RuntimeParams, notes: dict[str, str]
) -> Iterator[PartResult]:
    """Compute ``todo`` on Ray; each part is yielded as soon as all its rows are back."""
    pipeline = task.pixel_pipeline()
    if not isinstance(pipeline, PixelPipeline):
        raise EngineError(
            f"runtime.engine: the ray engine decodes images to one pixel size, but a {task.family.model_type} "
            "model's own processor gives each image its own tiles or patch grid; use runtime.engine: local"
        )
    started = connect(knobs.ray_address)
    stalled = False
    try:
        plan = actor_plan(knobs)
        batch_size = runtime.batch_for(task.kind, task.family)
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
            .map_batches(decode_batch, fn_kwargs={"pipeline": pipeline}, batch_size=batch_size, num_cpus=DECODE_CPUS)
        )
        with warnings.catch_warnings():  # Ray 2.60 has no other way to bound restarts (pyproject keeps ray < 2.64)
            warnings.simplefilter("ignore", DeprecationWarning)
            dataset = dataset.map_batches(
                _ModelActor,
                fn_constructor_kwargs={"task": task, "device": plan.device},
                compute=ray.data.ActorPoolStrategy(size=plan.actors),
                num_gpus=plan.gpus,
                num_cpus=plan.cpus,
                batch_size=batch_size,
                # a process that dies on every try is restarted this often, not forever (Ray Data's default)
                max_restarts=PROCESS_DEATHS,
                max_task_retries=PROCESS_DEATHS,
            )
        cpus = f"{plan.cpus:g} CPU each" if plan.device == "cpu" else "1 GPU each"
        notes["detail"] = (
            f"Ray, {plan.actors} {plan.device} model actor(s) ({cpus}), batch {batch_size}, decoding in CPU tasks"
        )
        rows: dict[int, dict[int, tuple[str, str, Any]]] = {}  # by part: the rows back so far
        finished: set[int] = set()
        progress = {"back": 0, "total": len(items)}
        batches = dataset.iter_batches(batch_size=None, batch_format="numpy")
        try:
            report = lambda: _stall_report(progress, plan, knobs)  # noqa: E731
            for batch in _watched(batches, knobs.ray_stall_seconds, report, LOAD_SECONDS):
                for p, r, image_id, reason, value in zip(
                    batch["part"], batch["row"], batch["image_id"], batch["reason"], batch["value"], strict=True
                ):
                    rows.setdefault(int(p), {})[int(r)] = (str(image_id), str(reason), value)
                progress["back"] += len(batch["part"])
                for p in [p for p, got in rows.items() if len(got) == len(todo[p].image_ids)]:
                    finished.add(p)
                    yield _part_result(todo[p], rows.pop(p))
        except _Stalled as stall:
            stalled = True
            raise EngineError(str(stall)) from None
        except Exception as exc:
            if isinstance(exc, EngineError):
                raise
            if _is_process_death(exc):
                left = [
                    item
                    for item in items
                    if item["part"] not in finished and item["row"] not in rows.get(item["part"], {})
                ]
                _blame_process_death(task, left, plan, pipeline, batch_size)
            raise EngineError(one_line(exc)) from None
        if rows:
            raise EngineError(f"Ray returned parts {sorted(rows)} incomplete")
    finally:
        if started and not stalled:  # after a stall Ray may still be busy in the watching thread: the exit ends it
            ray.shutdown()


class _Stalled(Exception):
    """No result came back for the watchdog's time; the message says what waits for what."""


LOAD_SECONDS = 120  # the first result may take this much longer than ray_stall_seconds: the model loads first


def _watched(batches: Iterator[Any], seconds: int, report: Any, load_seconds: float = 0) -> Iterator[Any]:
    """``batches``, pulled in a thread: when none arrives for ``seconds`` (the first: ``seconds + load_seconds``,
    as the model actors load before anything comes back), :class:`_Stalled` with ``report()``."""
    handoff: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=2)

    def pump() -> None:
        try:
            for batch in batches:
                handoff.put(("batch", batch))
        except BaseException as exc:  # handed to the caller, raised there
            handoff.put(("error", exc))
        else:
            handoff.put(("done", None))

    threading.Thread(target=pump, name="capsearch-ray-results", daemon=True).start()
    wait = seconds + load_seconds
    while True:
        try:
            kind, value = handoff.get(timeout=wait)
        except queue.Empty:
            raise _Stalled(report()) from None
        wait = seconds
        if kind == "done":
            return
        if kind == "error":
            raise value
        yield value


def _stall_report(progress: dict[str, int], plan: ActorPlan, knobs: RuntimeParams) -> str:
    """One line: how far the run got, which nodes were lost, what is free against what the run's steps ask for."""
    nodes = ray.nodes()
    lost = [_node_name(node) for node in nodes if not node.get("Alive")]
    free = ray.available_resources()
    wants = f"decode tasks ask {DECODE_CPUS:g} CPU, model actors {plan.cpus:g} CPU and {plan.gpus:g} GPU"
    lost_text = f"lost node(s) {', '.join(lost)}; " if lost else ""
    return (
        f"no result came back for {knobs.ray_stall_seconds} s (runtime.ray_stall_seconds"
        f"{'' if progress['back'] else f', and {LOAD_SECONDS} s more for the models to load'}): {progress['back']} of "
        f"{progress['total']} images done; {lost_text}free now: {free.get('CPU', 0):g} CPU, {free.get('GPU', 0):g} "
        f"GPU on {_resources([n for n in nodes if n.get('Alive')])}; {wants}. Finished parts are kept: re-run to "
        "resume"
    )


def _is_process_death(exc: BaseException) -> bool:
    """Whether Ray failed because a worker process died (a crash, an out-of-memory kill), not a Python error."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ray.exceptions.RayActorError | ray.exceptions.WorkerCrashedError):
            return True
        if isinstance(exc, ray.exceptions.OutOfMemoryError):
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


class _Probe:
    """A model copy that runs given rows, for finding the image that kills its process (never restarted)."""

    def __init__(self, task: ImageTask, device: str, pipeline: PixelPipeline) -> None:
        self.model = _ModelActor(task, device)
        self.pipeline = pipeline

    def run(self, rows: list[dict[str, Any]]) -> int:
        batch = {key: np.asarray([row[key] for row in rows], dtype=object) for key in rows[0]}
        return len(self.model(decode_batch(batch, self.pipeline))["value"])


def _blame_process_death(
    task: ImageTask, left: list[dict[str, Any]], plan: ActorPlan, pipeline: PixelPipeline, batch_size: int
) -> None:
    """After the model's process died :data:`PROCESS_DEATHS` + 1 times: run the unfinished rows again, a batch at a
    time, in a fresh model process; bisect the batch that kills it to one image and fail naming that image."""
    probe = ray.remote(num_cpus=plan.cpus, num_gpus=plan.gpus, max_restarts=0, max_task_retries=0)(_Probe)

    def kills(rows: list[dict[str, Any]], actor: Any = None) -> bool:
        fresh = actor is None
        actor = actor or probe.remote(task, plan.device, pipeline)
        try:
            ray.get(actor.run.remote(rows))
        except ray.exceptions.RayActorError:
            return True
        finally:
            if fresh:
                ray.kill(actor)
        return False

    actor = probe.remote(task, plan.device, pipeline)
    for start in range(0, len(left), batch_size):
        chunk = left[start : start + batch_size]
        if not kills(chunk, actor):
            continue
        while len(chunk) > 1:  # the half that kills a fresh process; if the first does not, the second does
            half = chunk[: len(chunk) // 2]
            chunk = half if kills(half) else chunk[len(chunk) // 2 :]
        row = chunk[0]
        raise EngineError(
            f"shard {row['shard']}: image {row['image_id']}: the model's worker process died on it "
            f"{PROCESS_DEATHS + 1} times, and again in a fresh process (a crash or an out-of-memory kill in the "
            "model); remove the image or give the model more memory"
        )
    ray.kill(actor)
    raise EngineError(
        f"the model's worker process died {PROCESS_DEATHS + 1} times, but no image kills it when run again alone "
        "(memory pressure from elsewhere on the node?); see the Ray logs, then re-run to resume"
    )


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
