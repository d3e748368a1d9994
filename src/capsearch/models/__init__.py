"""BLIP captioning and CLIP embedding wrappers, loaded safely (safetensors only, no remote code)."""

from capsearch.errors import CapsearchError


class ModelLoadError(CapsearchError, RuntimeError):
    """A model could not be loaded; the message names the param, what was tried and how to fix it.

    Defined here, not in ``runtime``, so that catching it does not import torch.
    """
