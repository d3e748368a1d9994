"""Contrastive fine-tuning of a dual encoder on image–caption pairs, validated on a dev set each epoch.

The loss is the family's own, as its ``forward(return_loss=True)`` computes it: CLIP's symmetric InfoNCE with its
learnable temperature (clamped at 100, as CLIP was trained), SigLIP's sigmoid loss with its learnable bias. Each
epoch visits every train image once, in a seeded order, each with one of its captions drawn by the same seed; so
the step number alone says where a run is, and a run resumed from a checkpoint continues exactly as an
uninterrupted one. Pixels come through the inference stages' loader (:class:`capsearch.models.loader.ImageLoader`)
and preprocessing, so training and inference see the same pixels.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from capsearch.data.images import ImageSource
from capsearch.evaluation.ranks import image_to_text_ranks, text_to_image_ranks
from capsearch.evaluation.recall import summarise_ranks
from capsearch.finetune.checkpoint import CheckpointStore
from capsearch.models.embedder import DualEncoder
from capsearch.models.loader import ImageLoader
from capsearch.params import FinetuneClipParams
from capsearch.progress import progress

MAX_LOGIT_SCALE = math.log(100.0)  # CLIP's clamp of its learnable temperature
VISION = ("vision_model.", "visual_projection.")
TEXT = ("text_model.", "text_projection.")
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]  # the attention projections of CLIP's and SigLIP's towers


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
    """What a caller hears during training (the stage logs it with DVCLive); by default nothing."""

    def step(self, step: int, loss: float, learning_rate: float) -> None:
        """After each optimiser step (1-based)."""

    def epoch(self, epoch: int, step: int, dev: dict[str, Any]) -> None:
        """After each epoch's validation (epoch 0: the base model, before any step)."""


def dev_metrics(encoder: DualEncoder, dev: Pairs, ks: Sequence[int], batch_sizes: dict[str, int], workers: int) -> dict:
    """Text→image and image→text Recall@K of ``encoder`` on ``dev`` (the evaluate stage's definitions), and their
    mean over both directions and every K (``mean_recall``, what picks the best epoch)."""
    was_training = encoder.model.training
    encoder.model.eval()
    images = encoder.embed_images(dev.source, dev.image_ids, batch_sizes["embed_images"], workers)
    texts = [text for captions in dev.captions for text in captions]
    owner = np.asarray([row for row, captions in enumerate(dev.captions) for _ in captions])
    vectors = encoder.embed_texts(texts, batch_sizes["embed_texts"]).vectors
    encoder.model.train(was_training)
    t2i = summarise_ranks(text_to_image_ranks(vectors, images, owner), ks)
    i2t = summarise_ranks(image_to_text_ranks(images, vectors, owner), ks)
    mean = float(np.mean([summary[f"R@{k}"] for summary in (t2i, i2t) for k in ks]))
    return {"text_to_image": t2i, "image_to_text": i2t, "mean_recall": round(mean, 4)}


def trainable(model: torch.nn.Module, freeze: str) -> list[tuple[str, torch.nn.Parameter]]:
    """The parameters to train with ``freeze`` (none | vision | text: that tower, its projection included, stays
    fixed; the temperature and bias always train); the rest get ``requires_grad = False``."""
    fixed = {"none": (), "vision": VISION, "text": TEXT}[freeze]
    chosen = []
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(not name.startswith(fixed) if fixed else parameter.requires_grad)
        if parameter.requires_grad:
            chosen.append((name, parameter))
    return chosen


def add_lora(model: torch.nn.Module, rank: int) -> torch.nn.Module:
    """LoRA adapters of ``rank`` on every attention projection of both towers (``peft``); everything else fixed.
    Returns the peft model; the adapters act on ``model`` in place."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:
        raise ValueError("finetune.clip.lora_rank: LoRA needs the peft package (pip install peft)") from exc
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    if not set(LORA_TARGETS) & present:
        raise ValueError(
            f"finetune.clip.lora_rank: {type(model).__name__} has none of the attention projections LoRA adapts "
            f"({', '.join(LORA_TARGETS)}); set lora_rank: 0"
        )
    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=LORA_TARGETS, bias="none")
    return get_peft_model(model, config)


def _schedule(warmup: int, total: int) -> Callable[[int], float]:
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


def _autocast(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype for ``finetune.clip.precision`` on ``device`` (None: fp32)."""
    if precision == "fp32":
        return None
    if precision == "bf16" or (device.type == "cuda" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return None


def finetune_dual_encoder(
    encoder: DualEncoder,
    train: Pairs,
    dev: Pairs,
    p: FinetuneClipParams,
    *,
    ks: Sequence[int],
    batch_sizes: dict[str, int],
    workers: int,
    checkpoints: CheckpointStore,
    checkpoint_steps: int,
    logger: Logger | None = None,
) -> Outcome:
    """Train ``encoder.model`` in place for ``p.epochs`` epochs on ``train`` and leave in it the weights of the epoch
    with the best dev ``mean_recall`` (LoRA adapters merged). Resumes from ``checkpoints`` where a run of the same
    key stopped; saves there every ``checkpoint_steps`` steps and after every epoch (the caller clears it once the
    model is saved: a failure before then still resumes)."""
    logger = logger or Logger()
    if p.batch_size > len(train.image_ids):
        raise ValueError(
            f"finetune.clip.batch_size: {p.batch_size} is more than the {len(train.image_ids)} train images; "
            "lower it or raise finetune.clip.train_images"
        )
    model = encoder.model
    device = encoder.device
    torch.manual_seed(p.seed)
    peft_model = add_lora(model, p.lora_rank) if p.lora_rank else None
    if peft_model is None:
        params = trainable(model, p.freeze)
    else:  # peft left only the adapters trainable
        params = [(name, parameter) for name, parameter in model.named_parameters() if parameter.requires_grad]
    decay = [parameter for name, parameter in params if parameter.ndim >= 2]
    no_decay = [parameter for name, parameter in params if parameter.ndim < 2]  # biases, norms, temperature
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": p.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=p.learning_rate,
    )
    steps_per_epoch = len(train.image_ids) // p.batch_size
    total = steps_per_epoch * p.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(p.warmup_steps, total))
    dtype = _autocast(device, p.precision)
    if device.type == "cuda":
        set_checkpointing(model, True)
    has_scale = hasattr(model, "logit_scale") and not hasattr(model, "logit_bias")  # CLIP's clamp, not SigLIP's

    history, best, step = History(), None, 0
    if checkpoints.exists():
        weights, state, best = checkpoints.load()
        _load(params, weights)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        history = History(state["history"]["steps"], state["history"]["epochs"])
        step = int(state["step"])
    resumed_from = step
    if not history.epochs:
        history.epochs.append({"epoch": 0, "step": 0, **dev_metrics(encoder, dev, ks, batch_sizes, workers)})
    for row in history.steps:
        logger.step(int(row[0]), row[1], row[2])
    for row in history.epochs:
        logger.epoch(row["epoch"], row["step"], row)

    def save(new_best: dict[str, torch.Tensor] | None) -> None:
        state = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": torch.get_rng_state(),
            "history": {"steps": history.steps, "epochs": history.epochs},
            "step": step,
        }
        checkpoints.save({name: parameter for name, parameter in params}, state, new_best)

    model.train()
    started = time.perf_counter()
    bar = progress(total=total, initial=step, desc="fine-tune clip", unit="step")
    while step < total:
        epoch, offset = divmod(step, steps_per_epoch)
        order, picks = epoch_order(len(train.image_ids), p.seed, epoch)
        chosen = order[offset * p.batch_size : steps_per_epoch * p.batch_size]
        ids = [train.image_ids[i] for i in chosen]
        texts = [train.captions[i][picks[i] % len(train.captions[i])] for i in chosen]
        loader = ImageLoader(
            train.source, ids, encoder.pixels, batch_size=p.batch_size, num_workers=workers, device=device
        )
        for batch in loader:
            batch_texts = [texts[i] for i in batch.positions]
            tokens = {name: value.to(device) for name, value in encoder.tokenize(batch_texts).items()}
            pixels = encoder.pixels.normalise(batch.pixels, torch.float32)
            loss = train_step(model, pixels, tokens, dtype, optimizer, p.batch_size)
            scheduler.step()
            if has_scale:
                with torch.no_grad():
                    model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
            step += 1
            learning_rate = optimizer.param_groups[0]["lr"]
            history.steps.append([step, loss, learning_rate])
            logger.step(step, loss, learning_rate)
            bar.update(1)
            if step % steps_per_epoch == 0:
                dev_row = {"epoch": step // steps_per_epoch, "step": step}
                dev_row.update(dev_metrics(encoder, dev, ks, batch_sizes, workers))
                history.epochs.append(dev_row)
                logger.epoch(dev_row["epoch"], step, dev_row)
                is_best = dev_row["mean_recall"] > max(
                    (row["mean_recall"] for row in history.epochs[1:-1]), default=-1.0
                )
                if is_best:
                    best = {name: parameter.detach().clone() for name, parameter in params}
                save(best if is_best else None)
            elif step % checkpoint_steps == 0:
                save(None)
    bar.close()
    trained_epochs = history.epochs[1:]
    best_row = max(trained_epochs, key=lambda row: (row["mean_recall"], -row["epoch"]))
    if best is not None:
        _load(params, best)
    if peft_model is not None:
        peft_model.merge_and_unload()
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


def set_checkpointing(model: torch.nn.Module, on: bool) -> None:
    """Gradient (activation) checkpointing on or off where the model supports it (transformers 5 renamed it)."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        return
    verb = "enable" if on else "disable"
    new, old = f"activation_checkpointing_{verb}", f"gradient_checkpointing_{verb}"
    getattr(model, new if hasattr(model, new) else old)()


def train_step(
    model: torch.nn.Module,
    pixels: torch.Tensor,
    tokens: dict[str, torch.Tensor],
    dtype: torch.dtype | None,
    optimizer: torch.optim.Optimizer,
    batch_size: int,
) -> float:
    """One optimiser step on one batch; the loss as a float. Out of GPU memory: one error naming the batch size."""
    try:
        with torch.autocast(pixels.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = model(pixel_values=pixels, return_loss=True, **tokens).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    except torch.OutOfMemoryError as exc:
        free, total = torch.cuda.mem_get_info() if pixels.is_cuda else (0, 0)
        raise ValueError(
            f"finetune.clip.batch_size: {batch_size} pairs do not fit in memory for training ({free / 2**30:.1f} of "
            f"{total / 2**30:.1f} GiB free on the GPU); lower it (training does not back off as inference does)"
        ) from exc
    return float(loss.detach())


def _load(params: list[tuple[str, torch.nn.Parameter]], tensors: dict[str, torch.Tensor]) -> None:
    """Copy saved tensors into the trainable parameters (same names)."""
    with torch.no_grad():
        for name, parameter in params:
            parameter.copy_(tensors[name].to(parameter.device, parameter.dtype))


def save_model(encoder: DualEncoder, folder: str | Path) -> None:
    """The encoder's model, processor and tokenizer with ``save_pretrained`` (safetensors) in ``folder``: a folder
    ``clip.model`` (and every ``capsearch`` command) can load."""
    folder = Path(folder)
    encoder.model.save_pretrained(folder)
    if encoder.processor is not None:
        encoder.processor.save_pretrained(folder)
    else:
        encoder.tokenizer.save_pretrained(folder)
        encoder.image_processor.save_pretrained(folder)
