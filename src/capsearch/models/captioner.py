"""Image captioning by any supported image-to-text generator (BLIP, BLIP-2, GIT, VisionEncoderDecoder, and the
instruction VLMs Florence-2, PaliGemma, LLaVA, Gemma 3, SmolVLM / Idefics3, Qwen2-VL), batched, with the decoding
settings (and the prompt) as explicit arguments.

The model class comes from the checkpoint's config through ``AutoModelForImageTextToText``; which families are
run, how each is asked (a continued prompt, a task token, a prefix, a chat template) and its default prompt is
:mod:`capsearch.models.families`' call, the asking itself :mod:`capsearch.models.asking`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForImageTextToText

from capsearch.cache import ResultCache
from capsearch.data.images import ImageSource
from capsearch.models.asking import Asked, answer_tokens, answers, ask
from capsearch.models.base import PretrainedWrapper
from capsearch.models.batching import run_over_images
from capsearch.models.families import ModelFamily, captioner_family, check_prompt
from capsearch.models.pixels import PixelPipeline
from capsearch.models.processed import ProcessorBatch, ProcessorPipeline
from capsearch.params import DEFAULT_BLIP, DEFAULT_DECODE, CaptionParams, check_decoding


@dataclass(frozen=True)
class DecodingSettings:
    """``generate`` settings that change the captions (``caption.*`` params, checked in :mod:`capsearch.params`).

    ``prompt``: the text the caption continues (BLIP's "a picture of", BLIP-2's "a photo of"); it is removed from
    the caption. None: the model's own start.
    """

    num_beams: int = 3
    max_new_tokens: int = 30
    min_new_tokens: int = 5
    prompt: str | None = None

    def __post_init__(self) -> None:
        check_decoding(self.num_beams, self.max_new_tokens, self.min_new_tokens, self.prompt)

    @classmethod
    def of(cls, params: CaptionParams) -> DecodingSettings:
        """The settings of the ``caption`` params section."""
        return cls(params.num_beams, params.max_new_tokens, params.min_new_tokens, params.prompt)


class Captioner(PretrainedWrapper):
    """An image-to-text generator and its processor, loaded safely."""

    model_class = AutoModelForImageTextToText
    family_of = staticmethod(captioner_family)
    task_kind = "caption"  # the image task it runs (capsearch.job)
    output_kind = "captions"
    model_param = "caption.model"

    def __init__(
        self,
        model_id: str = DEFAULT_BLIP,
        revision: str | None = "main",
        precision: str = "auto",
        device: str = "auto",
        param: str = "caption.model",
    ) -> None:
        super().__init__(model_id, revision, precision, device, param)
        self._asked: dict[str, Asked] = {}
        self.tokens = 0  # caption tokens generated since the model loaded (see answer_tokens)

    def asked(self, prompt: str | None) -> Asked:
        """What the model is asked with ``caption.prompt`` = ``prompt`` (None: the family's default, or for BLIP-like
        families its own start), built once per prompt by the model's processor (:mod:`capsearch.models.asking`)."""
        key = prompt or ""
        if key not in self._asked:
            check_prompt(self.family, prompt, self.param.rsplit(".", 1)[0] + ".prompt")
            self._asked[key] = ask(
                self.family.asking, self.family.model_type, self.processor, self.tokenizer,
                self.family.prompt(prompt), self.param,
            )  # fmt: skip
        return self._asked[key]

    def image_pipeline(self, settings: DecodingSettings) -> PixelPipeline | ProcessorPipeline:
        """How images are prepared for a run with ``settings``: the fast pipeline, or for a family whose processor
        tiles each image (or gives it its own patch grid) that processor, asked with the run's prompt."""
        if isinstance(self.pixels, ProcessorPipeline):
            return self.pixels.asking(self.asked(settings.prompt).text)
        return self.pixels

    @torch.inference_mode()
    def caption_pixels(self, pixels: torch.Tensor | ProcessorBatch, settings: DecodingSettings) -> list[str]:
        """Captions of a uint8 batch from ``preprocess``, or of a batch its processor prepared with the run's prompt
        (:meth:`image_pipeline`); KV cache on, greedy or beam search, no sampling."""
        asked = self.asked(settings.prompt)
        start = None
        if isinstance(pixels, ProcessorBatch):
            inputs = {
                name: value.to(self.device, dtype=self.dtype if value.is_floating_point() else value.dtype)
                for name, value in pixels.inputs().items()
            }
            start = int(inputs["input_ids"].shape[1])  # every prompt left-padded to one length
        else:
            inputs = {name: value.repeat(len(pixels), 1).to(self.device) for name, value in asked.inputs.items()}
            inputs["pixel_values"] = self.normalised_pixels(pixels)
        output = self.model.generate(
            **inputs,
            num_beams=settings.num_beams,
            max_new_tokens=settings.max_new_tokens,
            min_new_tokens=settings.min_new_tokens,
            do_sample=False,
            use_cache=True,
        )
        self.tokens += answer_tokens(self.family.asking, self.tokenizer, output, asked, start)
        return answers(self.family.asking, self.tokenizer, output, asked, start)

    def caption_images(
        self,
        source: ImageSource,
        image_ids: Sequence[str],
        settings: DecodingSettings,
        batch_size: int = 16,
        num_workers: int = 0,
        cache: ResultCache | None = None,
        decode: str = DEFAULT_DECODE,
        skip_unreadable: bool = False,
    ) -> list[str]:
        """One caption per image id, in order, images decoded in worker processes (``decode``: see
        :mod:`capsearch.models.gpu_decode`).

        Images whose caption is in ``cache`` are not recomputed; ``last_run`` says how many were. With
        ``skip_unreadable`` an image that cannot be decoded is left out (``last_run.skipped`` names it) instead of
        failing the run.
        """
        pipeline = self.image_pipeline(settings)  # a model that takes no prompt fails before any image is read
        path = self.decode_path(decode)
        tokens = self.tokens
        captions, self.last_run = run_over_images(
            source,
            image_ids,
            pipeline,
            lambda batch: self.caption_pixels(batch, settings),
            lambda caption: caption.encode("utf-8"),
            lambda blob: blob.decode("utf-8"),
            batch_size=batch_size,
            num_workers=num_workers,
            device=self.device,
            cache=cache,
            cache_space=self.recipe(path, settings).key() if cache is not None else "",
            desc="caption",
            decode_path=path,
            skip_unreadable=skip_unreadable,
        )
        self.last_run.tokens = self.tokens - tokens
        return captions

    @classmethod
    def check_settings(cls, family: ModelFamily | None, settings: DecodingSettings | None) -> None:
        if settings is None:
            raise ValueError("a caption task needs its decoding settings")
        if family is not None:
            check_prompt(family, settings.prompt, "caption.prompt")

    @classmethod
    def recipe_settings(cls, settings: DecodingSettings) -> dict[str, Any]:
        return {"decoding": asdict(settings)}

    def run_pixels(self, pixels: torch.Tensor, settings: DecodingSettings) -> list[str]:
        return self.caption_pixels(pixels, settings)

    def run_images(
        self, source: ImageSource, image_ids: Sequence[str], settings: DecodingSettings, batch_size: int,
        num_workers: int, cache: ResultCache | None, decode: str, skip_unreadable: bool = False,
    ) -> list[str]:  # fmt: skip
        return self.caption_images(source, image_ids, settings, batch_size, num_workers, cache, decode, skip_unreadable)

    def result_column(self, count: int) -> np.ndarray:
        return np.full(count, "", dtype=object)
