"""What every model wrapper shares: safe loading at one commit, the family check, device and precision,
preprocessing checked against the model's own processor, cache keys."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image

from capsearch.cache import model_fingerprint
from capsearch.imports import code_fingerprint
from capsearch.models import ModelLoadError
from capsearch.models.batching import RunStats
from capsearch.models.families import ModelFamily, read_config
from capsearch.models.gpu_decode import resolve_decode
from capsearch.models.pixels import PixelPipeline, processor_difference
from capsearch.models.processed import ProcessorPipeline
from capsearch.models.runtime import (
    ModelSource,
    load_pretrained,
    model_config_path,
    precision_name,
    precision_param,
    resolve_device,
    resolve_model,
    resolve_precision,
)
from capsearch.recipe import Recipe

PIXEL_TOLERANCE = 1e-4  # float rounding; a wrong resize, crop or normalisation differs by 1e-2 or more


def inspect_model(family_of: Any, model_id: str, revision: str | None, param: str) -> tuple[ModelSource, ModelFamily]:
    """Resolve the model to one commit and read its family from its config alone (no weights, no images).

    ``family_of`` is :func:`capsearch.models.families.embedder_family` or ``captioner_family``: a model of the
    wrong kind, or one needing remote code, is refused here with one line naming ``param``.
    """
    source = resolve_model(model_id, revision, param)
    return source, family_of(read_config(model_config_path(source), param), param)


def load_pixel_pipeline(model_id: str, revision: str | None, param: str) -> tuple[PixelPipeline, Any]:
    """The model's preprocessing as a :class:`PixelPipeline`, and its own (PIL) image processor, checked equal.

    The processor is loaded with transformers' PIL backend, the reference the pipeline reproduces (the
    torchvision backend resizes differently). A processor the pipeline cannot reproduce (a NaFlex patch grid,
    a resize rule of its own) is refused with one line naming ``param``.
    """
    from transformers import AutoImageProcessor

    processor = load_pretrained(AutoImageProcessor, model_id, revision, param, weights=False, backend="pil")
    try:
        pipeline = PixelPipeline.from_image_processor(processor)
        pipeline.output_size()  # one size for every image, or no batches
        difference = processor_difference(pipeline, processor)
    except (AttributeError, TypeError, ValueError) as exc:
        name = type(processor).__name__
        raise ModelLoadError(f"{param}: its image processor ({name}) is not supported: {exc}") from exc
    if not difference <= PIXEL_TOLERANCE:
        raise ModelLoadError(
            f"{param}: capsearch's preprocessing does not reproduce its image processor ({type(processor).__name__}; "
            f"largest pixel difference {difference:.3g}), so its results would not be the model's"
        )
    return pipeline, processor


def load_image_pipeline(
    family: ModelFamily, model_id: str, revision: str | None, param: str, processor: Any = None
) -> tuple[PixelPipeline | ProcessorPipeline, Any]:
    """How the model's images are prepared, and its image processor: capsearch's fast pipeline checked against the
    processor (:func:`load_pixel_pipeline`), or for a family whose processor tiles each image or gives it its own
    patch grid, that ``processor`` itself (loaded here when not given), run in the decode workers."""
    if not family.prepared_by_processor:
        return load_pixel_pipeline(model_id, revision, param)
    if processor is None:
        processor = _processor_and_tokenizer(model_id, revision, param)[0]
    if processor is None or getattr(processor, "image_processor", None) is None:
        raise ModelLoadError(f"{param}: a {family.model_type} model needs its processor (processor_config.json)")
    from transformers import AutoImageProcessor

    # the PIL backend: the reference, the same on every machine (torchvision's resizes differ, and may be absent)
    processor.image_processor = load_pretrained(
        AutoImageProcessor, model_id, revision, param, weights=False, backend="pil"
    )
    return ProcessorPipeline(processor, "", processor.tokenizer.pad_token_id), processor.image_processor


class PretrainedWrapper:
    """A transformers model loaded through its Auto class, safely (safetensors only, no remote code, one commit).

    Subclasses name their ``model_class`` (an Auto class) and ``family_of`` (the check of the checkpoint's config);
    ``param`` is the params key of the model, used in every error (``clip.model``, ``caption.model``, or a
    command-line flag). The order is what makes a bad model fail fast: config (family), then the image processor
    (checked against the pipeline on a probe image), then the weights.
    """

    model_class: ClassVar[Any]
    family_of: ClassVar[Any]

    def __init__(self, model_id: str, revision: str | None, precision: str, device: str, param: str) -> None:
        self.model_id = model_id
        self.revision = revision
        self.precision = precision
        self.param = param
        self.device = resolve_device(device)
        self.dtype = resolve_precision(precision, self.device, precision_param(param))
        # a hub id: the one commit every file comes from
        self.source, self.family = type(self).inspect(model_id, revision, param)
        pinned = self.source.load_revision
        self.processor, self.tokenizer = _processor_and_tokenizer(model_id, pinned, param)
        self.pixels, self.image_processor = load_image_pipeline(self.family, model_id, pinned, param, self.processor)
        self.model = load_pretrained(self.model_class, model_id, pinned, param, dtype=self.dtype).to(self.device)
        self.model.eval()
        self.last_run = RunStats()  # of the last run over images
        self._fingerprint: str | None = None

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """uint8 pixels (3, H, W) of one RGB image, resized (and cropped) as the model's processor does."""
        return self.pixels(image)

    def normalised_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """A uint8 batch from :meth:`preprocess` on the model's device, rescaled and normalised in its dtype."""
        return self.pixels.normalise(pixels.to(self.device, non_blocking=True), self.dtype)

    @classmethod
    def inspect(cls, model_id: str, revision: str | None, param: str) -> tuple[Any, ModelFamily]:
        """The model resolved to one commit and its family, from its config alone (no weights, no images): a model
        of the wrong kind or needing remote code is refused here, naming ``param``."""
        return inspect_model(cls.family_of, model_id, revision, param)

    @classmethod
    def pixel_pipeline_of(cls, model_id: str, revision: str | None, param: str) -> PixelPipeline | ProcessorPipeline:
        """The model's preprocessing from its processor config alone (no weights loaded), checked as at load."""
        source, family = cls.inspect(model_id, revision, param)
        return load_image_pipeline(family, model_id, source.load_revision, param)[0]

    @classmethod
    def fingerprint_of(cls, model_id: str, revision: str | None, param: str) -> str:
        """:meth:`fingerprint` of a checkpoint without loading it (its family is checked on the way)."""
        source, _ = cls.inspect(model_id, revision, param)
        return model_fingerprint(model_id, source.load_revision)

    def fingerprint(self) -> str:
        """What identifies the loaded weights (hashed once per instance; see ``model_fingerprint``)."""
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.model_id, self.source.load_revision)
        return self._fingerprint

    def decode_path(self, asked: str) -> str:
        """``cpu`` or ``gpu``: where this model's images are decoded for ``runtime.decode`` = ``asked``."""
        return resolve_decode(asked, self.device, self.pixels)

    @classmethod
    def recipe_of(cls, weights: str, precision: str, decode: str, settings: Any) -> Recipe:
        """The recipe of this wrapper's task: ``weights`` (:func:`capsearch.cache.model_fingerprint`), ``precision``
        and ``decode`` as resolved, the run's ``settings`` (a captioner's decoding; None for a dual encoder)."""
        return Recipe(
            task=cls.task_kind,
            weights=weights,
            code=code_fingerprint(cls.__module__),
            precision=precision,
            decode=decode,
            settings=cls.recipe_settings(settings),
        )

    def recipe(self, decode: str, settings: Any = None) -> Recipe:
        """The recipe of a run of this loaded model over images decoded on ``decode`` (``cpu`` or ``gpu``)."""
        return type(self).recipe_of(self.fingerprint(), precision_name(self.dtype), decode, settings)

    # what a wrapper runs, each family's answer (the engines call these and know no family)

    task_kind: ClassVar[str]  # the image task it runs: caption or embed_images
    output_kind: ClassVar[str]  # the sharded layout its results go to (see capsearch.artifacts)
    model_param: ClassVar[str]  # its model's params key, for errors

    @classmethod
    def check_settings(cls, family: ModelFamily | None, settings: Any) -> None:
        """Refuse, naming the param, settings this family cannot run, before any weights or images are read (with
        ``family`` None: settings no model of this kind can run)."""

    @classmethod
    def recipe_settings(cls, settings: Any) -> dict[str, Any]:
        """The run's settings as they enter the recipe."""
        return {}

    def run_pixels(self, pixels: torch.Tensor, settings: Any) -> list[Any]:
        """Results of a uint8 batch from the pipeline, one per image."""
        raise NotImplementedError

    def run_images(
        self, source: Any, image_ids: Sequence[str], settings: Any, batch_size: int, num_workers: int,
        cache: Any, decode: str, skip_unreadable: bool = False,
    ) -> list[Any]:  # fmt: skip
        """Results of images read from ``source`` through the wrapper's own loop (decoding workers, OOM back-off,
        result cache), one per readable image; ``last_run.skipped`` names the others."""
        raise NotImplementedError

    @classmethod
    def part_values(cls, values: list[Any]) -> Any:
        """A part's results as its layout stores them."""
        return values

    def result_column(self, count: int) -> np.ndarray:
        """A column of ``count`` blank results, to be filled where images could be read (the Ray engine's rows)."""
        raise NotImplementedError

    def save(self, folder: Any) -> None:
        """The model, processor and tokenizer with ``save_pretrained`` (safetensors) in ``folder``: a folder the model
        params (and every ``capsearch`` command) can load (what fine-tuning hands on)."""
        self.model.save_pretrained(folder)
        if self.processor is not None:
            self.processor.save_pretrained(folder)
        else:
            self.tokenizer.save_pretrained(folder)
            self.image_processor.save_pretrained(folder)


def _processor_and_tokenizer(model_id: str, revision: str | None, param: str) -> tuple[Any, Any]:
    """The model's multimodal processor (None where it ships none, e.g. VisionEncoderDecoder) and its tokenizer."""
    from transformers import AutoProcessor, AutoTokenizer, PreTrainedTokenizerBase

    processor = load_pretrained(AutoProcessor, model_id, revision, param, weights=False)
    if isinstance(processor, PreTrainedTokenizerBase):
        return None, processor
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is None:
        tokenizer = load_pretrained(AutoTokenizer, model_id, revision, param, weights=False)
        processor = None
    return processor, tokenizer
