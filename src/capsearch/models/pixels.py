"""Image preprocessing split for speed: resize and crop on uint8 in worker processes, normalise on the device.

It reproduces the model's own (PIL) image processor exactly: same output size rule, same resampling filter,
same centre crop; rescale and normalisation then run as one tensor operation on the whole batch where the
model runs. Workers ship uint8 (a quarter of float32's bytes) and JPEG decoding uses ``draft`` to decode large
photos at a reduced scale when the result is still at least the size the model needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

MAX_ASPECT = 4  # longer/shorter side kept before a shortest-edge resize; the centre crop never sees the rest
# PIL resampling filters (Image.Resampling) that torch's interpolate reproduces, antialiased as PIL does
TENSOR_MODES = {0: "nearest-exact", 2: "bilinear", 3: "bicubic"}


@dataclass(frozen=True)
class PixelPipeline:
    """Resize (fixed size or shortest edge), optional centre crop, then ``(x * rescale - mean) / std``."""

    shortest_edge: int | None
    height: int | None
    width: int | None
    crop_height: int | None
    crop_width: int | None
    resample: int
    rescale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    # the centre crop's offset, (size - crop) / 2: "floor" as transformers' processors, "round" (half to even) as
    # torchvision's CenterCrop (open_clip's transform)
    centre: str = "floor"

    @classmethod
    def from_image_processor(cls, processor: object) -> PixelPipeline:
        """The pipeline a transformers image processor (CLIP's or BLIP's) describes."""
        size = processor.size  # type: ignore[attr-defined]
        crop = processor.crop_size if getattr(processor, "do_center_crop", False) else None  # type: ignore[attr-defined]
        if not getattr(processor, "do_resize", True) or not (size.shortest_edge or (size.height and size.width)):
            raise ValueError(f"unsupported image processor settings: size={size}")
        return cls(
            shortest_edge=size.shortest_edge if not (size.height and size.width) else None,
            height=size.height,
            width=size.width,
            crop_height=crop.height if crop else None,
            crop_width=crop.width if crop else None,
            resample=int(processor.resample),  # type: ignore[attr-defined]
            rescale=float(processor.rescale_factor) if processor.do_rescale else 1.0,  # type: ignore[attr-defined]
            mean=tuple(processor.image_mean) if processor.do_normalize else (0.0, 0.0, 0.0),  # type: ignore[attr-defined]
            std=tuple(processor.image_std) if processor.do_normalize else (1.0, 1.0, 1.0),  # type: ignore[attr-defined]
        )

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after the resize step, by the processor's own rule."""
        if self.shortest_edge is None:
            return int(self.width), int(self.height)  # type: ignore[arg-type]
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = self.shortest_edge, int(self.shortest_edge * long / short)
        return (new_short, new_long) if width <= height else (new_long, new_short)

    def output_size(self) -> tuple[int, int]:
        """(width, height) of every output; a shortest-edge resize without a crop has no single size."""
        if self.crop_height is not None and self.crop_width is not None:
            return self.crop_width, self.crop_height
        if self.shortest_edge is None:
            return int(self.width), int(self.height)  # type: ignore[arg-type]
        raise ValueError("a shortest-edge resize without a centre crop gives images of different sizes")

    def draft_size(self, width: int, height: int) -> tuple[int, int]:
        """The smallest decode size that still resizes down (never up) to what the model needs."""
        new_width, new_height = self.resized_size(width, height)
        if self.shortest_edge is None:
            return new_width, new_height
        return min(width, new_width), min(height, new_height)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """uint8 tensor (3, H, W) of an RGB image, resized and cropped."""
        box = self.aspect_crop(*image.size)
        if box != (0, 0, *image.size):
            image = image.crop(box)
        image = image.resize(self.resized_size(*image.size), resample=self.resample)
        array = np.asarray(image, dtype=np.uint8)
        if self.crop_height is not None and self.crop_width is not None:
            array = _centre_crop(array, self.crop_height, self.crop_width, self.centre)
        return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))

    def aspect_crop(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) kept before a shortest-edge resize: all of it, or a 1:4 strip at the centre."""
        if self.shortest_edge is not None:
            short, long = min(width, height), max(width, height)
            if long > MAX_ASPECT * short:  # keep a wide margin around the centre crop, not a huge strip
                keep = MAX_ASPECT * short
                left, top = ((width - keep) // 2, 0) if width > height else (0, (height - keep) // 2)
                return left, top, left + min(width, keep), top + min(height, keep)
        return 0, 0, width, height

    def resize_tensors(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        """:meth:`__call__` on uint8 (3, H, W) tensors where they are (a GPU): the same size rule, crop and centre
        crop, resized by ``torch.nn.functional.interpolate`` with antialiasing, PIL's filter for the model's.

        Not bit-identical to PIL (rounding inside the two resize passes differs): ``bench/stages.py`` measures the
        difference. Images of one size are resized together.
        """
        mode = TENSOR_MODES.get(self.resample)
        if mode is None:
            raise ValueError(f"resampling filter {self.resample} has no tensor equivalent; decode on the CPU")
        out: list[torch.Tensor | None] = [None] * len(images)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            groups.setdefault((int(image.shape[2]), int(image.shape[1])), []).append(i)
        for (width, height), members in groups.items():
            left, top, right, bottom = self.aspect_crop(width, height)
            batch = torch.stack([images[i][:, top:bottom, left:right] for i in members]).float()
            new_width, new_height = self.resized_size(right - left, bottom - top)
            antialias = mode != "nearest-exact"
            resized = torch.nn.functional.interpolate(
                batch, size=(new_height, new_width), mode=mode, antialias=antialias, align_corners=None
            )
            pixels = resized.round_().clamp_(0, 255).to(torch.uint8)
            if self.crop_height is not None and self.crop_width is not None:
                pixels = _centre_crop_tensor(pixels, self.crop_height, self.crop_width, self.centre)
            for i, row in zip(members, pixels.unbind(0), strict=True):
                out[i] = row
        return out  # type: ignore[return-value]

    def stack(self, rows: list[torch.Tensor]) -> torch.Tensor:
        """A worker's rows as one uint8 tensor (n, 3, H, W), in a worker process straight into shared memory (no
        second copy when it is sent to the main process)."""
        width, height = self.output_size()
        out = torch.empty((len(rows), 3, height, width), dtype=torch.uint8)
        if rows and torch.utils.data.get_worker_info() is not None:
            out = out.share_memory_()
        return torch.stack(rows, out=out) if rows else out

    def unstack(self, stacked: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
        """The rows of a worker's tensor, on ``device``."""
        return list(stacked.to(device, non_blocking=True).unbind(0))

    def batch(self, rows: list[torch.Tensor], device: torch.device) -> torch.Tensor:
        """Rows (on ``device``) as one uint8 batch."""
        if not rows:
            width, height = self.output_size()
            return torch.zeros((0, 3, height, width), dtype=torch.uint8, device=device)
        if device.type == "cpu":  # numpy's copy runs on this thread alone: torch's would wake its thread pool,
            return torch.from_numpy(np.stack([row.numpy() for row in rows]))  # whose spinning slows the workers
        return torch.stack(rows)

    def normalise(self, batch: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Float pixels of a uint8 batch (N, 3, H, W), computed where the batch lives, cast to ``dtype``."""
        mean = torch.tensor(self.mean, device=batch.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=batch.device).view(1, 3, 1, 1)
        return ((batch.float() * self.rescale - mean) / std).to(dtype)


def _offset(size: int, crop: int, centre: str) -> int:
    """Where a centre crop of ``crop`` starts in ``size`` (see :attr:`PixelPipeline.centre`)."""
    return round((size - crop) / 2.0) if centre == "round" else (size - crop) // 2


def _centre_crop(array: np.ndarray, crop_height: int, crop_width: int, centre: str = "floor") -> np.ndarray:
    """The processor's centre crop (zero-padding an image smaller than the crop)."""
    height, width = array.shape[:2]
    if height < crop_height or width < crop_width:
        padded = np.zeros((max(height, crop_height), max(width, crop_width), 3), dtype=array.dtype)
        top, left = -(-(padded.shape[0] - height) // 2), -(-(padded.shape[1] - width) // 2)
        padded[top : top + height, left : left + width] = array
        array, height, width = padded, padded.shape[0], padded.shape[1]
    top, left = _offset(height, crop_height, centre), _offset(width, crop_width, centre)
    return array[top : top + crop_height, left : left + crop_width]


def _centre_crop_tensor(batch: torch.Tensor, crop_height: int, crop_width: int, centre: str = "floor") -> torch.Tensor:
    """:func:`_centre_crop` of a uint8 batch (N, 3, H, W)."""
    height, width = batch.shape[2:]
    if height < crop_height or width < crop_width:
        padded = batch.new_zeros((*batch.shape[:2], max(height, crop_height), max(width, crop_width)))
        top, left = -(-(padded.shape[2] - height) // 2), -(-(padded.shape[3] - width) // 2)
        padded[:, :, top : top + height, left : left + width] = batch
        batch, height, width = padded, padded.shape[2], padded.shape[3]
    top, left = _offset(height, crop_height, centre), _offset(width, crop_width, centre)
    return batch[:, :, top : top + crop_height, left : left + crop_width]


def probe_image(width: int = 123, height: int = 87) -> Image.Image:
    """A fixed, non-square RGB test image (smooth gradients plus seeded noise) for comparing preprocessors."""
    rng = np.random.default_rng(0)
    x, y = np.meshgrid(np.linspace(0, 255, width), np.linspace(0, 255, height))
    planes = np.stack([x, y, 255 - (x + y) / 2], axis=-1) + rng.normal(0, 24, (height, width, 3))
    return Image.fromarray(np.clip(planes, 0, 255).astype(np.uint8), "RGB")


def processor_difference(pipeline: PixelPipeline, image_processor: object) -> float:
    """Largest absolute difference between ``pipeline`` and ``image_processor`` on :func:`probe_image` (inf when
    the shapes differ): 0 up to float rounding when the pipeline reproduces the processor."""
    image = probe_image()
    expected = image_processor(images=[image], return_tensors="pt")["pixel_values"]  # type: ignore[operator]
    ours = pipeline.normalise(pipeline(image).unsqueeze(0), torch.float32)
    if tuple(expected.shape) != tuple(ours.shape):
        return float("inf")
    return float((expected.float() - ours).abs().max())
