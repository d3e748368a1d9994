"""CLIP image and text embeddings, L2-normalised, in the order given."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import CLIPModel, CLIPProcessor

from capsearch.cache import ResultCache
from capsearch.data.images import ImageSource
from capsearch.models.base import PretrainedWrapper
from capsearch.models.batching import OomBackoff, RunStats, run_over_images
from capsearch.params import DEFAULT_CLIP, DEFAULT_CLIP_REVISION
from capsearch.progress import progress


@dataclass
class TextEmbeddings:
    """Embeddings of texts, row i for text i, and how many texts were cut to the context length."""

    vectors: np.ndarray
    truncated: int


def _normalise(features: torch.Tensor) -> np.ndarray:
    features = features.float()
    return (features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)).cpu().numpy()


class ClipEmbedder(PretrainedWrapper):
    """A CLIP model and its processor, loaded safely, embedding images and texts into one space."""

    processor_class = CLIPProcessor
    task_kind = "embed_images"  # the image task it runs (capsearch.engine)
    model_class = CLIPModel

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
        self.last_text_run = RunStats()  # of the last embed_texts

    @torch.inference_mode()
    def embed_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        """Normalised embeddings of a uint8 batch from ``preprocess``."""
        return _normalise(self.model.get_image_features(pixel_values=self.normalised_pixels(pixels)).pooler_output)

    def embed_images(
        self,
        source: ImageSource,
        image_ids: Sequence[str],
        batch_size: int = 64,
        num_workers: int = 0,
        cache: ResultCache | None = None,
    ) -> np.ndarray:
        """Embeddings (len(image_ids), dim) of images read from ``source``, decoded in worker processes.

        Images whose embedding is in ``cache`` are not recomputed; ``last_run`` says how many were.
        """
        dim = int(self.model.config.projection_dim)
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
            cache_space=self.cache_space("clip-image") if cache is not None else "",
            desc="embed images",
        )
        if not rows:
            return np.zeros((0, dim), dtype=np.float32)
        return np.stack(rows).astype(np.float32)

    @torch.inference_mode()
    def _embed_tokens(self, ids_and_mask: torch.Tensor) -> list[np.ndarray]:
        """Embeddings of token ids stacked with their attention mask, shape (N, 2, L)."""
        features = self.model.get_text_features(input_ids=ids_and_mask[:, 0], attention_mask=ids_and_mask[:, 1])
        return list(_normalise(features.pooler_output))

    def embed_texts(self, texts: Sequence[str], batch_size: int = 256) -> TextEmbeddings:
        """Embeddings of ``texts``; texts longer than the context (77 tokens for CLIP) are truncated."""
        tokenizer = self.processor.tokenizer
        rows: list[np.ndarray] = []
        truncated = 0
        backoff = OomBackoff(batch_size, self.device)
        for start in progress(range(0, len(texts), batch_size), desc="embed texts", unit="batch"):
            batch = list(texts[start : start + batch_size])
            lengths = [len(ids) for ids in tokenizer(batch)["input_ids"]]
            truncated += sum(length > self.context_length for length in lengths)
            tokens = tokenizer(
                batch, padding=True, truncation=True, max_length=self.context_length, return_tensors="pt"
            )
            ids_and_mask = torch.stack([tokens["input_ids"], tokens["attention_mask"]], dim=1).to(self.device)
            rows += backoff(self._embed_tokens, ids_and_mask)
        self.last_text_run = RunStats(len(texts), len(texts), 0, backoff.limit, backoff.backoffs)
        if not rows:
            return TextEmbeddings(np.zeros((0, self.model.config.projection_dim), dtype=np.float32), 0)
        return TextEmbeddings(np.stack(rows).astype(np.float32), truncated)
