"""Image captioning by any supported image-to-text generator (BLIP, BLIP-2, GIT, VisionEncoderDecoder), batched,
with the decoding settings (and an optional prompt) as explicit arguments.

The model class comes from the checkpoint's config through ``AutoModelForImageTextToText``; which families are
run, and which take a prompt, is :mod:`capsearch.models.families`'s call.
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
from capsearch.models.base import PretrainedWrapper
from capsearch.models.batching import run_over_images
from capsearch.models.families import ModelFamily, captioner_family, check_prompt
from capsearch.models.pixels import probe_image
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
        self._prompts: dict[str, tuple[torch.Tensor, torch.Tensor, str]] = {}

    def prompt_inputs(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor, str]:
        """Token ids and attention mask (1, L) that start every caption, and the prompt as decoded (to remove).

        They come from the model's own processor (BLIP-2's puts its image tokens first); BLIP's generate drops
        the trailing [SEP] itself, GIT continues from [CLS] + prompt, so its [SEP] is dropped here.
        """
        if prompt not in self._prompts:
            check_prompt(self.family, prompt, self.param.rsplit(".", 1)[0] + ".prompt")
            if self.processor is not None:
                encoded = self.processor(images=[probe_image()], text=[prompt], return_tensors="pt")
            else:
                encoded = self.tokenizer([prompt], return_tensors="pt")
            ids, mask = encoded["input_ids"], encoded["attention_mask"]
            if self.family.model_type == "git" and int(ids[0, -1]) == self.tokenizer.sep_token_id:
                ids, mask = ids[:, :-1], mask[:, :-1]
            shown = self.tokenizer.decode(ids[0], skip_special_tokens=True).strip()
            self._prompts[prompt] = (ids, mask, shown)
        return self._prompts[prompt]

    @torch.inference_mode()
    def caption_pixels(self, pixels: torch.Tensor, settings: DecodingSettings) -> list[str]:
        """Captions of a uint8 batch from ``preprocess`` (KV cache on, greedy or beam search, no sampling)."""
        prompt: dict[str, torch.Tensor] = {}
        shown = ""
        if settings.prompt:
            ids, mask, shown = self.prompt_inputs(settings.prompt)
            prompt = {
                "input_ids": ids.repeat(len(pixels), 1).to(self.device),
                "attention_mask": mask.repeat(len(pixels), 1).to(self.device),
            }
        output = self.model.generate(
            pixel_values=self.normalised_pixels(pixels),
            **prompt,
            num_beams=settings.num_beams,
            max_new_tokens=settings.max_new_tokens,
            min_new_tokens=settings.min_new_tokens,
            do_sample=False,
            use_cache=True,
        )
        texts = [text.strip() for text in self.tokenizer.batch_decode(output, skip_special_tokens=True)]
        return [text[len(shown) :].strip() if shown and text.startswith(shown) else text for text in texts]

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
        if settings.prompt:
            self.prompt_inputs(settings.prompt)  # a model that takes no prompt fails before any image is read
        path = self.decode_path(decode)
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
            cache_space=self.recipe(path, settings).key() if cache is not None else "",
            desc="caption",
            decode_path=path,
            skip_unreadable=skip_unreadable,
        )
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
