"""Search indexes: one format for the pipeline's outputs and for a folder indexed by ``capsearch index``.

An index is row-aligned: image ids, their CLIP embeddings, their generated captions and those captions' CLIP
embeddings, plus what made them (the CLIP and BLIP models, with the commit or revision) and the fusion weight
alpha (tuned on a dev split in the pipeline; none for a folder). A folder index keeps all of it in one folder:

    index.json     {"root", "images", "clip", "captioner", "alpha"} (written last; older indexes say "blip")
    ids.txt        one image id per line (the row order)
    images.npy     image embeddings
    generated.csv  image_id,caption (the generated captions)
    generated.npy  generated-caption embeddings
    skipped.csv    image_id,reason of the unreadable images

The pipeline's outputs hold the same things in its run layout (:mod:`capsearch.artifacts`), the models taken
from ``dvc.lock`` (what produced them) and alpha from ``data/fusion/alpha.json``. :func:`load_index` reads either.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from capsearch.artifacts import (
    RunLayout,
    load_vectors,
    read_generated,
    read_ids,
    read_image_embeddings,
    save_vectors,
    write_excluded,
    write_generated,
    write_ids,
)
from capsearch.data.images import ImageSource, source_images
from capsearch.errors import CapsearchError
from capsearch.finetune.handover import tuned_model
from capsearch.io import atomic_folder, read_yaml, write_json
from capsearch.params import FETCHED_IMAGES, IndexParams

INDEX_DIR_NAME = ".capsearch"


class IndexNotFoundError(CapsearchError, FileNotFoundError):
    """No search index where one was expected; the message says how to make one."""


@dataclass
class ModelRef:
    """A model as recorded with an index: id, revision (the commit, where known), precision."""

    model: str
    revision: str | None = "main"
    precision: str = "auto"


@dataclass
class SearchIndex:
    """Images, their CLIP embeddings and their generated captions (with CLIP embeddings), row-aligned."""

    ids: list[str]
    image_vectors: np.ndarray
    generated: list[str]
    generated_vectors: np.ndarray
    source: ImageSource
    clip: ModelRef
    captioner: ModelRef | None = None
    alpha: float | None = None  # the fusion weight tuned on a dev split, if any
    # nearest-neighbour indexes by search method ("image", "caption"; see attach_ann below): search
    # re-ranks their top ``candidates`` rows exactly; without them it scores every image
    ann: dict[str, Any] = field(default_factory=dict)
    candidates: int = 200
    weak_line: float | None = None  # the image score under which a hit is weak (capsearch.search.weak_below)

    def __post_init__(self) -> None:
        rows = len(self.ids)
        if len(self.generated) != rows or len(self.image_vectors) != rows or len(self.generated_vectors) != rows:
            raise ValueError(
                f"index rows disagree: {rows} ids, {len(self.image_vectors)} image embeddings, "
                f"{len(self.generated)} generated captions, {len(self.generated_vectors)} caption embeddings"
            )

    def location(self, row: int) -> str:
        """Where row ``row``'s image lives (a file path, or zip:member)."""
        return self.source.describe(self.ids[row])


@dataclass(frozen=True)
class _IndexFiles:
    """Where one index's row-aligned files are."""

    ids: Path
    image_vectors: Path
    generated: Path
    generated_vectors: Path


def _read_rows(files: _IndexFiles) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    """Ids, image embeddings, generated captions and their embeddings, checked to list the same images."""
    ids = read_ids(files.ids)
    generated_ids, generated = read_generated(files.generated)
    if generated_ids != ids:
        raise ValueError("generated captions and image embeddings list different images: rebuild the index")
    return (
        ids,
        load_vectors(files.image_vectors, mmap=True),
        generated,
        load_vectors(files.generated_vectors, mmap=True),
    )


def _ran_with(project: Path, stage: str, section: str) -> dict[str, Any]:
    """The params section a stage last ran with, from dvc.lock (what produced the artifacts); params.yaml's where
    the lock has none."""
    lock = project / "dvc.lock"
    if lock.exists():
        data = read_yaml(lock) or {}
        params = (((data.get("stages") or {}).get(stage) or {}).get("params") or {}).get("params.yaml") or {}
        if params.get(section) is not None:
            return params[section]
    from capsearch.params import SECTIONS, load_raw, read_section

    return read_section(load_raw(project / "params.yaml"), SECTIONS[section]).as_yaml()


def _model_ref(project: Path, stage: str, section: str) -> ModelRef:
    values = _ran_with(project, stage, section)
    return ModelRef(values["model"], values.get("revision"), values.get("precision", "auto"))


def _tuned_ref(run: RunLayout, stage: str, section: str, tuned_folder: Path) -> ModelRef:
    """The model ``section`` names as ``stage`` ran with it, or the fine-tuned one in ``tuned_folder`` where its
    fine-tuning stage trained one (finetune_clip, finetune_captioner)."""
    ref = _model_ref(run.root, stage, section)
    tuned = tuned_model(tuned_folder)
    return replace(ref, model=str(tuned.resolve()), revision=None) if tuned is not None else ref


def _run_images(project: Path) -> ImageSource:
    """Where the run's images are: the ``source`` the subset stage ran with."""
    values = _ran_with(project, "subset", "source")
    return source_images(values.get("kind", "flickr8k"), project / values.get("images", FETCHED_IMAGES))


def load_pipeline_index(project: str | Path = ".") -> SearchIndex:
    """The index a ``dvc repro`` run left in ``project`` (embeddings, generated captions, models, alpha)."""
    run = RunLayout.under(project)
    for path, stage in (
        (run.image_vectors, "embed_images"),
        (run.generated, "caption"),
        (run.generated_vectors, "embed_texts"),
    ):
        if not Path(path).exists():
            raise IndexNotFoundError(
                f"{path} not found: run the pipeline first (`dvc repro {stage}` in {run.root.resolve()}), "
                "or search a folder indexed with `capsearch index FOLDER` using --index"
            )
    if not (run.root / "dvc.lock").exists() and not (run.root / "params.yaml").exists():
        raise IndexNotFoundError(f"{run.root.resolve()}: no dvc.lock or params.yaml: run capsearch from the project")
    ids, image_vectors = read_image_embeddings(run.image_vectors)
    generated_ids, generated = read_generated(run.generated)
    if generated_ids != ids:
        raise ValueError("generated captions and image embeddings list different images: re-run the pipeline")
    alpha = json.loads(run.alpha.read_text(encoding="utf-8"))["alpha"] if run.alpha.exists() else None
    return SearchIndex(
        ids,
        image_vectors,
        generated,
        load_vectors(run.generated_vectors, mmap=True),
        source=_run_images(run.root),
        clip=_tuned_ref(run, "embed_images", "clip", run.clip_model),
        captioner=_tuned_ref(run, "caption", "caption", run.captioner_model),
        alpha=alpha,
    )


def _index_dir(path: Path) -> Path:
    """The folder holding a folder index: ``path/.capsearch`` when ``path`` is the indexed image folder."""
    return path / INDEX_DIR_NAME if (path / INDEX_DIR_NAME / "index.json").exists() else path


def _folder_ann_files(index_dir: Path) -> tuple[Path, Path]:
    """The faiss files of a folder index: over the images, and over the generated captions."""
    return index_dir / "images.faiss", index_dir / "generated.faiss"


def folder_files(index_dir: Path) -> _IndexFiles:
    """The row-aligned files of a folder index."""
    return _IndexFiles(
        index_dir / "ids.txt", index_dir / "images.npy", index_dir / "generated.csv", index_dir / "generated.npy"
    )


def write_folder_index(
    index: SearchIndex, out_dir: str | Path, skipped: list[tuple[str, str]], ann: IndexParams | None = None
) -> None:
    """Save ``index`` as a folder index in ``out_dir``, with nearest-neighbour indexes built with ``ann`` (the
    typed defaults if None); ``skipped`` (id, reason) goes to ``skipped.csv``.

    The index is one unit: every file is written to a new folder beside ``out_dir``, which then takes its place
    (the old folder is moved aside first and deleted last). A failure leaves the old index as it was.
    """
    from capsearch.ann import build_index, save_index

    with atomic_folder(out_dir) as building:
        paths = folder_files(building)
        ann = ann or IndexParams()
        save_vectors(paths.image_vectors, index.image_vectors)
        save_vectors(paths.generated_vectors, index.generated_vectors)
        write_generated(paths.generated, index.ids, index.generated)
        write_excluded(building / "skipped.csv", skipped)
        write_ids(paths.ids, index.ids)
        for vectors, path in zip(
            (index.image_vectors, index.generated_vectors), _folder_ann_files(building), strict=True
        ):
            save_index(build_index(vectors, ann), path)
        meta = {
            "root": str(index.source.location),
            "images": len(index.ids),
            "clip": asdict(index.clip),
            "captioner": asdict(index.captioner) if index.captioner else None,
            "alpha": index.alpha,
        }
        write_json(building / "index.json", meta)


def load_folder_index(path: str | Path) -> SearchIndex:
    """An index written by :func:`build_folder_index`; ``path`` is the index folder or the image folder."""
    path = Path(path)
    index_dir = _index_dir(path)
    meta_file = index_dir / "index.json"
    if not meta_file.exists():
        raise IndexNotFoundError(f"{path}: no capsearch index here; make one with `capsearch index FOLDER`")
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    return SearchIndex(
        *_read_rows(folder_files(index_dir)),
        source=ImageSource(meta["root"]),
        clip=ModelRef(**meta["clip"]),
        captioner=ModelRef(**captioner) if (captioner := meta.get("captioner", meta.get("blip"))) else None,
        alpha=meta.get("alpha"),
    )


def load_index(project: str | Path = ".", folder: str | Path | None = None) -> SearchIndex:
    """A folder index when ``folder`` is given, else the pipeline's index in ``project``."""
    return load_folder_index(folder) if folder is not None else load_pipeline_index(project)


def ann_files(project: str | Path = ".", folder: str | Path | None = None) -> tuple[Path, Path]:
    """Where the nearest-neighbour indexes of images and of generated captions live (pipeline or folder index)."""
    if folder is None:
        run = RunLayout.under(project)
        return run.ann_images, run.ann_generated
    return _folder_ann_files(_index_dir(Path(folder)))


def server_file(project: str | Path = ".", folder: str | Path | None = None) -> Path:
    """Where a running ``capsearch serve`` of this index writes its URL (``capsearch search`` looks there)."""
    return ann_files(project, folder)[0].with_name("server.json")


def attach_ann(index: SearchIndex, files: tuple[Path, Path], params: IndexParams) -> SearchIndex:
    """``index`` with its image and generated-caption nearest-neighbour indexes loaded: search then re-ranks their
    top ``params.candidates`` rows exactly. ``params`` also gives the search-time knobs (efSearch, nprobe)."""
    from capsearch.ann import load_index as load_ann

    index.ann = {"image": load_ann(files[0], params), "caption": load_ann(files[1], params)}
    index.candidates = params.candidates
    return index
