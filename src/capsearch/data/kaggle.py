"""Kaggle's Flickr8k layout (``Images/`` + ``captions.txt``) packed into the release's two zips.

The rest of the pipeline then reads it exactly like the release: images straight from a zip (stored, not
recompressed), annotations extracted from the text zip. Split files and expert judgments found beside
``captions.txt`` are packed too; without split files only ``subset.split: all`` works.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

from capsearch.data.flickr8k import (
    IMAGE_SUFFIXES,
    IMAGE_ZIP_NAME,
    IMAGES_DIR_IN_ZIP,
    KAGGLE_CAPTIONS,
    KAGGLE_IMAGES_DIR,
    SPLIT_FILES,
    TEXT_ZIP_NAME,
    parse_kaggle_captions,
)
from capsearch.io import atomic_path

EXTRA_TEXT_FILES = (*SPLIT_FILES.values(), "ExpertAnnotations.txt", "CrowdFlowerAnnotations.txt")


@dataclass
class PackedKaggle:
    """What was packed: image files, captioned images, and the text files."""

    images: int
    captioned_images: int
    text_files: list[str]


def pack_kaggle_folder(folder: str | Path, raw_dir: str | Path) -> PackedKaggle:
    """Write ``Flickr8k_Dataset.zip`` and ``Flickr8k_text.zip`` in ``raw_dir`` from a Kaggle-layout folder.

    ``captions.txt`` is parsed first, so a malformed file fails (naming file:line) before anything is written.
    """
    folder = Path(folder).expanduser()
    images_dir, captions = folder / KAGGLE_IMAGES_DIR, folder / KAGGLE_CAPTIONS
    if not images_dir.is_dir() or not captions.is_file():
        raise FileNotFoundError(
            f"fetch.kaggle_dir: {folder} must hold {KAGGLE_IMAGES_DIR}/ and {KAGGLE_CAPTIONS} "
            "(Kaggle's Flickr8k layout)"
        )
    parsed = parse_kaggle_captions(captions)
    files = sorted(p for p in images_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"fetch.kaggle_dir: no image files in {images_dir}")
    raw = Path(raw_dir)
    with atomic_path(raw / IMAGE_ZIP_NAME) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
        for path in files:
            archive.write(path, IMAGES_DIR_IN_ZIP + path.name)
    text_files = [KAGGLE_CAPTIONS] + [name for name in EXTRA_TEXT_FILES if (folder / name).is_file()]
    with atomic_path(raw / TEXT_ZIP_NAME) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in text_files:
            archive.write(folder / name, name)
    return PackedKaggle(len(files), len(parsed.captions), text_files)
