"""``runtime.decode``: where images are decoded, and the GPU's JPEG decoder (nvJPEG through torchvision).

torchvision is not a dependency: PyPI's build does not import beside the CPU torch of the project's CI machines.
On a GPU machine that has it, ``auto`` decodes plain JPEGs on the GPU; ``gpu`` asked for without CUDA or without
torchvision's decoder is one error naming the param. The GPU path is not bit-identical to PIL's (libjpeg's IDCT
and PIL's rounding differ from nvJPEG's and torch's resize): ``bench/stages.py`` measures how much, and the decode
path is part of every result-cache and part key, so results of the two paths are never mixed.
"""

from __future__ import annotations

from typing import Any

import torch

from capsearch.models.loader import JpegDecoder
from capsearch.models.pixels import TENSOR_MODES, PixelPipeline
from capsearch.params import DECODE_PATHS


def torchvision_decoder() -> tuple[Any, str]:
    """torchvision's ``decode_jpeg`` and ``ImageReadMode``, or (None, why it cannot be imported)."""
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except Exception as exc:  # ImportError, or PyPI's torchvision beside a CPU torch: RuntimeError at import
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return None, f"torchvision cannot be imported ({first})"
    return (decode_jpeg, ImageReadMode), ""


def resolve_decode(name: str, device: torch.device, pipeline: object = None) -> str:
    """``cpu`` or ``gpu`` for ``runtime.decode``: ``auto`` picks the GPU on CUDA where torchvision's decoder imports
    (and the model's resize filter has a tensor equivalent); ``gpu`` where that cannot work is an error naming the
    param."""
    if name not in DECODE_PATHS:
        raise ValueError(f"runtime.decode: unknown decode path {name!r}; choose one of {', '.join(DECODE_PATHS)}")
    if name == "cpu":
        return "cpu"
    why = ""
    if device.type != "cuda":
        why = f"the model runs on {device.type}, not on a CUDA GPU"
    elif pipeline is not None and not isinstance(pipeline, PixelPipeline):
        why = "the model's own processor prepares its images (tiles or a patch grid per image) on the CPU"
    elif pipeline is not None and pipeline.resample not in TENSOR_MODES:
        why = f"the model's resize filter ({pipeline.resample}) has no GPU equivalent"
    else:
        why = torchvision_decoder()[1]
    if not why:
        return "gpu"
    if name == "gpu":
        raise ValueError(
            f"runtime.decode: 'gpu' needs a CUDA GPU and torchvision with its nvJPEG decoder, but {why}; "
            "use 'auto' or 'cpu'"
        )
    return "cpu"


def jpeg_decoder(device: torch.device) -> JpegDecoder:
    """A decoder of JPEG files (1-d uint8 tensors) into RGB uint8 (3, H, W) tensors on ``device``, in batches.

    A batch the decoder refuses is retried image by image; an image it still refuses is None (the caller sends it
    through the CPU path).
    """
    found, why = torchvision_decoder()
    if found is None:
        raise ValueError(f"runtime.decode: 'gpu' needs torchvision, but {why}")
    decode_jpeg, read_mode = found

    def decode(files: list[torch.Tensor]) -> list[torch.Tensor | None]:
        try:
            return list(decode_jpeg(files, mode=read_mode.RGB, device=device))
        except RuntimeError:
            pass
        out: list[torch.Tensor | None] = []
        for data in files:
            try:
                out.append(decode_jpeg(data, mode=read_mode.RGB, device=device))
            except RuntimeError:
                out.append(None)
        return out

    return decode
