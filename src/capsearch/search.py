"""Text search over an index of images: the pipeline's artifacts or a folder indexed by ``capsearch index``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from capsearch.data.flickr8k import IMAGE_SUFFIXES, IMAGE_ZIP_NAME
from capsearch.data.images import ImageReadError, ImageSource
from capsearch.io import load_npy, read_csv, save_npy, write_csv, write_json, write_text
from capsearch.models.blip import BlipCaptioner, DecodingSettings
from capsearch.models.clip import ClipEmbedder
from capsearch.models.runtime import Runtime
from capsearch.params import SEARCH_METHODS
from capsearch.pipeline import caption_and_embed
from capsearch.retrieval import top_k_of_scores

METHODS = SEARCH_METHODS
INDEX_DIR_NAME = ".capsearch"


class IndexNotFoundError(FileNotFoundError):
    """No search index where one was expected; the message says how to make one."""


@dataclass
class ModelRef:
    """A model as recorded with an index: id, revision, precision."""

    model: str
    revision: str | None = "main"
    precision: str = "auto"


@dataclass
class SearchIndex:
    """Images, their CLIP embeddings and their generated captions (with CLIP embeddings), row-aligned."""

    ids: list[str]
    image_vectors: np.ndarray
    captions: list[str]
    caption_vectors: np.ndarray
    source: ImageSource
    clip: ModelRef
    blip: ModelRef | None = None

    def location(self, row: int) -> str:
        """Where row ``row``'s image lives (a file path, or zip:member)."""
        return self.source.describe(self.ids[row])


@dataclass
class Hit:
    """One search result."""

    rank: int
    score: float
    image_id: str
    path: str
    caption: str


def _stage_params(project: Path, stage: str, section: str) -> dict[str, Any] | None:
    """The params a stage last ran with, from dvc.lock (what produced the artifacts)."""
    lock = project / "dvc.lock"
    if not lock.exists():
        return None
    data = yaml.safe_load(lock.read_text(encoding="utf-8")) or {}
    params = (((data.get("stages") or {}).get(stage) or {}).get("params") or {}).get("params.yaml") or {}
    return params.get(section)


def load_pipeline_index(project: str | Path = ".") -> SearchIndex:
    """The index a ``dvc repro`` run left in ``project`` (embeddings, generated captions, model names)."""
    project = Path(project)
    emb = project / "data" / "embeddings"
    needed = {
        emb / "images.npy": "embed_images",
        emb / "images.ids.txt": "embed_images",
        project / "data" / "captions" / "generated.csv": "caption",
        emb / "generated.npy": "embed_texts",
    }
    for path, stage in needed.items():
        if not path.exists():
            raise IndexNotFoundError(
                f"{path} not found: run the pipeline first (`dvc repro {stage}` in {project.resolve()}), "
                "or search a folder indexed with `capsearch index FOLDER` using --index"
            )
    clip = _stage_params(project, "embed_images", "clip") or _params_section(project, "clip")
    blip = _stage_params(project, "caption", "caption") or _params_section(project, "caption")
    ids = (emb / "images.ids.txt").read_text(encoding="utf-8").split()
    generated = read_csv(project / "data" / "captions" / "generated.csv", ["image_id", "caption"])
    if [row["image_id"] for row in generated] != ids:
        raise ValueError("generated captions and image embeddings list different images: run `dvc repro`")
    return SearchIndex(
        ids=ids,
        image_vectors=load_npy(emb / "images.npy"),
        captions=[row["caption"] for row in generated],
        caption_vectors=load_npy(emb / "generated.npy"),
        source=ImageSource(project / "data" / "raw" / IMAGE_ZIP_NAME),
        clip=ModelRef(clip["model"], clip.get("revision"), clip.get("precision", "auto")),
        blip=ModelRef(blip["model"], blip.get("revision"), blip.get("precision", "auto")) if blip else None,
    )


def _params_section(project: Path, name: str) -> dict[str, Any]:
    path = project / "params.yaml"
    if not path.exists():
        raise IndexNotFoundError(f"{path} not found: run capsearch from the project folder, or use --index")
    section = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get(name)
    if not isinstance(section, dict) or "model" not in section:
        raise ValueError(f"{path}: section '{name}' with a 'model' key is missing")
    return section


def find_images(paths: Sequence[str | Path]) -> list[Path]:
    """Image files named by ``paths``: files as given, folders searched recursively, glob patterns expanded.

    Raises FileNotFoundError naming a path that matches nothing (or a folder holding no images).
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            images = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            images = [p for p in images if INDEX_DIR_NAME not in p.relative_to(path).parts]
            if not images:
                raise FileNotFoundError(f"{path}: no images (.jpg, .jpeg, .png, .webp) in this folder")
            found += images
        elif any(ch in str(raw) for ch in "*?["):
            anchor = Path(path.anchor) if path.is_absolute() else Path()
            pattern = str(path.relative_to(anchor)) if path.is_absolute() else str(raw)
            matches = sorted(p for p in anchor.glob(pattern) if p.is_file())
            if not matches:
                raise FileNotFoundError(f"{raw}: no files match this pattern")
            found += matches
        else:
            raise FileNotFoundError(f"{raw}: no such file or folder")
    return found


def readable_images(source: ImageSource, ids: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Split ``ids`` into decodable ones and (id, reason) for the rest."""
    good, bad = [], []
    for image_id in ids:
        try:
            source.check(image_id)
            good.append(image_id)
        except ImageReadError as exc:
            bad.append((image_id, str(exc)))
    return good, bad


def build_folder_index(
    folder: str | Path,
    out_dir: str | Path,
    captioner: BlipCaptioner,
    embedder: ClipEmbedder,
    settings: DecodingSettings,
    runtime: Runtime,
) -> tuple[SearchIndex, list[tuple[str, str]]]:
    """Caption and embed every image under ``folder`` (the pipeline's code path) and save a search index.

    Unreadable images are skipped and returned with the reason (also listed in ``skipped.csv``). With the
    ``runtime``'s result cache, images already captioned/embedded by the same models are not recomputed
    (re-indexing a folder after adding photos only processes the new ones).
    """
    folder = Path(folder).resolve()
    files = find_images([folder])
    source = ImageSource(folder)
    ids, skipped = readable_images(source, [str(p.relative_to(folder)) for p in files])
    if not ids:
        raise FileNotFoundError(f"{folder}: none of the {len(files)} images could be decoded")
    run = caption_and_embed(source, ids, captioner, embedder, settings, runtime)
    out = Path(out_dir)
    save_npy(out / "images.npy", run.image_vectors)
    save_npy(out / "generated.npy", run.generated_vectors)
    write_csv(out / "captions.csv", ["image_id", "caption"], list(zip(ids, run.generated, strict=True)))
    write_csv(out / "skipped.csv", ["image_id", "reason"], skipped)
    clip = ModelRef(embedder.model_id, embedder.source.load_revision, embedder.precision)
    blip = ModelRef(captioner.model_id, captioner.source.load_revision, captioner.precision)
    write_json(
        out / "index.json", {"root": str(folder), "images": len(ids), "clip": asdict(clip), "blip": asdict(blip)}
    )
    write_text(out / "ids.txt", "".join(f"{i}\n" for i in ids))
    index = SearchIndex(ids, run.image_vectors, run.generated, run.generated_vectors, source, clip, blip)
    return index, skipped


def load_folder_index(path: str | Path) -> SearchIndex:
    """An index written by :func:`build_folder_index`; ``path`` is the index folder or the image folder."""
    path = Path(path)
    index_dir = path / INDEX_DIR_NAME if (path / INDEX_DIR_NAME / "index.json").exists() else path
    meta_file = index_dir / "index.json"
    if not meta_file.exists():
        raise IndexNotFoundError(f"{path}: no capsearch index here; make one with `capsearch index FOLDER`")
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    ids = (index_dir / "ids.txt").read_text(encoding="utf-8").splitlines()
    captions = [row["caption"] for row in read_csv(index_dir / "captions.csv", ["image_id", "caption"])]
    return SearchIndex(
        ids=ids,
        image_vectors=load_npy(index_dir / "images.npy"),
        captions=captions,
        caption_vectors=load_npy(index_dir / "generated.npy"),
        source=ImageSource(meta["root"]),
        clip=ModelRef(**meta["clip"]),
        blip=ModelRef(**meta["blip"]),
    )


def gallery_scores(index: SearchIndex, query_vectors: np.ndarray, method: str, alpha: float = 0.5) -> np.ndarray:
    """Scores (queries, images): cosine to the image (``image``), to its generated caption (``caption``), or
    ``alpha * image + (1 - alpha) * caption`` (``fusion``)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be within 0..1, got {alpha}")
    if method == "image":
        return query_vectors @ index.image_vectors.T
    if method == "caption":
        return query_vectors @ index.caption_vectors.T
    return alpha * (query_vectors @ index.image_vectors.T) + (1 - alpha) * (query_vectors @ index.caption_vectors.T)


def search(
    index: SearchIndex, query_vectors: np.ndarray, k: int, method: str = "image", alpha: float = 0.5
) -> list[list[Hit]]:
    """The top ``k`` images for each query vector (already embedded with the index's CLIP)."""
    if k <= 0:
        raise ValueError(f"-k must be at least 1, got {k}")
    order, scores = top_k_of_scores(gallery_scores(index, query_vectors, method, alpha), k)
    return [
        [
            Hit(rank + 1, float(score), index.ids[row], index.location(row), index.captions[row])
            for rank, (row, score) in enumerate(zip(rows, row_scores, strict=True))
        ]
        for rows, row_scores in zip(order, scores, strict=True)
    ]
