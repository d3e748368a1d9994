"""Where the pipeline's artifacts live and how each one is read and written: the one module that knows the layout.

Stage scripts read and write through here; the library functions they call take and return arrays and tables.
Names say what they hold: ``references`` are the human captions of the data set, ``generated`` the model's.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from capsearch.io import load_npy, read_csv, save_npy, write_csv, write_text

IMAGES_HEADER = ("image_id", "width", "height")
REFERENCES_HEADER = ("image_id", "caption_index", "caption")
GENERATED_HEADER = ("image_id", "caption")
EXCLUDED_HEADER = ("image_id", "reason")

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class RunLayout:
    """The paths of one pipeline run, relative to the project folder (``RunLayout.under(root)`` joins them to a
    root); dvc.yaml names the same paths."""

    root: Path = Path(".")
    image_zip: Path = Path("data/raw/Flickr8k_Dataset.zip")
    text_zip: Path = Path("data/raw/Flickr8k_text.zip")
    text_dir: Path = Path("data/text")
    subset_images: Path = Path("data/subset/images.csv")
    references: Path = Path("data/subset/references.csv")
    excluded: Path = Path("data/subset/excluded.csv")
    generated: Path = Path("data/captions/generated.csv")
    image_vectors: Path = Path("data/embeddings/images.npy")
    image_ids: Path = Path("data/embeddings/images.ids.txt")
    reference_vectors: Path = Path("data/embeddings/references.npy")
    generated_vectors: Path = Path("data/embeddings/generated.npy")
    reference_clipscore_vectors: Path = Path("data/embeddings/references_clipscore.npy")  # CLIPScore's prefix
    generated_clipscore_vectors: Path = Path("data/embeddings/generated_clipscore.npy")  # CLIPScore's prefix
    text_counts: Path = Path("data/embeddings/texts.json")
    alpha: Path = Path("data/fusion/alpha.json")
    ann_images: Path = Path("data/index/images.faiss")
    ann_generated: Path = Path("data/index/generated.faiss")
    metrics: Path = Path("metrics")

    @classmethod
    def under(cls, root: PathLike) -> RunLayout:
        """The same layout under ``root``."""
        base = Path(root)
        return cls(base, **{f.name: base / f.default for f in fields(cls) if f.name != "root"})


@dataclass(frozen=True)
class References:
    """The human captions of a subset, one row each: ``image_ids[i]`` owns ``texts[i]`` (file order)."""

    image_ids: list[str]
    texts: list[str]

    def by_image(self) -> dict[str, list[str]]:
        """The captions of each image, in file order."""
        grouped: dict[str, list[str]] = {}
        for image_id, text in zip(self.image_ids, self.texts, strict=True):
            grouped.setdefault(image_id, []).append(text)
        return grouped


def write_image_table(path: PathLike, rows: Iterable[tuple[str, int, int]]) -> None:
    """``image_id,width,height`` of the chosen images."""
    write_csv(path, IMAGES_HEADER, list(rows))


def read_image_table_ids(path: PathLike) -> list[str]:
    """The image ids of an ``images.csv`` table, in order."""
    return [row["image_id"] for row in read_csv(path, IMAGES_HEADER)]


def write_references(path: PathLike, rows: Iterable[tuple[str, int, str]]) -> None:
    """``image_id,caption_index,caption``: the human captions of the chosen images."""
    write_csv(path, REFERENCES_HEADER, list(rows))


def read_references(path: PathLike) -> References:
    """The human captions written by :func:`write_references`."""
    rows = read_csv(path, REFERENCES_HEADER)
    return References([row["image_id"] for row in rows], [row["caption"] for row in rows])


def write_generated(path: PathLike, image_ids: Sequence[str], captions: Sequence[str]) -> None:
    """``image_id,caption``: one generated caption per image."""
    write_csv(path, GENERATED_HEADER, list(zip(image_ids, captions, strict=True)))


def read_generated(path: PathLike) -> tuple[list[str], list[str]]:
    """Image ids and their generated captions, row-aligned."""
    rows = read_csv(path, GENERATED_HEADER)
    return [row["image_id"] for row in rows], [row["caption"] for row in rows]


def write_excluded(path: PathLike, rows: Iterable[tuple[str, str]]) -> None:
    """``image_id,reason`` of every image left out."""
    write_csv(path, EXCLUDED_HEADER, list(rows))


def write_ids(path: PathLike, ids: Sequence[str]) -> None:
    """One id per line: the row order of the arrays beside it."""
    write_text(path, "".join(f"{image_id}\n" for image_id in ids))


def read_ids(path: PathLike) -> list[str]:
    """The ids written by :func:`write_ids` (ids may contain spaces; one per line)."""
    return Path(path).read_text(encoding="utf-8").splitlines()


def save_vectors(path: PathLike, vectors: np.ndarray) -> None:
    """Embeddings (rows) as ``.npy``, atomically."""
    save_npy(path, vectors)


def check_rows(name: str, vectors: np.ndarray, rows: int, stage: str = "its stage") -> np.ndarray:
    """``vectors`` if it is a 2-d array of ``rows`` rows, else an error naming the file and the stage to re-run."""
    if vectors.ndim != 2 or len(vectors) != rows:
        raise ValueError(f"{name}: expected {rows} rows, found shape {vectors.shape}; re-run {stage}")
    return vectors


def load_vectors(path: PathLike, rows: int | None = None, stage: str = "its stage", mmap: bool = False) -> np.ndarray:
    """Embeddings saved by :func:`save_vectors`; with ``rows``, checked to have that many (else: re-run ``stage``);
    ``mmap``: memory-mapped and read-only (search galleries)."""
    vectors = load_npy(path, mmap)
    return vectors if rows is None else check_rows(Path(path).name, vectors, rows, stage)
