"""Device, precision and safe model loading shared by the BLIP and CLIP wrappers."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import torch

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
DEVICES = ("auto", "cpu", "cuda")
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

T = TypeVar("T")


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message names the param, what was tried and how to fix it."""


def resolve_device(name: str, param: str = "runtime.device") -> torch.device:
    """``auto`` picks CUDA when available; ``cuda`` without a GPU is an error naming ``param``."""
    if name not in DEVICES:
        raise ValueError(f"{param}: unknown device {name!r}; choose one of {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{param}: 'cuda' requested but torch sees no CUDA GPU; use 'auto' or 'cpu'")
    return torch.device(name)


def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bf16 matrix instructions (AVX512-BF16 or AMX)."""
    checker = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    if checker is not None:
        try:
            return bool(checker())
        except RuntimeError:
            pass
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(name: str, device: torch.device, param: str = "precision") -> torch.dtype:
    """``auto``: bf16 (or fp16) on CUDA, bf16 on CPUs with native support, else fp32."""
    if name not in PRECISIONS:
        raise ValueError(f"{param}: unknown precision {name!r}; choose one of {', '.join(PRECISIONS)}")
    if name != "auto":
        return _DTYPES[name]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_supports_bf16() else torch.float32


def precision_name(dtype: torch.dtype) -> str:
    """The short name (fp32/fp16/bf16) of a dtype."""
    return {v: k for k, v in _DTYPES.items()}[dtype]


def load_pretrained(
    loader: Any, model_id: str, revision: str | None, param: str, weights: bool = True, **kwargs: Any
) -> Any:
    """``loader.from_pretrained`` with safetensors only and no remote code, with a one-line error.

    ``model_id`` is a local folder (saved with ``save_pretrained``) or a Hugging Face Hub id pinned by
    ``revision``. A folder with only a pickle checkpoint is refused.
    ``weights=False`` loads a processor or tokenizer (no checkpoint).
    """
    local = Path(model_id).expanduser()
    if local.is_dir():
        has_config = (local / "config.json").exists()
        if has_config and not any(local.glob("*.safetensors")) and any(local.glob("*.bin")):
            raise ModelLoadError(
                f"{param}: {local} has only a pickle checkpoint (*.bin); capsearch loads safetensors only. "
                "Convert it with save_pretrained(..., safe_serialization=True)."
            )
    elif model_id.startswith((".", "/", "~")):
        raise ModelLoadError(f"{param}: local model folder {model_id!r} does not exist")
    try:
        if weights:
            kwargs["use_safetensors"] = True
        return loader.from_pretrained(model_id, revision=revision, **kwargs)
    except (OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            f"{param}: could not load {model_id!r} (revision {revision!r}): not a local folder and not "
            f"available from the Hugging Face Hub or its cache ({first_line}). Set {param} to a folder "
            "saved with save_pretrained, or run once with network access to fill the cache."
        ) from exc


def batch_loader(dataset: Any, batch_size: int, num_workers: int, device: torch.device) -> Any:
    """A DataLoader that decodes and preprocesses in ``num_workers`` processes, in dataset order."""
    from torch.utils.data import DataLoader

    if batch_size <= 0:
        raise ValueError(f"runtime.batch_size: expected a positive integer, got {batch_size}")
    if num_workers < 0:
        raise ValueError(f"runtime.num_workers: expected 0 or more, got {num_workers}")
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
