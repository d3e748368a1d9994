"""CLIP image and text embeddings, L2-normalised, in the order given."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from transformers import CLIPModel, CLIPProcessor

from capsearch.data.images import ImageDataset, ImageSource
from capsearch.models.runtime import batch_loader, load_pretrained, resolve_device, resolve_precision
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
        self.processor = load_pretrained(CLIPProcessor, model_id, revision, param, weights=False)
        model = load_pretrained(CLIPModel, model_id, revision, param, dtype=self.dtype)
        self.model = model.to(self.device).eval()
        self.context_length = int(self.model.config.text_config.max_position_embeddings)

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """Pixel tensor (C, H, W) of one RGB image, as the model's processor prepares it."""
        return self.processor.image_processor(images=image, return_tensors="pt")["pixel_values"][0]

    @torch.inference_mode()
    def embed_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        """Normalised embeddings of a preprocessed batch."""
        pixels = pixels.to(self.device, dtype=self.dtype, non_blocking=True)
        return _normalise(self.model.get_image_features(pixel_values=pixels).pooler_output)

    def embed_images(
        self, source: ImageSource, image_ids: Sequence[str], batch_size: int = 64, num_workers: int = 0
    ) -> np.ndarray:
        """Embeddings (len(image_ids), dim) of images read from ``source``, decoded in worker processes."""
        loader = batch_loader(ImageDataset(source, image_ids, self.preprocess), batch_size, num_workers, self.device)
        chunks = [self.embed_pixels(batch) for batch in progress(loader, desc="embed images", unit="batch")]
        if not chunks:
            return np.zeros((0, self.model.config.projection_dim), dtype=np.float32)
        return np.concatenate(chunks).astype(np.float32)

    @torch.inference_mode()
    def embed_texts(self, texts: Sequence[str], batch_size: int = 256) -> TextEmbeddings:
        """Embeddings of ``texts``; texts longer than the context (77 tokens for CLIP) are truncated."""
        tokenizer = self.processor.tokenizer
        chunks, truncated = [], 0
        for start in progress(range(0, len(texts), batch_size), desc="embed texts", unit="batch"):
            batch = list(texts[start : start + batch_size])
            lengths = [len(ids) for ids in tokenizer(batch)["input_ids"]]
            truncated += sum(length > self.context_length for length in lengths)
            tokens = tokenizer(
                batch, padding=True, truncation=True, max_length=self.context_length, return_tensors="pt"
            ).to(self.device)
            chunks.append(_normalise(self.model.get_text_features(**tokens).pooler_output))
        if not chunks:
            return TextEmbeddings(np.zeros((0, self.model.config.projection_dim), dtype=np.float32), 0)
        return TextEmbeddings(np.concatenate(chunks).astype(np.float32), truncated)
