"""Flickr30k and COCO with Karpathy's splits: the split files CLIP_benchmark, LAVIS and most papers evaluate on.

``caption_datasets.zip`` (Karpathy and Fei-Fei, "Deep visual-semantic alignments", 2015) holds
``dataset_flickr30k.json`` and ``dataset_coco.json``: ``{"images": [{"filename", "filepath" (COCO only: the
image zip's folder), "split" (train / restval / val / test), "sentences": [{"raw": caption}, ...]}, ...]}``.
Its splits map onto capsearch's: ``test`` → test (Flickr30k: 1,000 images; COCO: the 5K test), ``val`` → dev,
``train`` and ``restval`` → train. An image's id is its file name.

The images:

* Flickr30k: ``flickr30k-images.tar.gz`` (the dataset's own download, after its form), extracted by fetch to
  ``data/raw/flickr30k-images/``;
* COCO: ``val2014.zip``, read in place (member ``val2014/<file name>``). It holds every test, val and restval
  image; the 82,783 ``train`` images of ``train2014.zip`` are not read (see docs/datasets.md).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capsearch.data.flickr8k import AnnotationError, CaptionFile

KARPATHY_ZIP = "caption_datasets.zip"
KARPATHY_FILES = {"flickr30k": "dataset_flickr30k.json", "coco": "dataset_coco.json"}
SPLIT_OF = {"test": "test", "val": "dev", "train": "train", "restval": "train"}
FLICKR30K_IMAGES_ARCHIVE = "flickr30k-images.tar.gz"
FLICKR30K_IMAGES_DIR = "flickr30k-images"
COCO_IMAGES_ZIP = "val2014.zip"
COCO_IMAGES_DIR_IN_ZIP = "val2014/"


@dataclass
class KarpathyAnnotations:
    """One dataset's captions (per file name, in order) and its splits in capsearch's names."""

    captions: CaptionFile
    splits: dict[str, list[str]]
    folders: dict[str, str]  # file name -> its "filepath" (COCO: train2014 / val2014)


def _entry(item: Any, index: int, path: Path) -> tuple[str, str, str, list[str]]:
    """(file name, capsearch split, folder, captions) of the ``index``-th image, or an error naming it."""
    where = f"{path}: images[{index}]"
    if not isinstance(item, Mapping):
        raise AnnotationError(f"{where}: expected an object, got {type(item).__name__}")
    name, split, sentences = item.get("filename"), item.get("split"), item.get("sentences")
    if not isinstance(name, str) or not name.strip():
        raise AnnotationError(f"{where}: missing filename")
    if split not in SPLIT_OF:
        raise AnnotationError(f"{where} ({name}): unknown split {split!r}; expected one of {', '.join(SPLIT_OF)}")
    if not isinstance(sentences, list) or not sentences:
        raise AnnotationError(f"{where} ({name}): no sentences")
    captions = []
    for number, sentence in enumerate(sentences):
        raw = sentence.get("raw") if isinstance(sentence, Mapping) else None
        if not isinstance(raw, str) or not raw.strip():
            raise AnnotationError(f"{where} ({name}): sentences[{number}] has no raw caption")
        captions.append(raw.strip())
    return name, SPLIT_OF[split], str(item.get("filepath") or ""), captions


def parse_karpathy_json(path: str | Path) -> KarpathyAnnotations:
    """Parse ``dataset_<name>.json``; a malformed file or entry is an :class:`AnnotationError` naming it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise AnnotationError(f"{path}: not a readable Karpathy split file ({exc})") from exc
    items = data.get("images") if isinstance(data, Mapping) else None
    if not isinstance(items, list):
        raise AnnotationError(f"{path}: expected an object with an 'images' list")
    captions: dict[str, list[str]] = {}
    splits: dict[str, list[str]] = {"test": [], "dev": [], "train": []}
    folders: dict[str, str] = {}
    for index, item in enumerate(items):
        name, split, folder, texts = _entry(item, index, path)
        if name in captions:
            raise AnnotationError(f"{path}: images[{index}]: {name} appears twice")
        captions[name] = texts
        splits[split].append(name)
        folders[name] = folder
    return KarpathyAnnotations(CaptionFile(captions, len(items)), splits, folders)


@dataclass
class KarpathyFetch:
    """What fetch did for a Flickr30k or COCO source."""

    annotations: Path
    images: Path
    image_count: int
    actions: list[str]


def fetch_karpathy(
    kind: str, split_url: str, split_md5: str, images_url: str, images_md5: str, raw: Path, text: Path
) -> KarpathyFetch:
    """Download (or verify what was placed by hand) the split file and the images of a ``kind`` source.

    ``caption_datasets.zip`` goes to ``raw`` and its ``dataset_<kind>.json`` to ``text``. Flickr30k's
    ``flickr30k-images.tar.gz`` is extracted (traversal-safe) to ``raw/flickr30k-images/`` and deleted; a folder
    already there (extracted by hand) is used as it is. COCO's ``val2014.zip`` is verified and read in place.
    Every download is checked against its MD5; without network access the error says what to place where.
    """
    from capsearch.data.fetch import check_archive, download, safe_extract, safe_extract_tar

    splits = download(split_url, raw / KARPATHY_ZIP, split_md5)
    wanted = KARPATHY_FILES[kind]
    extracted = safe_extract(splits.path, text)
    annotations = next((path for path in extracted if path.name == wanted), None)
    if annotations is None:
        raise FileNotFoundError(f"{splits.path} holds no {wanted}")
    actions = [f"{KARPATHY_ZIP} {splits.action}"]
    if kind == "coco":
        images = download(images_url, raw / COCO_IMAGES_ZIP, images_md5)
        members = check_archive(images.path)
        count = sum(m.filename.startswith(COCO_IMAGES_DIR_IN_ZIP) and not m.is_dir() for m in members)
        actions.append(f"{COCO_IMAGES_ZIP} {images.action} ({count} images checked)")
        return KarpathyFetch(annotations, images.path, count, actions)
    folder = raw / FLICKR30K_IMAGES_DIR
    if folder.is_dir() and any(folder.iterdir()):
        count = sum(1 for _ in folder.iterdir())
        actions.append(f"{FLICKR30K_IMAGES_DIR}/ present ({count} files, placed by hand: not checksummed)")
        return KarpathyFetch(annotations, folder, count, actions)
    archive = download(images_url, raw / FLICKR30K_IMAGES_ARCHIVE, images_md5)
    unpacked = raw / f".{FLICKR30K_IMAGES_DIR}.unpacked"
    safe_extract_tar(archive.path, unpacked)
    inner = unpacked / FLICKR30K_IMAGES_DIR
    if not inner.is_dir():
        raise FileNotFoundError(f"{archive.path} holds no {FLICKR30K_IMAGES_DIR}/ folder")
    inner.replace(folder)
    shutil.rmtree(unpacked)
    archive.path.unlink()
    count = sum(1 for _ in folder.iterdir())
    actions.append(f"{FLICKR30K_IMAGES_ARCHIVE} {archive.action} and extracted ({count} files)")
    return KarpathyFetch(annotations, folder, count, actions)
