"""open_clip's ways of naming a model, read from the name alone (no torch, no open_clip import): ``hf-hub:org/name``,
a built-in ``ARCH/TAG`` (``ViT-B-32/laion2b_s34b_b79k``), or a folder holding ``open_clip_config.json``."""

from __future__ import annotations

import difflib
import importlib.util
from functools import cache
from pathlib import Path

from capsearch.models import ModelLoadError

HUB_PREFIX = "hf-hub:"  # open_clip's own prefix for a Hub repo in its layout
OPEN_CLIP_CONFIG = "open_clip_config.json"
# how open_clip's architecture names start (case counts; Hub organisations are lower-case): a name of this shape is
# taken as ARCH/TAG, and refused if ARCH is unknown
ARCH_PREFIXES = ("ViT-", "RN50", "RN101", "EVA0", "EVA-", "MobileCLIP", "ViTamin", "coca_", "convnext_")


@cache
def open_clip_architectures() -> frozenset[str]:
    """The built-in architecture names of the installed open_clip (its ``model_configs`` files, read, not imported)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    folder = Path(next(iter(spec.submodule_search_locations))) / "model_configs"
    return frozenset(path.stem for path in folder.glob("*.json"))


def names_open_clip(model_id: str) -> bool:
    """Whether ``model_id`` names an open_clip model (see the module)."""
    if model_id.startswith(HUB_PREFIX):
        return True
    local = Path(model_id).expanduser()
    if local.is_dir():
        return (local / OPEN_CLIP_CONFIG).is_file() and not (local / "config.json").is_file()
    head, slash, _ = model_id.partition("/")
    return bool(slash) and (head in open_clip_architectures() or head.startswith(ARCH_PREFIXES))


def builtin_architecture(model_id: str, param: str) -> tuple[str, str]:
    """``(ARCH, TAG)`` of a built-in name; an unknown architecture is refused naming ``param`` and close names."""
    architecture, _, tag = model_id.partition("/")
    known = open_clip_architectures()
    if architecture not in known:
        close = difflib.get_close_matches(architecture, sorted(known), n=3, cutoff=0.6)
        hint = f" (close: {', '.join(close)})" if close else ""
        raise ModelLoadError(
            f"{param}: {architecture!r} is not an open_clip architecture{hint}; built-in names are ARCH/TAG with ARCH "
            "one of open_clip.list_models(), or name a Hub repo as hf-hub:org/name"
        )
    if not tag:
        raise ModelLoadError(
            f"{param}: {model_id!r} names no pretrained tag (ARCH/TAG, e.g. ViT-B-32/laion2b_s34b_b79k)"
        )
    return architecture, tag
