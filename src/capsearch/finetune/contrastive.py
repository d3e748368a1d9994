"""Contrastive fine-tuning of a dual encoder on image–caption pairs, validated by Recall@K on a dev set each epoch.

The loss is the family's own, computed from the normalised embeddings its forward returns as its
``forward(return_loss=True)`` (transformers) or open_clip's ``ClipLoss`` / ``SigLipLoss`` computes it: CLIP's
symmetric InfoNCE with its learnable temperature (clamped at 100, as CLIP was trained), SigLIP's sigmoid loss with
its learnable bias. What is family-specific (its forward, its towers' parameter names for ``freeze``, the modules
LoRA adapts, how the model is saved) is the wrapper's (:class:`capsearch.models.embedder.DualEncoder`,
:class:`capsearch.models.openclip.OpenClipEncoder`). The loop (epochs, schedule, checkpoints, best epoch) is
:mod:`capsearch.finetune.loop`'s.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from capsearch.evaluation.ranks import image_to_text_ranks, text_to_image_ranks
from capsearch.evaluation.recall import summarise_ranks
from capsearch.finetune.checkpoint import CheckpointStore
from capsearch.finetune.loop import Logger, Named, Outcome, Pairs, Task, add_lora, train
from capsearch.models.embedder import DualEncoder
from capsearch.models.registry import load_dual_encoder
from capsearch.params import FinetuneClipParams

MAX_LOGIT_SCALE = math.log(100.0)  # CLIP's clamp of its learnable temperature


def dev_metrics(encoder: DualEncoder, dev: Pairs, ks: Sequence[int], batch_sizes: dict[str, int], workers: int) -> dict:
    """Text→image and image→text Recall@K of ``encoder`` on ``dev`` (the evaluate stage's definitions), and their
    mean over both directions and every K (``mean_recall``, what picks the best epoch)."""
    images = encoder.embed_images(dev.source, dev.image_ids, batch_sizes["embed_images"], workers)
    texts = [text for captions in dev.captions for text in captions]
    owner = np.asarray([row for row, captions in enumerate(dev.captions) for _ in captions])
    vectors = encoder.embed_texts(texts, batch_sizes["embed_texts"]).vectors
    t2i = summarise_ranks(text_to_image_ranks(vectors, images, owner), ks)
    i2t = summarise_ranks(image_to_text_ranks(images, vectors, owner), ks)
    mean = float(np.mean([summary[f"R@{k}"] for summary in (t2i, i2t) for k in ks]))
    return {"text_to_image": t2i, "image_to_text": i2t, "mean_recall": round(mean, 4)}


def trainable(encoder: DualEncoder, freeze: str) -> list[tuple[str, torch.nn.Parameter]]:
    """The parameters to train with ``freeze`` (none | vision | text: that tower, its projection included, stays
    fixed; the temperature and bias always train); the rest get ``requires_grad = False``."""
    model = encoder.model
    fixed = encoder.towers[freeze] if freeze != "none" else ()
    chosen = []
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(not name.startswith(fixed) if fixed else parameter.requires_grad)
        if parameter.requires_grad:
            chosen.append((name, parameter))
    return chosen


class ContrastiveTask(Task):
    """A dual encoder trained with its family's contrastive loss; the best epoch has the highest dev mean recall."""

    score = "mean_recall"

    def __init__(self, encoder: DualEncoder, p: FinetuneClipParams, ks: Sequence[int], batch_sizes: dict[str, int],
                 workers: int) -> None:  # fmt: skip
        self.encoder, self.p, self.ks, self.batch_sizes, self.workers = encoder, p, ks, batch_sizes, workers
        self.wrapper, self.model, self.device, self.pixels = encoder, encoder.model, encoder.device, encoder.pixels
        self.peft_model: Any = None
        # CLIP clamps its temperature; SigLIP (which has a bias too) does not
        self.clamps = hasattr(self.model, "logit_scale") and _bias(self.model) is None

    def trainable(self) -> Named:
        if not self.p.lora_rank:
            return trainable(self.encoder, self.p.freeze)
        self.peft_model = add_lora(self.model, self.p.lora_rank, self.encoder.lora_targets, self.p.name("lora_rank"))
        return [(name, parameter) for name, parameter in self.model.named_parameters() if parameter.requires_grad]

    def loss(self, pixels: torch.Tensor, texts: list[str]) -> torch.Tensor:
        tokens = {name: value.to(self.device) for name, value in self.encoder.tokenize(texts).items()}
        normalised = self.encoder.pixels.normalise(pixels, torch.float32)
        images, texts_ = self.encoder.train_embeddings(self.forward, normalised, tokens)
        return contrastive_loss(self.model, images, texts_, gather=self.world > 1)

    def evaluate(self, dev: Pairs) -> dict[str, Any]:
        return dev_metrics(self.encoder, dev, self.ks, self.batch_sizes, self.workers)

    def after_step(self) -> None:
        if self.clamps:
            with torch.no_grad():
                self.model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)

    def finish(self) -> None:
        if self.peft_model is not None:
            self.peft_model.merge_and_unload()


def contrastive_task(
    model: str, revision: str | None, p: FinetuneClipParams, ks: Sequence[int], batch_sizes: dict[str, int],
    workers: int, device: Any,
) -> ContrastiveTask:  # fmt: skip
    """The task of fine-tuning dual encoder ``model`` (any family of :mod:`capsearch.models.registry`) on
    ``device`` (what each Ray Train worker builds)."""
    encoder = load_dual_encoder(model, revision, "fp32", str(device))
    return ContrastiveTask(encoder, p, ks, batch_sizes, workers)


def _bias(model: torch.nn.Module) -> torch.Tensor | None:
    """SigLIP's learnable logit bias (transformers' SigLIP, open_clip's SigLIP models), else None."""
    return getattr(model, "logit_bias", None)


def contrastive_loss(model: torch.nn.Module, images: torch.Tensor, texts: torch.Tensor, gather: bool) -> torch.Tensor:
    """The family's loss over a batch of normalised embeddings: CLIP's symmetric cross-entropy, SigLIP's sigmoid
    loss with its bias, as ``forward(return_loss=True)`` computes it (tested equal). With ``gather``, over the whole
    batch of every worker (the embeddings gathered with their gradients, as open_clip does): each worker computes
    the same value, and DistributedDataParallel's averaging of the gradients then gives exactly the one-worker
    gradient."""
    if gather:
        from torch.distributed.nn.functional import all_gather

        images, texts = torch.cat(all_gather(images)), torch.cat(all_gather(texts))
    logits = texts @ images.t() * model.logit_scale.exp()
    bias = _bias(model)
    if bias is not None:  # SigLIP
        logits = logits + bias
        signs = 2 * torch.eye(len(logits), device=logits.device) - 1
        return -torch.nn.functional.logsigmoid(signs * logits).sum(dim=-1).mean()
    targets = torch.arange(len(logits), device=logits.device)
    cross_entropy = torch.nn.functional.cross_entropy
    return (cross_entropy(logits, targets) + cross_entropy(logits.t(), targets)) / 2


def finetune_dual_encoder(
    encoder: DualEncoder,
    train_pairs: Pairs,
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
    """Train ``encoder.model`` in place for ``p.epochs`` epochs on ``train_pairs`` and leave in it the weights of
    the epoch with the best dev ``mean_recall`` (LoRA adapters merged); see :func:`capsearch.finetune.loop.train`."""
    task = ContrastiveTask(encoder, p, ks, batch_sizes, workers)
    return train(task, train_pairs, dev, p, workers=workers, checkpoints=checkpoints,
                 checkpoint_steps=checkpoint_steps, logger=logger, desc="fine-tune clip")  # fmt: skip
