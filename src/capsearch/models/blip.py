"""BLIP image captioning, batched, with the decoding settings as explicit arguments."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from PIL import Image
from transformers import BlipForConditionalGeneration, BlipProcessor

from capsearch.cache import ResultCache, model_fingerprint, namespace
from capsearch.data.images import ImageSource
from capsearch.imports import code_fingerprint
from capsearch.models.batching import RunStats, run_over_images
from capsearch.models.pixels import PixelPipeline
from capsearch.models.runtime import (
    load_pretrained,
    precision_name,
    resolve_device,
    resolve_model,
    resolve_precision,
)

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
        self.source = resolve_model(model_id, revision, param)  # a hub id: the one commit every file comes from
        self.processor = load_pretrained(BlipProcessor, model_id, self.source.load_revision, param, weights=False)
        pinned = self.source.load_revision
        model = load_pretrained(BlipForConditionalGeneration, model_id, pinned, param, dtype=self.dtype)
        self.model = model.to(self.device).eval()
        self.pixels = PixelPipeline.from_image_processor(self.processor.image_processor)
        self.last_run = RunStats()
        self._fingerprint: str | None = None

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """uint8 pixels (3, H, W) of one RGB image, resized as the model's processor does."""
        return self.pixels(image)

    @torch.inference_mode()
    def caption_pixels(self, pixels: torch.Tensor, settings: DecodingSettings) -> list[str]:
        """Captions of a uint8 batch from ``preprocess`` (KV cache on, greedy or beam search, no sampling)."""
        pixels = self.pixels.normalise(pixels.to(self.device, non_blocking=True), self.dtype)
        output = self.model.generate(
            pixel_values=pixels,
            num_beams=settings.num_beams,
            max_new_tokens=settings.max_new_tokens,
            min_new_tokens=settings.min_new_tokens,
            do_sample=False,
            use_cache=True,
        )
        return [text.strip() for text in self.processor.batch_decode(output, skip_special_tokens=True)]

    def fingerprint(self) -> str:
        """What identifies the loaded weights (hashed once per instance; see ``model_fingerprint``)."""
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.model_id, self.source.load_revision)
        return self._fingerprint

    def cache_space(self, settings: DecodingSettings) -> str:
        """The cache namespace of captions by this model with these settings."""
        fingerprint = self.fingerprint()
        return namespace(
            task="blip-caption",
            model=fingerprint,
            code=code_fingerprint(__name__),
            dtype=precision_name(self.dtype),
            decoding=asdict(settings),
            pixels=self.pixels,
        )

    def caption_images(
        self,
        source: ImageSource,
        image_ids: Sequence[str],
        settings: DecodingSettings,
        batch_size: int = 16,
        num_workers: int = 0,
        cache: ResultCache | None = None,
    ) -> list[str]:
        """One caption per image id, in order, images decoded in worker processes.

        Images whose caption is in ``cache`` are not recomputed; ``last_run`` says how many were.
        """
        settings.validate()
        captions, self.last_run = run_over_images(
            source,
            image_ids,
            self.pixels,
            lambda batch: self.caption_pixels(batch, settings),
            lambda caption: caption.encode("utf-8"),
            lambda blob: blob.decode("utf-8"),
            batch_size=batch_size,
            num_workers=num_workers,
            device=self.device,
            cache=cache,
            cache_space=self.cache_space(settings) if cache is not None else "",
            desc="caption",
        )
        return captions
