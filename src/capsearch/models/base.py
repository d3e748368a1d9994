"""What every model wrapper shares: safe loading at one commit, device and precision, preprocessing, cache keys."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from PIL import Image

from capsearch.cache import model_fingerprint, namespace
from capsearch.imports import code_fingerprint
from capsearch.models.batching import RunStats
from capsearch.models.pixels import PixelPipeline
from capsearch.models.runtime import (
    load_pretrained,
    precision_name,
    resolve_device,
    resolve_model,
    resolve_precision,
)


class PretrainedWrapper:
    """A transformers model and its processor, loaded safely (safetensors only, no remote code, one commit).

    Subclasses name their ``processor_class`` and ``model_class``; ``param`` is the params key of the model,
    used in every error (``clip.model``, ``caption.model``, or a command-line flag).
    """

    processor_class: ClassVar[Any]
    model_class: ClassVar[Any]

    def __init__(self, model_id: str, revision: str | None, precision: str, device: str, param: str) -> None:
        self.model_id = model_id
        self.revision = revision
        self.precision = precision
        self.device = resolve_device(device)
        self.dtype = resolve_precision(precision, self.device, param.rsplit(".", 1)[0] + ".precision")
        self.source = resolve_model(model_id, revision, param)  # a hub id: the one commit every file comes from
        pinned = self.source.load_revision
        self.processor = load_pretrained(self.processor_class, model_id, pinned, param, weights=False)
        self.model = load_pretrained(self.model_class, model_id, pinned, param, dtype=self.dtype).to(self.device)
        self.model.eval()
        self.pixels = PixelPipeline.from_image_processor(self.processor.image_processor)
        self.last_run = RunStats()  # of the last run over images
        self._fingerprint: str | None = None

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """uint8 pixels (3, H, W) of one RGB image, resized (and cropped) as the model's processor does."""
        return self.pixels(image)

    def normalised_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """A uint8 batch from :meth:`preprocess` on the model's device, rescaled and normalised in its dtype."""
        return self.pixels.normalise(pixels.to(self.device, non_blocking=True), self.dtype)

    def fingerprint(self) -> str:
        """What identifies the loaded weights (hashed once per instance; see ``model_fingerprint``)."""
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.model_id, self.source.load_revision)
        return self._fingerprint

    def cache_space(self, task: str, **settings: Any) -> str:
        """The result-cache namespace of ``task`` by this model: weights, code, precision, preprocessing, settings."""
        return namespace(
            task=task,
            model=self.fingerprint(),
            code=code_fingerprint(type(self).__module__),
            dtype=precision_name(self.dtype),
            pixels=self.pixels,
            **settings,
        )
