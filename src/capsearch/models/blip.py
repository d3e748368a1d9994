"""BLIP image captioning, batched, with the decoding settings as explicit arguments."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from transformers import BlipForConditionalGeneration, BlipProcessor

from capsearch.data.images import ImageDataset, ImageSource
from capsearch.models.runtime import batch_loader, load_pretrained, resolve_device, resolve_precision
from capsearch.progress import progress

DEFAULT_BLIP = "Salesforce/blip-image-captioning-base"


@dataclass(frozen=True)
class DecodingSettings:
    """``generate`` settings that change the captions (tracked params of the caption stage)."""

    num_beams: int = 3
    max_new_tokens: int = 30
    min_new_tokens: int = 5

    def validate(self) -> None:
        """Raise a ValueError naming the bad ``caption.*`` param."""
        if self.num_beams < 1:
            raise ValueError(f"caption.num_beams: expected >= 1, got {self.num_beams}")
        if self.max_new_tokens < 1:
            raise ValueError(f"caption.max_new_tokens: expected >= 1, got {self.max_new_tokens}")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError(
                f"caption.min_new_tokens: expected 0..max_new_tokens ({self.max_new_tokens}), got {self.min_new_tokens}"
            )


class BlipCaptioner:
    """A BLIP captioning model and its processor, loaded safely."""

    def __init__(
        self,
        model_id: str = DEFAULT_BLIP,
        revision: str | None = None,
        precision: str = "auto",
        device: str = "auto",
        param: str = "caption.model",
    ) -> None:
        self.model_id = model_id
        self.revision = revision
        self.precision = precision
        self.device = resolve_device(device)
        self.dtype = resolve_precision(precision, self.device, param.rsplit(".", 1)[0] + ".precision")
        self.processor = load_pretrained(BlipProcessor, model_id, revision, param, weights=False)
        model = load_pretrained(BlipForConditionalGeneration, model_id, revision, param, dtype=self.dtype)
        self.model = model.to(self.device).eval()

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """Pixel tensor (C, H, W) of one RGB image, as the model's processor prepares it."""
        return self.processor.image_processor(images=image, return_tensors="pt")["pixel_values"][0]

    @torch.inference_mode()
    def caption_pixels(self, pixels: torch.Tensor, settings: DecodingSettings) -> list[str]:
        """Captions of a preprocessed batch."""
        pixels = pixels.to(self.device, dtype=self.dtype, non_blocking=True)
        output = self.model.generate(
            pixel_values=pixels,
            num_beams=settings.num_beams,
            max_new_tokens=settings.max_new_tokens,
            min_new_tokens=settings.min_new_tokens,
            do_sample=False,
        )
        return [text.strip() for text in self.processor.batch_decode(output, skip_special_tokens=True)]

    def caption_images(
        self,
        source: ImageSource,
        image_ids: Sequence[str],
        settings: DecodingSettings,
        batch_size: int = 16,
        num_workers: int = 0,
    ) -> list[str]:
        """One caption per image id, in order, images decoded in worker processes."""
        settings.validate()
        loader = batch_loader(ImageDataset(source, image_ids, self.preprocess), batch_size, num_workers, self.device)
        captions: list[str] = []
        for batch in progress(loader, desc="caption", unit="batch"):
            captions += self.caption_pixels(batch, settings)
        return captions
