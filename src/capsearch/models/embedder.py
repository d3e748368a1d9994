"""Dual-encoder image and text embeddings (CLIP, SigLIP, ...), L2-normalised, in the order given.

The model class comes from the checkpoint's config through ``AutoModel``; its text settings (padding, mask,
case) from :mod:`capsearch.models.families`. Similarity is cosine for every family: SigLIP's sigmoid logits are
a monotone function of it, so rankings are the same.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from transformers import AutoModel

from capsearch.cache import ResultCache
from capsearch.data.images import ImageSource
from capsearch.models.base import PretrainedWrapper
from capsearch.models.batching import OomBackoff, RunStats, run_over_images
from capsearch.models.families import TextSettings, embedder_family
from capsearch.params import DEFAULT_CLIP, DEFAULT_CLIP_REVISION, DEFAULT_DECODE
from capsearch.progress import progress


@dataclass
class TextEmbeddings:
    """Embeddings of texts, row i for text i, and how many texts were cut to the context length."""

    vectors: np.ndarray
    truncated: int


def normalised(features: torch.Tensor) -> np.ndarray:
    features = features.float()
    return (features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)).cpu().numpy()


class DualEncoder(PretrainedWrapper):
    """A dual encoder (CLIP, SigLIP, ...) and its processor, loaded safely, embedding images and texts into one
    space."""

    model_class = AutoModel
    family_of = staticmethod(embedder_family)
    task_kind = "embed_images"  # the image task it runs (capsearch.job)
    output_kind = "image_embeddings"
    model_param = "clip.model"
    # contrastive fine-tuning (capsearch.finetune.contrastive): each tower's parameter names (freeze: vision | text)
    # and the modules LoRA adapts (the attention projections of CLIP's and SigLIP's towers)
    towers: ClassVar[dict[str, tuple[str, ...]]] = {
        "vision": ("vision_model.", "visual_projection."),
        "text": ("text_model.", "text_projection."),
    }
    lora_targets: ClassVar[tuple[str, ...]] = ("q_proj", "k_proj", "v_proj", "out_proj")

    def __init__(
        self,
        model_id: str = DEFAULT_CLIP,
        revision: str | None = DEFAULT_CLIP_REVISION,
        precision: str = "auto",
        device: str = "auto",
        param: str = "clip.model",
    ) -> None:
        super().__init__(model_id, revision, precision, device, param)
        self.context_length = int(self.model.config.text_config.max_position_embeddings)
        self.text_settings: TextSettings = self.family.text or TextSettings()
        self.last_text_run = RunStats()  # of the last embed_texts
        self._dim: int | None = None

    @property
    def dim(self) -> int:
        """The embedding width (from one forward pass on a blank image: families name it differently)."""
        if self._dim is None:
            width, height = self.pixels.output_size()
            self._dim = int(self.embed_pixels(torch.zeros((1, 3, height, width), dtype=torch.uint8)).shape[1])
        return self._dim

    @torch.inference_mode()
    def embed_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        """Normalised embeddings of a uint8 batch from ``preprocess``."""
        return normalised(self.model.get_image_features(pixel_values=self.normalised_pixels(pixels)).pooler_output)

    def embed_images(
        self,
        source: ImageSource,
        image_ids: Sequence[str],
        batch_size: int = 64,
        num_workers: int = 0,
        cache: ResultCache | None = None,
        decode: str = DEFAULT_DECODE,
        skip_unreadable: bool = False,
    ) -> np.ndarray:
        """Embeddings (len(image_ids), dim) of images read from ``source``, decoded in worker processes (``decode``:
        see :mod:`capsearch.models.gpu_decode`).

        Images whose embedding is in ``cache`` are not recomputed; ``last_run`` says how many were. With
        ``skip_unreadable`` an image that cannot be decoded is left out (``last_run.skipped`` names it) instead of
        failing the run.
        """
        path = self.decode_path(decode)
        rows, self.last_run = run_over_images(
            source,
            image_ids,
            self.pixels,
            lambda batch: list(self.embed_pixels(batch)),
            lambda row: np.asarray(row, dtype=np.float32).tobytes(),
            lambda blob: np.frombuffer(blob, dtype=np.float32),
            batch_size=batch_size,
            num_workers=num_workers,
            device=self.device,
            cache=cache,
            cache_space=self.recipe(path).key() if cache is not None else "",
            desc="embed images",
            decode_path=path,
            skip_unreadable=skip_unreadable,
        )
        if not rows:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack(rows).astype(np.float32)

    def run_pixels(self, pixels: torch.Tensor, settings: None = None) -> list[np.ndarray]:
        return list(self.embed_pixels(pixels))

    def run_images(
        self, source: ImageSource, image_ids: Sequence[str], settings: None, batch_size: int, num_workers: int,
        cache: ResultCache | None, decode: str, skip_unreadable: bool = False,
    ) -> list[np.ndarray]:  # fmt: skip
        return list(self.embed_images(source, image_ids, batch_size, num_workers, cache, decode, skip_unreadable))

    @classmethod
    def part_values(cls, values: list[np.ndarray]) -> np.ndarray:
        return np.stack(values).astype(np.float32) if values else np.zeros((0, 0), dtype=np.float32)

    def result_column(self, count: int) -> np.ndarray:
        return np.zeros((count, self.dim), dtype=np.float32)

    def train_embeddings(
        self, forward: Callable[..., Any], pixels: torch.Tensor, tokens: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The normalised image and text embeddings of a training batch (normalised pixels, :meth:`tokenize`'s
        tokens) through ``forward``: the model, or DistributedDataParallel around it."""
        output = forward(pixel_values=pixels, **tokens)
        return output.image_embeds, output.text_embeds

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """How many tokens each text has before truncation (special tokens included)."""
        return [len(ids) for ids in self.tokenizer(list(texts))["input_ids"]]

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """The text tower's inputs for ``texts``, as the family was trained: padding, attention mask, case."""
        settings = self.text_settings
        batch = [text.lower() for text in texts] if settings.lowercase else list(texts)
        tokens = self.tokenizer(
            batch, padding=settings.padding, truncation=True, max_length=self.context_length, return_tensors="pt"
        )
        names = ("input_ids", "attention_mask") if settings.attention_mask else ("input_ids",)
        return {name: tokens[name] for name in names}

    @torch.inference_mode()
    def _embed_tokens(self, stacked: torch.Tensor) -> list[np.ndarray]:
        """Embeddings of the text inputs stacked along dim 1, shape (N, inputs, L), in :meth:`tokenize`'s order."""
        names = ("input_ids", "attention_mask")[: stacked.shape[1]]
        features = self.model.get_text_features(**dict(zip(names, stacked.unbind(1), strict=True)))
        return list(normalised(features.pooler_output))

    def embed_texts(self, texts: Sequence[str], batch_size: int = 256) -> TextEmbeddings:
        """Embeddings of ``texts``; texts longer than the context (77 tokens for CLIP, 64 for SigLIP) are cut."""
        rows: list[np.ndarray] = []
        truncated = 0
        backoff = OomBackoff(batch_size, self.device)
        for start in progress(range(0, len(texts), batch_size), desc="embed texts", unit="batch"):
            batch = list(texts[start : start + batch_size])
            truncated += sum(length > self.context_length for length in self.token_counts(batch))
            stacked = torch.stack(list(self.tokenize(batch).values()), dim=1).to(self.device)
            rows += backoff(self._embed_tokens, stacked)
        self.last_text_run = RunStats(len(texts), len(texts), 0, backoff.limit, backoff.backoffs)
        if not rows:
            return TextEmbeddings(np.zeros((0, self.dim), dtype=np.float32), 0)
        return TextEmbeddings(np.stack(rows).astype(np.float32), truncated)
