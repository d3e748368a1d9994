"""Data-parallel fine-tuning over a Ray cluster with Ray Train's ``TorchTrainer``: one worker per GPU (or CPU
workers with gloo where there are none), the model wrapped in ``DistributedDataParallel``, each worker taking its
slice of every global batch, so that the global batch and the learning rate are the configured ones.

The loop is :func:`capsearch.finetune.loop.train` itself, on each worker; rank 0 checkpoints, saves the best
epoch's model into the folder the caller names, and writes the run's history for the caller, which replays it into
its logger. The model, the data and the checkpoint folder must be readable by every worker under the same paths:
one machine, or a cluster with shared storage (the case for a multi-node run's ``runtime.cache_dir`` and the
project folder).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from capsearch.finetune.checkpoint import CheckpointStore
from capsearch.finetune.loop import History, Logger, Outcome, Pairs, Task, train
from capsearch.io import write_json
from capsearch.params import FinetuneParams, RuntimeParams

TaskFactory = Callable[[Any], Task]  # the torch device of the worker -> the task, its model on that device


def _worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: its task on its device, the shared loop, rank 0's outcome reported back."""
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    task = config["make_task"](ray.train.torch.get_device())
    outcome = train(
        task, config["train_pairs"], config["dev"], config["p"], workers=config["workers"],
        checkpoints=config["checkpoints"], checkpoint_steps=config["checkpoint_steps"], desc=config["desc"],
        rank=rank, world=world,
    )  # fmt: skip
    if rank == 0:
        config["save"](task, Path(config["out"]))
        write_json(config["report"], asdict(outcome))


def train_on_ray(
    make_task: TaskFactory,
    save: Callable[[Task, Path], None],
    out: str | Path,
    train_pairs: Pairs,
    dev: Pairs,
    p: FinetuneParams,
    *,
    num_workers: int,
    use_gpu: bool,
    workers: int,
    checkpoints: CheckpointStore,
    checkpoint_steps: int,
    logger: Logger | None = None,
    desc: str = "fine-tune",
) -> Outcome:
    """Fine-tune on ``num_workers`` Ray Train workers (connected to Ray already); ``save(task, out)`` runs on rank 0
    with the best epoch's weights in its model. The history is replayed into ``logger`` once the run is done."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    if p.batch_size % num_workers:
        raise ValueError(
            f"{p.name('batch_size')}: {p.batch_size} pairs do not split evenly over {num_workers} Ray Train "
            f"workers (runtime.ray_actors); use a multiple of {num_workers}"
        )
    config = {
        "make_task": make_task, "save": save, "out": str(out), "train_pairs": train_pairs, "dev": dev, "p": p,
        "workers": workers, "checkpoints": checkpoints, "checkpoint_steps": checkpoint_steps, "desc": desc,
    }  # fmt: skip
    resources = {"GPU": 1, "CPU": 0} if use_gpu else {"CPU": 1}
    with tempfile.TemporaryDirectory(prefix="capsearch-ray-train-") as storage:
        config["report"] = str(Path(storage) / "outcome.json")
        trainer = TorchTrainer(
            _worker,
            train_loop_config=config,
            scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu, resources_per_worker=resources),
            torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
            run_config=RunConfig(storage_path=storage, name="finetune"),
        )
        try:
            result = trainer.fit()
            if result.error is not None:
                raise result.error
        except Exception as exc:  # Ray Train's wrapping of a worker's error: its last line is what went wrong
            from capsearch.ray_cluster import one_line

            raise ValueError(f"Ray Train: {one_line(exc)}") from None
        outcome = _outcome(json.loads(Path(config["report"]).read_text(encoding="utf-8")))
    if logger is not None:
        for row in outcome.history.steps:
            logger.step(int(row[0]), row[1], row[2])
        for row in outcome.history.epochs:
            logger.epoch(row["epoch"], row["step"], row)
    return outcome


def worker_plan(knobs: RuntimeParams, nodes: list[dict[str, Any]]) -> tuple[int, bool]:
    """How many Ray Train workers and whether they take a GPU each, for the live ``nodes`` (``ray.nodes()``):
    ``runtime.ray_actors`` auto = one per GPU of the cluster, or one CPU worker where it has none; a number asks
    for that many (each with one GPU on a GPU cluster, one CPU otherwise)."""
    alive = [node for node in nodes if node.get("Alive")]
    gpus = int(sum(node.get("Resources", {}).get("GPU", 0) for node in alive))
    cpus = sum(float(node.get("Resources", {}).get("CPU", 0)) for node in alive)
    if knobs.device == "cuda" and not gpus:
        raise ValueError(f"runtime.device: 'cuda' requested but the Ray cluster has no GPU ({cpus:g} CPUs)")
    use_gpu = gpus > 0 and knobs.device != "cpu"
    workers = (gpus if use_gpu else 1) if knobs.ray_actors == "auto" else int(knobs.ray_actors)
    have, unit = (gpus, "GPU") if use_gpu else (int(cpus), "CPU")
    if workers > have:
        raise ValueError(f"runtime.ray_actors: {workers} Ray Train workers need a {unit} each, the cluster has {have}")
    return workers, use_gpu


def _outcome(values: dict[str, Any]) -> Outcome:
    history = values.pop("history")
    return Outcome(history=History(history["steps"], history["epochs"]), **values)
