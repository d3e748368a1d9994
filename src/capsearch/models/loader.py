"""Images into the model's batches: small chunks decoded in worker processes, each batch assembled in the main process.

A DataLoader given the model's batch size hands each worker whole batches: at batch 1,024 over 8,091 images only 8
workers ever decode, and the model waits until one worker has decoded 1,024 images alone. Here every worker decodes
chunks of :data:`CHUNK_IMAGES` images, the main process joins chunks into the model's batch, and the workers keep
enough chunks in flight for two batches, so every worker decodes while the model computes.

Two decode paths (``runtime.decode``):

* ``cpu``: PIL in the workers (:meth:`ImageSource.open_rgb`: EXIF rotation, CMYK, 16-bit, transparency), resized
  and cropped on uint8 by :class:`PixelPipeline`: the reference path, identical on every machine. For VLMs whose
  processor tiles each image or gives it its own patch grid, the workers run that processor instead
  (:class:`capsearch.models.processed.ProcessorPipeline`).
* ``gpu``: the workers only read each file; plain JPEGs are decoded in batches on the GPU (nvJPEG,
  :mod:`capsearch.models.gpu_decode`) and resized there. Every other image (PNG, CMYK, EXIF-rotated, or one the GPU
  decoder refuses) takes the CPU path, one by one, and is counted.

An image that cannot be decoded is an :class:`ImageReadError` naming it, or, with ``skip_unreadable``, left out and
listed with its reason: no image is decoded twice to check it first.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from capsearch.data.images import ImageReadError, ImageSource
from capsearch.models.pixels import PixelPipeline
from capsearch.models.processed import ProcessorBatch, ProcessorPipeline

CHUNK_IMAGES = 16  # images one worker decodes per task: small, so that every worker has work at any batch size

# what a worker turns an image into: uint8 pixels at the model's size, or the model's own processor's inputs
ImagePipeline = PixelPipeline | ProcessorPipeline

# decodes a list of JPEG files (1-d uint8 tensors) into uint8 (3, H, W) tensors on the device; None where it cannot
JpegDecoder = Callable[[list[torch.Tensor]], list[torch.Tensor | None]]


def _as_is(item: Any) -> Any:
    return item


class ChunkDataset:
    """Chunk ``i`` of ``image_ids``: every image decoded (``cpu``) or read as a plain JPEG for the GPU (``gpu``).

    An item is a dict: ``start`` (position of its first image), ``pixels`` (the pipeline's stack of the images
    decoded here: uint8 (n, 3, H, W), or the processor's outputs) at chunk offsets ``decoded``, ``encoded`` (JPEG
    files as 1-d uint8 tensors) at offsets ``encoded_at``, and ``failed``: (offset, reason) of the images that could
    not be decoded. Workers never raise for a bad image.
    """

    def __init__(
        self, source: ImageSource, image_ids: Sequence[str], pipeline: ImagePipeline, decode: str, chunk: int
    ) -> None:
        if decode not in ("cpu", "gpu"):
            raise ValueError(f"runtime.decode: unknown decode path {decode!r}; choose one of cpu, gpu")
        if chunk <= 0:
            raise ValueError(f"chunk size must be positive, got {chunk}")
        self.source = source
        self.image_ids = list(image_ids)
        self.pipeline = pipeline
        self.decode = decode
        self.chunk = chunk

    def __len__(self) -> int:
        return -(-len(self.image_ids) // self.chunk)

    def __getitem__(self, index: int) -> dict[str, Any]:
        start = index * self.chunk
        decoded: list[int] = []
        rows: list[torch.Tensor] = []
        encoded: list[torch.Tensor] = []
        encoded_at: list[int] = []
        failed: list[tuple[int, str]] = []
        for offset, image_id in enumerate(self.image_ids[start : start + self.chunk]):
            try:
                data = self.source.plain_jpeg(image_id) if self.decode == "gpu" else None
                if data is not None:
                    encoded.append(torch.frombuffer(bytearray(data), dtype=torch.uint8))
                    encoded_at.append(offset)
                    continue
                rows.append(self.pipeline(self.source.open_rgb(image_id, self.pipeline.draft_size)))
                decoded.append(offset)
            except ImageReadError as exc:
                failed.append((offset, str(exc)))
        return {
            "start": start,
            "pixels": self.pipeline.stack(rows),
            "decoded": decoded,
            "encoded": encoded,
            "encoded_at": encoded_at,
            "failed": failed,
        }


@dataclass
class LoadedBatch:
    """One model batch: uint8 pixels (n, 3, H, W) on the device (or the processor's inputs of n images), and the
    position in the id list of each row."""

    positions: list[int]
    pixels: torch.Tensor | ProcessorBatch


@dataclass
class LoaderStats:
    """What a pass decoded where: images decoded on the GPU, on the CPU, and the unreadable ones (position, reason)."""

    gpu_decoded: int = 0
    cpu_decoded: int = 0
    cpu_fallbacks: int = 0  # images the gpu path sent to the CPU (not a plain JPEG, or refused by the GPU decoder)
    skipped: list[tuple[int, str]] = field(default_factory=list)


class ImageLoader:
    """Batches of ``batch_size`` images (the last one smaller), in id order, decoded ``num_workers`` processes wide.

    ``decode`` is ``cpu`` or ``gpu`` (then ``jpeg_decoder`` decodes the plain JPEGs on ``device``; see
    :func:`capsearch.models.gpu_decode.jpeg_decoder`). Iterate once; :attr:`stats` says what was decoded where.
    """

    def __init__(
        self,
        source: ImageSource,
        image_ids: Sequence[str],
        pipeline: ImagePipeline,
        *,
        batch_size: int,
        num_workers: int,
        device: torch.device,
        decode: str = "cpu",
        jpeg_decoder: JpegDecoder | None = None,
        skip_unreadable: bool = False,
        chunk: int = CHUNK_IMAGES,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"runtime.batch_size: expected a positive integer, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"runtime.num_workers: expected 0 or more, got {num_workers}")
        if decode == "gpu" and jpeg_decoder is None:
            raise ValueError("runtime.decode: the gpu path needs a JPEG decoder")
        self.dataset = ChunkDataset(source, image_ids, pipeline, decode, chunk)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.device = device
        self.jpeg_decoder = jpeg_decoder
        self.skip_unreadable = skip_unreadable
        self.stats = LoaderStats()

    def prefetch_factor(self) -> int:
        """Chunks each worker keeps in flight: together, two model batches (at least 2 each)."""
        if self.num_workers == 0:
            return 0
        return max(2, math.ceil(2 * self.batch_size / self.dataset.chunk / self.num_workers))

    def _chunks(self) -> Any:
        from torch.utils.data import DataLoader

        workers = min(self.num_workers, len(self.dataset))
        return DataLoader(
            self.dataset,
            batch_size=None,
            shuffle=False,
            num_workers=workers,
            collate_fn=_as_is,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=self.prefetch_factor() if workers else None,
            persistent_workers=False,
        )

    def __iter__(self) -> Iterator[LoadedBatch]:
        pending: list[tuple[int, Any]] = []  # (position, pixels row on the device, or JPEG bytes for the GPU)
        for chunk in self._chunks():
            start = chunk["start"]
            for offset, reason in chunk["failed"]:
                if not self.skip_unreadable:
                    raise ImageReadError(reason)
                self.stats.skipped.append((start + offset, reason))
            pixels = self.dataset.pipeline.unstack(chunk["pixels"], self.device)
            rows = [(start + o, ("pixels", row)) for o, row in zip(chunk["decoded"], pixels, strict=True)]
            rows += [(start + o, ("jpeg", data)) for o, data in zip(chunk["encoded_at"], chunk["encoded"], strict=True)]
            self.stats.cpu_decoded += len(chunk["decoded"])
            if self.dataset.decode == "gpu":
                self.stats.cpu_fallbacks += len(chunk["decoded"])
            pending += sorted(rows, key=lambda row: row[0])
            while len(pending) >= self.batch_size:
                yield self._batch(pending[: self.batch_size])
                pending = pending[self.batch_size :]
        if pending:
            yield self._batch(pending)

    def _batch(self, rows: list[tuple[int, Any]]) -> LoadedBatch:
        """The rows as one uint8 batch on the device, JPEGs decoded (and resized) on the GPU first."""
        jpegs = [i for i, (_, (kind, _)) in enumerate(rows) if kind == "jpeg"]
        images: list[torch.Tensor | None] = [item for _, (_, item) in rows]
        if jpegs:
            assert self.jpeg_decoder is not None
            decoded = self.jpeg_decoder([images[i] for i in jpegs])  # type: ignore[misc]
            good = [(i, image) for i, image in zip(jpegs, decoded, strict=True) if image is not None]
            resized = self.dataset.pipeline.resize_tensors([image for _, image in good]) if good else []
            for (i, _), row in zip(good, resized, strict=True):
                images[i] = row
            self.stats.gpu_decoded += len(good)
            for i, image in zip(jpegs, decoded, strict=True):
                if image is None:  # the GPU decoder refused it: the CPU path, here
                    images[i] = self._cpu_row(rows[i][0])
        kept = [(position, image) for (position, _), image in zip(rows, images, strict=True) if image is not None]
        return LoadedBatch([p for p, _ in kept], self.dataset.pipeline.batch([image for _, image in kept], self.device))

    def _cpu_row(self, position: int) -> torch.Tensor | None:
        """One image through the CPU path in this process (after the GPU decoder refused it); None if unreadable."""
        image_id = self.dataset.image_ids[position]
        pipeline = self.dataset.pipeline
        try:
            row = pipeline(self.dataset.source.open_rgb(image_id, pipeline.draft_size)).to(self.device)
        except ImageReadError as exc:
            if not self.skip_unreadable:
                raise
            self.stats.skipped.append((position, str(exc)))
            return None
        self.stats.cpu_decoded += 1
        self.stats.cpu_fallbacks += 1
        return row
