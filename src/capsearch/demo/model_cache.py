"""The trained toy models, kept outside the repository, keyed by the code that trains them, trained side by side.

Four sets, each with its own key so that changing one never retrains the others: the CLIP and BLIP toys
(:mod:`capsearch.demo.toy_models`), the second families, SigLIP and GIT (:mod:`capsearch.demo.toy_families`), the
open_clip toys (:mod:`capsearch.demo.toy_open_clip`) and the instruction VLMs, PaliGemma and LLaVA
(:mod:`capsearch.demo.toy_vlms`).
Each model of a set is one training run in its own process with one torch thread: on the 2-core machines the
project runs on, two small models trained at once finish in about half the time of one after the other at two
threads each (tiny matrices gain little from a second thread).
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

KEYED_LIBRARIES = ("torch", "transformers", "tokenizers")
REPORT = "toy-report.json"  # in a set's folder: every model's quality on unseen scenes


@dataclass(frozen=True)
class ToyModel:
    """One training run: the folders it saves and its builder (``module:function``, called with the output folder,
    returning its quality on unseen scenes)."""

    names: tuple[str, ...]
    builder: str


@dataclass(frozen=True)
class ToyModelSet:
    """Models keyed together: the modules and libraries that decide them."""

    models: tuple[ToyModel, ...]
    modules: tuple[str, ...]  # the training and scene-generation code
    libraries: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """Every model folder of the set."""
        return tuple(name for model in self.models for name in model.names)

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
        return all(_saved(Path(out_dir), model) for model in self.models)


TOY_MODELS = ToyModelSet(
    (
        ToyModel(("toy-clip", "toy-clip-early"), "capsearch.demo.toy_models:build_toy_clip"),
        ToyModel(("toy-blip", "toy-blip-early"), "capsearch.demo.toy_models:build_toy_blip"),
    ),
    ("capsearch.demo.toy_models", "capsearch.demo.scenes", "capsearch.models.pixels"),
    KEYED_LIBRARIES,
)
TOY_FAMILIES = ToyModelSet(
    (
        ToyModel(("toy-siglip",), "capsearch.demo.toy_families:build_toy_siglip"),
        ToyModel(("toy-git",), "capsearch.demo.toy_families:build_toy_git"),
    ),
    ("capsearch.demo.toy_families", "capsearch.demo.toy_models", "capsearch.demo.scenes", "capsearch.models.pixels"),
    (*KEYED_LIBRARIES, "sentencepiece"),
)
TOY_OPEN_CLIP = ToyModelSet(
    (
        ToyModel(("toy-open-clip",), "capsearch.demo.toy_open_clip:build_toy_open_clip"),
        ToyModel(("toy-biomedclip", "toy-pubmedbert"), "capsearch.demo.toy_open_clip:build_toy_biomedclip"),
    ),
    ("capsearch.demo.toy_open_clip", "capsearch.demo.scenes", "capsearch.models.pixels"),
    (*KEYED_LIBRARIES, "open-clip-torch"),
)
TOY_VLMS = ToyModelSet(
    (
        ToyModel(("toy-paligemma",), "capsearch.demo.toy_vlms:build_toy_paligemma"),
        ToyModel(("toy-llava",), "capsearch.demo.toy_vlms:build_toy_llava"),
    ),
    (
        "capsearch.demo.toy_vlms",
        "capsearch.demo.toy_models",
        "capsearch.demo.scenes",
        "capsearch.models.pixels",
        "capsearch.models.asking",  # they are asked and trained by capsearch's own asking code
    ),
    KEYED_LIBRARIES,
)
TOY_MODEL_NAMES = TOY_MODELS.names


def _saved(out_dir: Path, model: ToyModel) -> bool:
    """Whether every folder of ``model`` holds its weights (transformers' or open_clip's file), or, a text tower
    saved beside an open_clip model, its tokenizer."""
    return all(
        any((out_dir / name).glob("*model.safetensors")) or (out_dir / name / "tokenizer_config.json").is_file()
        for name in model.names
    )


def toy_models_exist(out_dir: str | Path) -> bool:
    """Whether all four CLIP and BLIP toy models are already saved under ``out_dir``."""
    return TOY_MODELS.exist(out_dir)


def _train(builder: str, out_dir: str, threads: int) -> dict[str, float]:
    """One training run (in a pool process): ``builder`` into ``out_dir`` on ``threads`` torch threads."""
    import torch
    import transformers

    torch.set_num_threads(threads)
    transformers.logging.set_verbosity_error()  # toy configs trip warnings meant for real checkpoints
    transformers.utils.logging.disable_progress_bar()
    module, function = builder.split(":")
    started = time.perf_counter()
    report = getattr(importlib.import_module(module), function)(out_dir)
    return {**report, f"seconds_{function.removeprefix('build_')}": round(time.perf_counter() - started, 1)}


def build_models(jobs: Sequence[tuple[ToyModel, Path]], workers: int | None = None) -> dict[Path, dict[str, float]]:
    """Train each (model, folder) of ``jobs`` side by side, one process per core (``workers``; each on
    ``cores // processes`` torch threads). Each model is trained in a temporary folder and moved into its folder when
    done; the reports are merged into each folder's ``toy-report.json``. Returns the reports by folder."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    processes = max(1, min(workers or cores, len(jobs)))
    reports: dict[Path, dict[str, float]] = {}
    scratch: list[Path] = []
    try:
        with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
            running = []
            for model, folder in jobs:
                folder.mkdir(parents=True, exist_ok=True)
                scratch.append(Path(tempfile.mkdtemp(prefix=".training-", dir=folder)))
                threads = max(1, cores // processes)
                running.append(
                    (model, folder, scratch[-1], pool.submit(_train, model.builder, str(scratch[-1]), threads))
                )
            for model, folder, trained, job in running:
                if folder not in reports:
                    path = folder / REPORT
                    reports[folder] = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
                reports[folder].update(job.result())
                for name in model.names:
                    if (folder / name).exists():
                        shutil.rmtree(folder / name)
                    (trained / name).rename(folder / name)
    finally:
        for path in scratch:
            shutil.rmtree(path, ignore_errors=True)
    for folder, report in reports.items():
        (folder / REPORT).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return reports


def set_folder(models: ToyModelSet, root: str | Path | None = None) -> Path:
    """Where a set of toy models lives (see :func:`ensure_toy_models`)."""
    base = Path(root or os.environ.get("CAPSEARCH_TOY_MODELS") or Path.home() / ".cache" / "capsearch" / "toy-models")
    return base.expanduser() / models.key()


def ensure_toy_models(sets: Sequence[ToyModelSet], root: str | Path | None = None) -> list[Path]:
    """The folder of each set, every model in it trained for this code and these library versions.

    They live in ``<root>/<key>`` (``root``: ``$CAPSEARCH_TOY_MODELS``, else ``~/.cache/capsearch/toy-models``);
    editing the training code trains afresh, while tests, ``make demo`` and later runs share one copy. Every missing
    model of every set is trained in one pool, side by side; other processes asking meanwhile wait on a file lock per
    set. A model is moved into its set's folder only when complete, so an interrupted build is never mistaken for a
    finished one.
    """
    folders = [set_folder(models, root) for models in sets]
    if all(models.exist(folder) for models, folder in zip(sets, folders, strict=True)):
        return folders
    with ExitStack() as locks:
        for folder in sorted(set(folders)):
            folder.parent.mkdir(parents=True, exist_ok=True)
            lock = locks.enter_context(open(folder.parent / f".{folder.name}.lock", "w"))
            fcntl.flock(lock, fcntl.LOCK_EX)
        missing = [
            (model, folder)
            for models, folder in zip(sets, folders, strict=True)
            for model in models.models
            if not _saved(folder, model)
        ]
        if missing:
            build_models(missing)
    return folders


def cached_toy_models(root: str | Path | None = None) -> Path:
    """The CLIP and BLIP toys (``toy-clip``, ``toy-clip-early``, ``toy-blip``, ``toy-blip-early``)."""
    return ensure_toy_models([TOY_MODELS], root)[0]


def cached_toy_families(root: str | Path | None = None) -> Path:
    """The SigLIP and GIT toys (``toy-siglip``, ``toy-git``)."""
    return ensure_toy_models([TOY_FAMILIES], root)[0]


def cached_toy_open_clip(root: str | Path | None = None) -> Path:
    """The open_clip toys (``toy-open-clip``; ``toy-biomedclip`` with its text tower ``toy-pubmedbert``)."""
    return ensure_toy_models([TOY_OPEN_CLIP], root)[0]


def cached_toy_vlms(root: str | Path | None = None) -> Path:
    """The instruction VLM toys (``toy-paligemma``: a prefix prompt; ``toy-llava``: a chat template)."""
    return ensure_toy_models([TOY_VLMS], root)[0]
