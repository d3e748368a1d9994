"""A model run over images, as both engines need it: built once, resolved once, with the recipe of its results.

:class:`ImageTask` is the job value the caption and embed_images stages, the bench and library users build from
params: the wrapper class (``Captioner`` captions, ``DualEncoder`` embeds images), the model, the precision, device
and decode path *as resolved on this machine* (never ``auto``), and the run's settings. Its :attr:`ImageTask.recipe`
(:mod:`capsearch.recipe`) is what the part key hashes, and the same recipe the loaded wrapper hashes into the
result cache. Everything a family or task does differently is the wrapper's (``run_pixels``, ``run_images``,
``part_values``, ``result_column``): :mod:`capsearch.engine` (local) and :mod:`capsearch.ray_engine` (Ray) know no
family. :class:`EngineError` is their one failure type, :class:`PartResult` what they hand back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch

from capsearch.artifacts import PlannedPart
from capsearch.cache import model_fingerprint
from capsearch.data.images import ImageSource
from capsearch.errors import CapsearchError
from capsearch.models.base import PretrainedWrapper
from capsearch.models.gpu_decode import resolve_decode
from capsearch.models.pixels import PixelPipeline
from capsearch.models.runtime import Runtime, precision_name, precision_param, resolve_device, resolve_precision
from capsearch.params import DEFAULT_DECODE
from capsearch.recipe import Recipe


class EngineError(CapsearchError, RuntimeError):
    """A failure while computing a part; the message names the shard and, where one is to blame, the image."""


@dataclass(frozen=True)
class ImageTask:
    """A model run over images. Picklable: Ray ships it to its workers.

    Built with the params as asked (``precision`` and ``device`` may be ``auto``, ``decode`` is ``runtime.decode``);
    construction resolves them for this machine, so the value holds what runs. :attr:`recipe` reads the model's
    config first: a model of the wrong kind, with remote code, or given settings it cannot take (a prompt to a
    captioner that takes none) is refused there, before any image is read."""

    wrapper_class: type[PretrainedWrapper]
    model: str
    revision: str | None
    precision: str
    device: str = "auto"
    settings: Any = None  # the wrapper's run settings: a captioner's DecodingSettings, None for a dual encoder
    decode: str = DEFAULT_DECODE

    def __post_init__(self) -> None:
        if not isinstance(self.wrapper_class, type) or not issubclass(self.wrapper_class, PretrainedWrapper):
            raise ValueError(f"{getattr(self.wrapper_class, '__name__', self.wrapper_class)} runs no image task")
        self.wrapper_class.check_settings(None, self.settings)
        device = resolve_device(self.device)
        dtype = resolve_precision(self.precision, device, precision_param(self.param))
        object.__setattr__(self, "device", device.type)
        object.__setattr__(self, "precision", precision_name(dtype))
        on_gpu = self.decode != "cpu" and device.type == "cuda"  # the model's image processor is read only then
        object.__setattr__(
            self, "decode", resolve_decode(self.decode, device, self.pixel_pipeline() if on_gpu else None)
        )

    @property
    def kind(self) -> str:
        """``caption`` or ``embed_images``."""
        return self.wrapper_class.task_kind

    @property
    def param(self) -> str:
        """The params key of the model, for errors."""
        return self.wrapper_class.model_param

    @property
    def output_kind(self) -> str:
        """The sharded layout its results go to (see :mod:`capsearch.artifacts`)."""
        return self.wrapper_class.output_kind

    @cached_property
    def _checked(self) -> tuple[Any, Any]:
        """The model resolved to one commit and its family, read from its config (no weights, no images)."""
        source, family = self.wrapper_class.inspect(self.model, self.revision, self.param)
        self.wrapper_class.check_settings(family, self.settings)
        return source, family

    @property
    def family(self) -> Any:
        """The model's family (:class:`capsearch.models.families.ModelFamily`), read from its config."""
        return self._checked[1]

    @cached_property
    def recipe(self) -> Recipe:
        """What decides the results besides the images (see :mod:`capsearch.recipe`)."""
        source, _ = self._checked
        weights = model_fingerprint(self.model, source.load_revision)
        return self.wrapper_class.recipe_of(weights, self.precision, self.decode, self.settings)

    @property
    def load_note(self) -> str:
        """How the weights were read, where a summary should say (a pickle through the weights-only loader)."""
        return self._checked[0].note

    def identity(self) -> dict[str, Any]:
        """The part store's identity: the model as named and at which commit, its family, and the recipe."""
        source, family = self._checked
        return {
            "model": self.model,
            "revision": source.commit or self.revision,
            "family": family.model_type,
            **self.recipe.as_dict(),
        }

    def load(self, device: str | None = None) -> PretrainedWrapper:
        """The wrapper, on ``device`` (default: the task's)."""
        return self.wrapper_class(self.model, self.revision, self.precision, device or self.device, param=self.param)

    def pixel_pipeline(self) -> PixelPipeline:
        """The model's preprocessing, from its image processor alone (no weights loaded)."""
        return self.wrapper_class.pixel_pipeline_of(self.model, self.revision, self.param)

    def apply(self, wrapper: Any, pixels: torch.Tensor) -> list[Any]:
        """Results of a uint8 batch from the pipeline: captions, or embedding rows."""
        return wrapper.run_pixels(pixels, self.settings)

    def run(self, wrapper: Any, source: ImageSource, ids: Sequence[str], runtime: Runtime) -> list[Any]:
        """Results for the readable ones of ``ids`` through the wrapper's own loop (decoding workers, OOM back-off,
        result cache); ``wrapper.last_run.skipped`` names the unreadable ones."""
        return wrapper.run_images(
            source, ids, self.settings, runtime.batch_for(self.kind, self.family), runtime.num_workers, runtime.cache,
            self.decode, skip_unreadable=True,
        )  # fmt: skip


@dataclass
class PartResult:
    """One computed part: the kept image ids in order, their results, and the skipped images with reasons."""

    part: PlannedPart
    ids: list[str]
    values: list[Any]
    skipped: list[tuple[str, str]]
