"""The trained toy models, kept outside the repository and keyed by the code that trains them."""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

TOY_MODEL_NAMES = ("toy-clip", "toy-clip-early", "toy-blip", "toy-blip-early")
KEYED_MODULES = ("capsearch.demo.toy_models", "capsearch.demo.scenes")  # the training and scene-generation code
KEYED_LIBRARIES = ("torch", "transformers", "tokenizers")


def toy_models_key() -> str:
    """What decides the trained toy models: the training and scene-generation code, and the library versions."""
    digest = hashlib.sha256()
    for module in KEYED_MODULES:
        spec = importlib.util.find_spec(module)
        assert spec is not None and spec.origin is not None, module
        digest.update(Path(spec.origin).read_bytes())
    for library in KEYED_LIBRARIES:
        digest.update(importlib.metadata.version(library).encode() + b"\0")
    return digest.hexdigest()[:16]


def toy_models_exist(out_dir: str | Path) -> bool:
    """Whether all four toy models are already saved under ``out_dir``."""
    return all((Path(out_dir) / name / "model.safetensors").exists() for name in TOY_MODEL_NAMES)


def cached_toy_models(root: str | Path | None = None) -> Path:
    """The toy models for this code and these library versions, trained once and kept outside the repository.

    They live in ``<root>/<key>`` (``root``: ``$CAPSEARCH_TOY_MODELS``, else ``~/.cache/capsearch/toy-models``);
    the key is :func:`toy_models_key`, so editing the training code trains afresh, while tests, ``make demo``
    and later runs share one copy. One process trains while the others wait for it (a file lock), into a
    temporary folder renamed at the end, so an interrupted build is never mistaken for a finished one.
    """
    base = Path(root or os.environ.get("CAPSEARCH_TOY_MODELS") or Path.home() / ".cache" / "capsearch" / "toy-models")
    target = base.expanduser() / toy_models_key()
    if toy_models_exist(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if toy_models_exist(target):
            return target
        from capsearch.demo.toy_models import build_toy_models

        building = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            build_toy_models(building)
            if target.exists():
                shutil.rmtree(target)
            building.rename(target)
        finally:
            if building.exists():
                shutil.rmtree(building)
    return target
