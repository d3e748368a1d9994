"""The training loop every fine-tuning shares: epochs over seeded orders, AdamW with warm-up and cosine decay,
bf16 autocast where the device has it, a dev evaluation after each epoch that picks the best one, and resumable
checkpoints.

What is trained and how its loss and dev score are computed is a :class:`Task`'s job
(:mod:`capsearch.finetune.contrastive` for dual encoders, :mod:`capsearch.finetune.captioning` for captioners).
Each epoch takes the train images in a seeded order, each with one of its captions drawn by the same seed, in
whole batches: the ``n mod batch_size`` images at the end of an epoch's order (a different seeded few each epoch)
wait for a later epoch, so the step number alone says where a run is, and a run resumed from a checkpoint continues
exactly as an uninterrupted one. The base model is evaluated on dev first (epoch 0) and is kept when no epoch beats
it; a non-finite loss or weight stops the run with one line naming the learning rate. Pixels come through the
inference stages' loader (:class:`capsearch.models.loader.ImageLoader`) and preprocessing, so training and inference
see the same pixels.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from capsearch.data.images import ImageSource
from capsearch.finetune.checkpoint import CheckpointStore
from capsearch.imports import code_fingerprint
from capsearch.models.loader import ImageLoader
from capsearch.models.pixels import PixelPipeline
from capsearch.models.runtime import precision_name
from capsearch.params import FinetuneParams
from capsearch.progress import progress
from capsearch.recipe import Recipe

Named = list[tuple[str, torch.nn.Parameter]]


@dataclass(frozen=True)
class Pairs:
    """Images and their captions: ``captions[i]`` describe ``image_ids[i]``, read from ``source``."""

    source: ImageSource
    image_ids: list[str]
    captions: list[list[str]]


def pairs_of(
    source: ImageSource, images: Sequence[tuple[str, ...]], references: Sequence[tuple[str, int, str]]
) -> Pairs:
    """The pairs of a subset (:class:`capsearch.data.subset.Subset`'s ``images`` and ``references``)."""
    by_image: dict[str, list[str]] = {}
    for image_id, _, text in references:
        by_image.setdefault(image_id, []).append(text)
    ids = [image_id for image_id, *_ in images]
    missing = [image_id for image_id in ids if image_id not in by_image]
    if missing:
        raise ValueError(f"image {missing[0]} has no caption to train on ({len(missing)} such images)")
    return Pairs(source, ids, [by_image[image_id] for image_id in ids])


class Task:
    """One kind of fine-tuning: the model, what of it trains, its loss on a batch and its dev evaluation."""

    wrapper: Any  # the model's PretrainedWrapper (model, processor, tokenizer), what :func:`save_task` saves
    model: torch.nn.Module
    device: torch.device
    pixels: PixelPipeline
    score: str  # the dev metric (a key of :meth:`evaluate`'s dict) that picks the best epoch; higher is better
    wrapped: torch.nn.Module | None = None  # DistributedDataParallel around ``model`` on a run of several workers
    world: int = 1  # how many workers train together (each on its slice of every batch)

    def forward(self, **inputs: Any) -> Any:
        """The model's forward, through DistributedDataParallel where there is one (gradients averaged)."""
        return (self.wrapped or self.model)(**inputs)

    def trainable(self) -> Named:
        """The parameters the optimiser updates (the rest set to ``requires_grad = False``)."""
        raise NotImplementedError

    def loss(self, pixels: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """The loss of one batch (uint8 pixels from the loader, one caption per image), under autocast."""
        raise NotImplementedError

    def evaluate(self, dev: Pairs) -> dict[str, Any]:
        """Dev metrics of the model as it is now (it is in eval mode during the call)."""
        raise NotImplementedError

    def after_step(self) -> None:
        """After each optimiser step (CLIP clamps its temperature)."""

    def finish(self) -> None:
        """After the best weights are back in the model (LoRA adapters are merged here)."""


@dataclass
class History:
    """What a run logged: (step, loss, learning rate) per step, and the dev metrics after each epoch (epoch 0: the
    base model)."""

    steps: list[list[float]] = field(default_factory=list)
    epochs: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Outcome:
    """A finished run: the best epoch's number and dev metrics, the history, and where it resumed from."""

    best_epoch: int
    best_dev: dict[str, Any]
    base_dev: dict[str, Any]
    history: History
    resumed_from_step: int
    steps: int
    seconds_per_epoch: float


class Logger:
    """What a caller hears during training (the stages log it with DVCLive); by default nothing."""

    def step(self, step: int, loss: float, learning_rate: float) -> None:
        """After each optimiser step (1-based)."""

    def epoch(self, epoch: int, step: int, dev: dict[str, Any]) -> None:
        """After each epoch's validation (epoch 0: the base model, before any step)."""


def schedule(warmup: int, total: int) -> Callable[[int], float]:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress_ = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress_)))

    return factor


def epoch_order(n: int, seed: int, epoch: int) -> tuple[list[int], list[int]]:
    """Epoch ``epoch``'s order of the ``n`` train images and, per image, which of its captions (an index to take
    modulo the image's caption count): a pure function of (seed, epoch)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=generator).tolist()
    picks = torch.randint(0, 1 << 30, (n,), generator=generator).tolist()
    return order, picks


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype for a fine-tuning ``precision`` on ``device`` (None: fp32)."""
    if precision == "fp32":
        return None
    if precision == "bf16" or (device.type == "cuda" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return None


def checkpoint_recipe(
    task: str, weights: str, code_module: str, p: FinetuneParams, device: torch.device, train_pairs: Pairs, dev: Pairs,
    **settings: Any,
) -> Recipe:  # fmt: skip
    """The recipe a fine-tuning run's resumable checkpoint is keyed by (:mod:`capsearch.recipe`): the base model's
    ``weights``, the task's code, the precision as resolved on ``device`` (the autocast dtype), the params, the
    train and dev pairs, and the task's own ``settings``."""
    dtype = autocast_dtype(device, p.precision)
    data = {"train": [train_pairs.image_ids, train_pairs.captions], "dev": [dev.image_ids, dev.captions]}
    return Recipe(
        task=task, weights=weights, code=code_fingerprint(code_module),
        precision=precision_name(dtype) if dtype is not None else "fp32", decode="cpu",
        settings={"params": p.as_yaml(), **data, **settings},
    )  # fmt: skip


def set_checkpointing(model: torch.nn.Module, on: bool) -> None:
    """Gradient (activation) checkpointing on or off where the model supports it (transformers 5 renamed it)."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        return
    verb = "enable" if on else "disable"
    new, old = f"activation_checkpointing_{verb}", f"gradient_checkpointing_{verb}"
    getattr(model, new if hasattr(model, new) else old)()


def optimiser(params: Named, p: FinetuneParams) -> torch.optim.AdamW:
    """AdamW with ``p.weight_decay`` on matrices only (not on biases, norms, temperatures)."""
    decay = [parameter for _, parameter in params if parameter.ndim >= 2]
    no_decay = [parameter for _, parameter in params if parameter.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": p.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=p.learning_rate,
    )


def evaluate(task: Task, dev: Pairs) -> dict[str, Any]:
    """``task.evaluate`` with the model in eval mode, put back as it was."""
    was_training = task.model.training
    task.model.eval()
    try:
        return task.evaluate(dev)
    finally:
        task.model.train(was_training)


def train(
    task: Task,
    train_pairs: Pairs,
    dev: Pairs,
    p: FinetuneParams,
    *,
    workers: int,
    checkpoints: CheckpointStore,
    checkpoint_steps: int,
    logger: Logger | None = None,
    desc: str = "fine-tune",
    rank: int = 0,
    world: int = 1,
) -> Outcome:
    """Train ``task.model`` in place for ``p.epochs`` epochs on ``train_pairs`` and leave in it the weights of the
    epoch with the best dev ``task.score``. Resumes from ``checkpoints`` where a run of the same key stopped; saves
    there every ``checkpoint_steps`` steps and after every epoch (the caller clears it once the model is saved: a
    failure before then still resumes). With ``world`` > 1 (inside a torch process group: see
    :mod:`capsearch.finetune.distributed`) this is worker ``rank``, training on its slice of each batch; only rank 0
    writes checkpoints."""
    logger = logger or Logger()
    check_run(p, len(train_pairs.image_ids))
    model, device = task.model, task.device
    torch.manual_seed(p.seed)
    params = task.trainable()
    share = p.batch_size // world  # this worker's images of each batch
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        task.wrapped = DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)
        task.world = world
    optimizer = optimiser(params, p)
    steps_per_epoch = len(train_pairs.image_ids) // p.batch_size
    total = steps_per_epoch * p.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule(p.warmup_steps, total))
    dtype = autocast_dtype(device, p.precision)
    if device.type == "cuda":
        set_checkpointing(model, True)

    history, best, step = History(), None, 0
    if checkpoints.exists():
        weights, state, best = checkpoints.load()
        _load(params, weights)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        history = History(state["history"]["steps"], state["history"]["epochs"])
        step = int(state["step"])
    resumed_from, best_saved = step, best is not None
    if not history.epochs:
        history.epochs.append({"epoch": 0, "step": 0, **evaluate(task, dev)})
    if best is None:  # the base model is the best so far: kept until an epoch beats it on dev
        best = {name: parameter.detach().clone() for name, parameter in params}
    for row in history.steps:
        logger.step(int(row[0]), row[1], row[2])
    for row in history.epochs:
        logger.epoch(row["epoch"], row["step"], row)

    def save(new_best: dict[str, torch.Tensor] | None) -> None:
        nonlocal best_saved
        if rank != 0:
            return
        if not best_saved:  # the first save holds the base weights (or a better epoch's): a resumed run keeps them
            new_best, best_saved = best, True
        state = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": torch.get_rng_state(),
            "history": {"steps": history.steps, "epochs": history.epochs},
            "step": step,
        }
        checkpoints.save(dict(params), state, new_best)

    model.train()
    started = time.perf_counter()
    bar = progress(total=total, initial=step, desc=desc, unit="step")
    while step < total:
        epoch, offset = divmod(step, steps_per_epoch)
        order, picks = epoch_order(len(train_pairs.image_ids), p.seed, epoch)
        starts = range(offset * p.batch_size, steps_per_epoch * p.batch_size, p.batch_size)
        chosen = [order[i] for start in starts for i in range(start + rank * share, start + (rank + 1) * share)]
        ids = [train_pairs.image_ids[i] for i in chosen]
        texts = [train_pairs.captions[i][picks[i] % len(train_pairs.captions[i])] for i in chosen]
        loader = ImageLoader(train_pairs.source, ids, task.pixels, batch_size=share, num_workers=workers, device=device)
        for batch in loader:
            loss = train_step(task, batch.pixels, [texts[i] for i in batch.positions], dtype, optimizer, p)
            if not math.isfinite(loss):
                raise ValueError(diverged(p, f"the training loss is {loss} at step {step + 1} (epoch {epoch + 1})"))
            scheduler.step()
            task.after_step()
            step += 1
            learning_rate = optimizer.param_groups[0]["lr"]
            history.steps.append([step, loss, learning_rate])
            logger.step(step, loss, learning_rate)
            bar.update(1)
            if step % steps_per_epoch == 0:
                broken = [name for name, parameter in params if not bool(torch.isfinite(parameter).all())]
                if broken:
                    raise ValueError(diverged(p, f"{len(broken)} of {len(params)} trained tensors hold NaN or inf "
                                                 f"after epoch {epoch + 1} ({broken[0]}, ...)"))  # fmt: skip
                dev_row = {"epoch": step // steps_per_epoch, "step": step, **evaluate(task, dev)}
                history.epochs.append(dev_row)
                logger.epoch(dev_row["epoch"], step, dev_row)
                earlier = (row[task.score] for row in history.epochs[:-1])  # the base model (epoch 0) included
                is_best = dev_row[task.score] > max(earlier, default=-math.inf)
                if is_best:
                    best = {name: parameter.detach().clone() for name, parameter in params}
                save(best if is_best else None)
            elif step % checkpoint_steps == 0:
                save(None)
    bar.close()
    best_row = max(history.epochs, key=lambda row: (row[task.score], -row["epoch"]))  # a tie keeps the earlier
    _load(params, best)
    task.wrapped = None
    task.finish()
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    if device.type == "cuda":
        set_checkpointing(model, False)
    model.eval()
    seconds = time.perf_counter() - started
    done_epochs = (total - resumed_from) / steps_per_epoch
    return Outcome(
        best_epoch=int(best_row["epoch"]),
        best_dev=best_row,
        base_dev=history.epochs[0],
        history=history,
        resumed_from_step=resumed_from,
        steps=total,
        seconds_per_epoch=seconds / done_epochs if done_epochs else 0.0,
    )


def check_run(p: FinetuneParams, images: int) -> None:
    """Refuse, in one line naming the param, a run that cannot train as asked on ``images`` train images: none at
    all, a batch larger than them, or a warm-up that does not end before the run does (the learning rate would
    never reach ``learning_rate``)."""
    if images == 0:
        raise ValueError(f"{p.name('train_images')}: the train split has no captioned images to fine-tune on")
    if p.batch_size > images:
        raise ValueError(
            f"{p.name('batch_size')}: {p.batch_size} is more than the {images} train images; lower it"
            + (f" or raise {p.name('train_images')} (or set it to all)" if p.train_images == images else "")
        )
    total = images // p.batch_size * p.epochs
    if p.warmup_steps >= total:
        raise ValueError(
            f"{p.name('warmup_steps')}: {p.warmup_steps} warm-up steps, but the run has {total} steps in all "
            f"({p.epochs} epoch{'s' * (p.epochs != 1)} of {images // p.batch_size}: {images} train images in batches "
            f"of {p.batch_size}), "
            f"so the learning rate would never reach {p.learning_rate:g}; set warmup_steps below {total} "
            "(about a tenth of the run is usual)"
        )


def diverged(p: FinetuneParams, what: str) -> str:
    """The one line of a run that diverged: what went non-finite, and the param to change."""
    return f"{p.name('learning_rate')}: the run diverged, {what}; lower learning_rate (now {p.learning_rate:g})"


def train_step(
    task: Task,
    pixels: torch.Tensor,
    texts: list[str],
    dtype: torch.dtype | None,
    optimizer: torch.optim.Optimizer,
    p: FinetuneParams,
) -> float:
    """One optimiser step on one batch; the loss as a float. Out of GPU memory: one error naming the batch size."""
    try:
        with torch.autocast(pixels.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = task.loss(pixels, texts)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    except torch.OutOfMemoryError as exc:
        free, total = torch.cuda.mem_get_info() if pixels.is_cuda else (0, 0)
        raise ValueError(
            f"{p.name('batch_size')}: {p.batch_size} pairs do not fit in memory for training ({free / 2**30:.1f} "
            f"of {total / 2**30:.1f} GiB free on the GPU); lower it (training does not back off as inference does)"
        ) from exc
    return float(loss.detach())


def _load(params: Named, tensors: dict[str, torch.Tensor]) -> None:
    """Copy saved tensors into the trainable parameters (same names)."""
    with torch.no_grad():
        for name, parameter in params:
            parameter.copy_(tensors[name].to(parameter.device, parameter.dtype))


def lora_modules(model: torch.nn.Module, targets: Sequence[str]) -> dict[str, int]:
    """The modules LoRA adapts in ``model``, by name, with their width (the narrower side): every linear layer or
    ``nn.MultiheadAttention`` (open_clip's towers) whose name is one of ``targets`` or ends with ``.`` + one of
    them (``query``, ``attn.qkv``)."""
    found = {}
    for name, module in model.named_modules():
        if not any(name == target or name.endswith("." + target) for target in targets):
            continue
        if isinstance(module, torch.nn.MultiheadAttention):
            found[name] = module.embed_dim
        elif isinstance(module, torch.nn.Linear):
            found[name] = min(module.in_features, module.out_features)
    return found


def add_lora(model: torch.nn.Module, rank: int, targets: Sequence[str], param: str) -> torch.nn.Module:
    """LoRA adapters of ``rank`` on the modules :func:`lora_modules` finds for ``targets`` (``peft``); everything
    else fixed. Returns the peft model; the adapters act on ``model`` in place. ``param``: the lora_rank param, for
    errors."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:
        raise ValueError(f"{param}: LoRA needs the peft package (pip install peft)") from exc
    chosen = lora_modules(model, targets)
    if not chosen:
        raise ValueError(
            f"{param}: {type(model).__name__} has none of the attention projections LoRA adapts "
            f"({', '.join(targets)}); set lora_rank: 0"
        )
    narrowest = min(chosen.values())
    if rank > narrowest:
        raise ValueError(
            f"{param}: rank {rank} is more than the {narrowest} features of {type(model).__name__}'s narrowest "
            f"adapted projection, so the adapters could not be of that rank; set lora_rank to at most {narrowest}"
        )
    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=sorted(chosen), bias="none")
    return get_peft_model(model, config)


def save_task(task: Task, folder: str | Path) -> None:
    """Save a task's wrapper in ``folder`` (its ``save``: the family's own layout); its model holds the best epoch's
    weights once training ended."""
    task.wrapper.save(folder)
