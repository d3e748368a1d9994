"""CLIP image and text embeddings, L2-normalised, in the order given."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from transformers import CLIPModel, CLIPProcessor

from capsearch.cache import ResultCache, model_fingerprint, namespace
from capsearch.data.images import ImageSource
from capsearch.imports import code_fingerprint
from capsearch.models.batching import OomBackoff, RunStats, run_over_images
from capsearch.models.pixels import PixelPipeline
from capsearch.models.runtime import (
    load_pretrained,
    precision_name,
    resolve_device,
    resolve_model,
    resolve_precision,
)
from capsearch.progress import progress

DEFAULT_CLIP = "openai/clip-vit-base-patch32"


@dataclass
class TextEmbeddings:
    """Embeddings of texts, row i for text i, and how many texts were cut to the context length."""

    vectors: np.ndarray
    truncated: int


def _normalise(features: torch.Tensor) -> np.ndarray:
    features = features.float()
    return (features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)).cpu().numpy()


class ClipEmbedder:
    """A CLIP model and its processor, loaded safely, embedding images and texts into one space."""

    def __init__(
        self,
        model_id: str = DEFAULT_CLIP,
        revision: str | None = None,
        precision: str = "auto",
        device: str = "auto",
        param: str = "clip.model",
    ) -> None:
        self.model_id = model_id
        self.revision = revision
        self.precision = precision
        self.device = resolve_device(device)
        self.dtype = resolve_precision(precision, self.device, param.rsplit(".", 1)[0] + ".precision")
        self.source = resolve_model(model_id, revision, param)  # a hub id: the one commit every file comes from
        self.processor = load_pretrained(CLIPProcessor, model_id, self.source.load_revision, param, weights=False)
        model = load_pretrained(CLIPModel, model_id, self.source.load_revision, param, dtype=self.dtype)
        self.model = model.to(self.device).eval()
        self.context_length = int(self.model.config.text_config.max_position_embeddings)
        self.pixels = PixelPipeline.from_image_processor(self.processor.image_processor)
        self.last_run = RunStats()  # of the last embed_images
        self.last_text_run = RunStats()  # of the last embed_texts
        self._fingerprint: str | None = None

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """uint8 pixels (3, H, W) of one RGB image, resized and cropped as the model's processor does."""
        return self.pixels(image)

    @torch.inference_mode()
    def embed_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        """Normalised embeddings of a uint8 batch from ``preprocess``."""
        pixels = self.pixels.normalise(pixels.to(self.device, non_blocking=True), self.dtype)
        return _normalise(self.model.get_image_features(pixel_values=pixels).pooler_output)

    def fingerprint(self) -> str:
        """What identifies the loaded weights (hashed once per instance; see ``model_fingerprint``)."""
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.model_id, self.source.load_revision)
        return self._fingerprint

    def cache_space(self) -> str:
        """The cache namespace of this model's image embeddings (weights, precision, preprocessing)."""
        fingerprint = self.fingerprint()
        return namespace(
            task="clip-image",
            model=fingerprint,
            code=code_fingerprint(__name__),
            dtype=precision_name(self.dtype),
            pixels=self.pixels,
        )

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
            cache_space=self.cache_space() if cache is not None else "",
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
