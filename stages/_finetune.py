"""Shared by the fine-tuning stages: their record when off, their train/dev pairs, their resumable checkpoint, and
DVCLive logging of steps and epochs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from _common import fail, summary  # first: puts this project's src/ on the path, before capsearch

from capsearch.artifacts import RunLayout
from capsearch.data.subset import build_subset, check_workers, open_source
from capsearch.finetune.handover import write_record
from capsearch.io import atomic_folder, write_json, write_text
from capsearch.params import FinetuneParams, ModelParams, ParamError, RuntimeParams, SourceParams


class LiveLogger:
    """The training's steps and epochs into DVCLive's files (``metrics/<stage>``): train loss and learning rate per
    step, every number of the dev metrics per epoch (nested keys joined by ``/``)."""

    def __init__(self, directory: str | Path) -> None:
        from dvclive import Live

        logging.getLogger("dvclive").setLevel(logging.WARNING)
        self.live = Live(str(directory), save_dvc_exp=False, dvcyaml=None)  # dvc.yaml declares the files itself

    def step(self, step: int, loss: float, learning_rate: float) -> None:
        self.live.step = step
        self.live.log_metric("train/loss", loss)
        self.live.log_metric("train/learning_rate", learning_rate)

    def epoch(self, epoch: int, step: int, dev: dict) -> None:
        self.live.step = step
        for name, value in _numbers(dev, "dev"):
            if name not in ("dev/epoch", "dev/step"):
                self.live.log_metric(name, value)
        self.live.log_metric("dev/epoch", epoch, plot=False)

    def finish(self, summary_: dict) -> None:
        self.live.summary = summary_
        self.live.make_summary()


def _numbers(values: dict, prefix: str) -> list[tuple[str, float]]:
    found = []
    for key, value in values.items():
        if isinstance(value, dict):
            found += _numbers(value, f"{prefix}/{key}")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            found.append((f"{prefix}/{key}", value))
    return found


def base_unless_off(
    stage: str, p: FinetuneParams, reported_split: str, model: ModelParams, out: tuple[Path, Path, tuple]
) -> dict[str, Any] | None:
    """The base model's record of a fine-tuning stage, after checking ``p`` against the reported split (one error
    line); with ``epochs: 0`` the stage is done here (:func:`write_off`, its summary) and None is returned.
    ``out``: the model folder, the DVCLive folder and the curves."""
    try:
        p.check_against(reported_split)
    except ParamError as exc:
        fail(stage, exc)
    base = {"model": model.model, "revision": model.revision}
    if p.epochs:
        return base
    write_off(*out[:2], base, out[2])
    summary(stage, f"off ({p.name('epochs')}: 0): the run uses {model.model} as it is")
    return None


def write_off(model_dir: Path, log_dir: Path, base: dict[str, Any], curves: tuple[tuple[str, str], ...]) -> None:
    """Fine-tuning off: the model folder records that the base model is the run's, the log has empty curves (so
    `dvc plots show` draws nothing and warns of nothing)."""
    with atomic_folder(model_dir) as folder:
        write_record(folder, {"fine_tuned": False, "base": base})
    with atomic_folder(log_dir) as folder:
        write_json(folder / "metrics.json", {"epochs": 0})
        for curve, column in curves:
            write_text(folder / curve, f"step\t{column}\n")


def train_and_dev(run: RunLayout, source_params: SourceParams, p: FinetuneParams, workers_param: Any) -> tuple:
    """The train and dev pairs ``p`` asks for: seeded samples of the source's splits, ``train_images`` and
    ``dev_images`` at most (a smaller split gives all it has, so the defaults work on a small collection)."""
    from capsearch.finetune.loop import pairs_of

    # absolute: Ray Train's workers run in folders of their own
    source, text_dir = open_source(source_params.kind, (run.root / source_params.images).resolve(), run.text_dir)
    workers = check_workers(workers_param)
    sets = {
        split: build_subset(
            text_dir, source, split, count, p.seed, section=p.NAME, workers=workers,
            kind=source_params.kind, count_param=p.name(f"{split}_images"), columns=source_params.columns,
            at_most=True,
        )
        for split, count in (("train", p.train_images), ("dev", p.dev_images))
    }  # fmt: skip
    return tuple(pairs_of(source, sets[s].images, sets[s].references) for s in ("train", "dev"))


def checkpoint_store(
    task: str, weights: str, p: FinetuneParams, knobs: RuntimeParams, data: tuple, **settings: Any
) -> Any:
    """The resumable checkpoint of a run of ``task`` (``finetune-clip``, ``finetune-captioner``) from the base model
    ``weights``, keyed by the run's recipe (:func:`capsearch.finetune.loop.checkpoint_recipe`: code, precision as
    resolved, params, the train and dev ``data``, the task's ``settings``), under the result cache's folder (outside
    DVC's cache)."""
    from capsearch.cache import default_cache_dir
    from capsearch.finetune.checkpoint import CheckpointStore
    from capsearch.finetune.loop import checkpoint_recipe
    from capsearch.models.runtime import resolve_device

    code = "capsearch.finetune." + {"finetune-clip": "contrastive", "finetune-captioner": "captioning"}[task]
    key = checkpoint_recipe(task, weights, code, p, resolve_device(knobs.device), *data, **settings).key()
    return CheckpointStore(Path(knobs.cache_dir or default_cache_dir()).resolve() / "checkpoints" / f"{task}-{key}")


def fine_tune(
    make_task: Any, train: Any, dev: Any, p: FinetuneParams, knobs: RuntimeParams, device: Any, workers: int, *,
    checkpoints: Any, logger: LiveLogger, out_dir: Path, record: dict[str, Any], desc: str,
) -> Any:  # fmt: skip
    """Train the task ``make_task(device)`` builds, on this machine (``runtime.engine: local``) or data-parallel on
    Ray Train workers (``ray``), and save the best epoch's model with its record in ``out_dir`` as one unit. The
    :class:`capsearch.finetune.loop.Outcome`."""
    from capsearch.finetune.loop import save_task
    from capsearch.finetune.loop import train as train_here

    with atomic_folder(out_dir) as folder:
        if knobs.engine == "ray":
            import ray

            from capsearch.finetune.distributed import train_on_ray, worker_plan
            from capsearch.ray_cluster import connect

            started = connect(knobs.ray_address)
            try:
                count, use_gpu = worker_plan(knobs, ray.nodes())
                outcome = train_on_ray(
                    make_task, save_task, folder.resolve(), train, dev, p, num_workers=count, use_gpu=use_gpu,
                    workers=workers, checkpoints=checkpoints, checkpoint_steps=knobs.checkpoint_steps,
                    logger=logger, desc=desc,
                )  # fmt: skip
            finally:
                if started:
                    ray.shutdown()
        else:
            task = make_task(device)
            outcome = train_here(
                task, train, dev, p, workers=workers, checkpoints=checkpoints,
                checkpoint_steps=knobs.checkpoint_steps, logger=logger, desc=desc,
            )  # fmt: skip
            save_task(task, folder)
        write_record(folder, {**record, "fine_tuned": True, "best_epoch": outcome.best_epoch, "params": p.as_yaml()})
    return outcome


def kept(outcome: Any, p: FinetuneParams, images: int) -> str:
    """The summary's words on which model was kept, and on the images an epoch's whole batches leave out."""
    chosen = (
        f"best epoch {outcome.best_epoch}" if outcome.best_epoch
        else "no epoch beat the base model on dev: the base model is kept"
    )  # fmt: skip
    left = images % p.batch_size
    return chosen + (
        f"; {left} of {images} train images per epoch wait for a later one (whole batches)" if left else ""
    )


def where(knobs: RuntimeParams, device: Any) -> str:
    """Where the training ran, for the summary line."""
    return "Ray Train workers" if knobs.engine == "ray" else str(device)


def model_path(model: str) -> str:
    """A model param as every process can load it: a local folder made absolute (Ray Train's workers run in
    folders of their own), a hub id as it is."""
    return str(Path(model).resolve()) if Path(model).exists() else model
