"""BLIP image captioning, batched, with the decoding settings as explicit arguments."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from transformers import BlipForConditionalGeneration, BlipProcessor

from capsearch.cache import ResultCache
from capsearch.data.images import ImageSource
from capsearch.models.base import PretrainedWrapper
from capsearch.models.batching import run_over_images
from capsearch.params import DEFAULT_BLIP, check_decoding


@dataclass(frozen=True)
class DecodingSettings:
    """``generate`` settings that change the captions (``caption.*`` params, checked in :mod:`capsearch.params`)."""

    num_beams: int = 3
    max_new_tokens: int = 30
    min_new_tokens: int = 5

    def __post_init__(self) -> None:
        check_decoding(self.num_beams, self.max_new_tokens, self.min_new_tokens)


class BlipCaptioner(PretrainedWrapper):
    """A BLIP captioning model and its processor, loaded safely."""

    processor_class = BlipProcessor
    task_kind = "caption"  # the image task it runs (capsearch.engine)
    model_class = BlipForConditionalGeneration

    def __init__(
        self,
        model_id: str = DEFAULT_BLIP,
        revision: str | None = "main",
        precision: str = "auto",
        device: str = "auto",
        param: str = "caption.model",
    ) -> None:
        super().__init__(model_id, revision, precision, device, param)

    @torch.inference_mode()
    def caption_pixels(self, pixels: torch.Tensor, settings: DecodingSettings) -> list[str]:
        """Captions of a uint8 batch from ``preprocess`` (KV cache on, greedy or beam search, no sampling)."""
        output = self.model.generate(
            pixel_values=self.normalised_pixels(pixels),
            num_beams=settings.num_beams,
            max_new_tokens=settings.max_new_tokens,
            min_new_tokens=settings.min_new_tokens,
            do_sample=False,
            use_cache=True,
        )
        return [text.strip() for text in self.processor.batch_decode(output, skip_special_tokens=True)]

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
            cache_space=self.cache_space("blip-caption", decoding=asdict(settings)) if cache is not None else "",
            desc="caption",
        )
        return captions
