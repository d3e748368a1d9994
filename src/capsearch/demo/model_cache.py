"""The trained toy models, kept outside the repository and keyed by the code that trains them.

Two sets, each with its own key so that adding one never retrains the other: the CLIP and BLIP toys
(:mod:`capsearch.demo.toy_models`) and the second families, SigLIP and GIT (:mod:`capsearch.demo.toy_families`).
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

KEYED_LIBRARIES = ("torch", "transformers", "tokenizers")


@dataclass(frozen=True)
class ToyModelSet:
    """Models trained together: their folder names, the modules and libraries that decide them, their builder."""

    names: tuple[str, ...]
    modules: tuple[str, ...]  # the training and scene-generation code
    libraries: tuple[str, ...]
    builder: str  # "module:function", called with the output folder

    def key(self) -> str:
        """What decides the trained models: the training and scene-generation code, and the library versions."""
        digest = hashlib.sha256()
        for module in self.modules:
            spec = importlib.util.find_spec(module)
            assert spec is not None and spec.origin is not None, module
            digest.update(Path(spec.origin).read_bytes())
        for library in self.libraries:
            digest.update(importlib.metadata.version(library).encode() + b"\0")
        return digest.hexdigest()[:16]

    def exist(self, out_dir: str | Path) -> bool:
        """Whether every model of the set is already saved under ``out_dir``."""
        return all((Path(out_dir) / name / "model.safetensors").exists() for name in self.names)


TOY_MODELS = ToyModelSet(
    ("toy-clip", "toy-clip-early", "toy-blip", "toy-blip-early"),
    ("capsearch.demo.toy_models", "capsearch.demo.scenes"),
    KEYED_LIBRARIES,
    "capsearch.demo.toy_models:build_toy_models",
)
TOY_FAMILIES = ToyModelSet(
    ("toy-siglip", "toy-git"),
    ("capsearch.demo.toy_families", "capsearch.demo.toy_models", "capsearch.demo.scenes"),
    (*KEYED_LIBRARIES, "sentencepiece"),
    "capsearch.demo.toy_families:build_toy_families",
)
TOY_MODEL_NAMES = TOY_MODELS.names


def toy_models_key() -> str:
    """The key of the CLIP and BLIP toys (see :meth:`ToyModelSet.key`)."""
    return TOY_MODELS.key()


def toy_models_exist(out_dir: str | Path) -> bool:
    """Whether all four CLIP and BLIP toy models are already saved under ``out_dir``."""
    return TOY_MODELS.exist(out_dir)


def cached_models(models: ToyModelSet, root: str | Path | None = None) -> Path:
    """A set of toy models for this code and these library versions, trained once and kept outside the repository.

    They live in ``<root>/<key>`` (``root``: ``$CAPSEARCH_TOY_MODELS``, else ``~/.cache/capsearch/toy-models``);
    editing the training code trains afresh, while tests, ``make demo`` and later runs share one copy. One process
    trains while the others wait for it (a file lock), into a temporary folder renamed at the end, so an
    interrupted build is never mistaken for a finished one.
    """
    base = Path(root or os.environ.get("CAPSEARCH_TOY_MODELS") or Path.home() / ".cache" / "capsearch" / "toy-models")
    target = base.expanduser() / models.key()
    if models.exist(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if models.exist(target):
            return target
        module, function = models.builder.split(":")
        building = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            getattr(importlib.import_module(module), function)(building)
            if target.exists():
                shutil.rmtree(target)
            building.rename(target)
        finally:
            if building.exists():
                shutil.rmtree(building)
    return target


def cached_toy_models(root: str | Path | None = None) -> Path:
    """The CLIP and BLIP toys (``toy-clip``, ``toy-clip-early``, ``toy-blip``, ``toy-blip-early``)."""
    return cached_models(TOY_MODELS, root)


def cached_toy_families(root: str | Path | None = None) -> Path:
    """The SigLIP and GIT toys (``toy-siglip``, ``toy-git``)."""
    return cached_models(TOY_FAMILIES, root)
