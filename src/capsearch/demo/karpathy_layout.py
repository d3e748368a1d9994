"""Generated Flickr30k and COCO in their exact download layouts, with Karpathy split files.

* ``caption_datasets.zip`` holding ``dataset_flickr30k.json`` and ``dataset_coco.json`` in Karpathy's format
  (``images`` with ``filename``, ``filepath``, ``split``, ``sentences[].raw``, ``tokens``, ids);
* Flickr30k: ``flickr30k-images.tar.gz`` with ``flickr30k-images/<id>.jpg``;
* COCO: ``val2014.zip`` with ``val2014/COCO_val2014_<12 digits>.jpg`` for the test, val and restval images; the
  ``train`` images are listed with ``filepath: train2014`` and, as with capsearch's fetch, not downloaded.

Image i goes to test when i % 8 == 0, to val when i % 8 == 1, else (COCO) to restval when i % 8 == 2, else train.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import zipfile
from pathlib import Path

from capsearch.data.karpathy import (
    COCO_IMAGES_DIR_IN_ZIP,
    COCO_IMAGES_ZIP,
    FLICKR30K_IMAGES_ARCHIVE,
    FLICKR30K_IMAGES_DIR,
    KARPATHY_FILES,
    KARPATHY_ZIP,
)
from capsearch.demo.scenes import generate_scenes, zip_member
from capsearch.io import atomic_path


def _split(kind: str, index: int) -> str:
    if index % 8 == 0:
        return "test"
    if index % 8 == 1:
        return "val"
    return "restval" if kind == "coco" and index % 8 == 2 else "train"


def _name(kind: str, index: int, split: str) -> tuple[str, str]:
    """(filepath, filename) of image ``index``."""
    if kind == "flickr30k":
        return "", f"{1_000_092_795 + index * 7919}.jpg"
    folder = "train2014" if split == "train" else "val2014"
    return folder, f"COCO_{folder}_{100_000 + index * 37:012d}.jpg"


def karpathy_json(kind: str, scenes: list, names: list[tuple[str, str]]) -> dict:
    """The Karpathy split file of ``kind`` for the generated scenes."""
    items = []
    for index, ((_, captions), (folder, filename)) in enumerate(zip(scenes, names, strict=True)):
        sentences = [
            {"tokens": c.split(), "raw": c.capitalize() + ".", "imgid": index, "sentid": 5 * index + j}
            for j, c in enumerate(captions)
        ]
        item = {"filepath": folder, "sentids": [s["sentid"] for s in sentences], "filename": filename}
        item.update({"imgid": index, "split": _split(kind, index), "sentences": sentences})
        if kind == "coco":
            item["cocoid"] = int(filename.rsplit("_", 1)[1].split(".")[0])
        items.append(item)
    return {"images": items, "dataset": kind}


def write_karpathy_layout(kind: str, out_dir: str | Path, count: int, seed: int = 0) -> dict[str, Path]:
    """Write ``count`` generated scenes as the ``kind`` (flickr30k / coco) downloads; returns their paths.
    Byte-identical for the same arguments (fixed member times, a gzip header without a time), so an MD5 taken of one
    call holds for the next."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scenes = [(image, captions) for _, image, captions in generate_scenes(count, seed)]
    names = [_name(kind, i, _split(kind, i)) for i in range(count)]
    splits_zip = out / KARPATHY_ZIP
    with atomic_path(splits_zip) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for other in KARPATHY_FILES.values():  # both files, as in the real zip; each source reads its own
            data = karpathy_json(kind, [(None, c) for _, c in scenes], names) if other == KARPATHY_FILES[kind] else {}
            zip_member(archive, other, json.dumps(data or {"images": [], "dataset": "other"}))
    jpegs = {}
    for (image, _), (folder, filename) in zip(scenes, names, strict=True):
        if folder == "train2014":
            continue  # COCO's train images live in train2014.zip, which capsearch does not read
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        jpegs[filename] = buffer.getvalue()
    if kind == "coco":
        images = out / COCO_IMAGES_ZIP
        with atomic_path(images) as tmp, zipfile.ZipFile(tmp, "w") as archive:
            for filename, data in jpegs.items():
                zip_member(archive, COCO_IMAGES_DIR_IN_ZIP + filename, data, zipfile.ZIP_STORED)
    else:
        images = out / FLICKR30K_IMAGES_ARCHIVE
        with (
            atomic_path(images) as tmp,
            tmp.open("wb") as file,
            gzip.GzipFile(fileobj=file, mode="wb", mtime=0, filename="") as packed,
            tarfile.open(fileobj=packed, mode="w") as archive,
        ):
            for filename, data in jpegs.items():
                info = tarfile.TarInfo(f"{FLICKR30K_IMAGES_DIR}/{filename}")
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return {"splits": splits_zip, "images": images}
