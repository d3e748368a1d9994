"""Where the pipeline's artifacts live and how each one is read and written: the one module that knows the layout.

Stage scripts read and write through here; the library functions they call take and return arrays and tables.
Names say what they hold: ``references`` are the human captions of the data set, ``generated`` the model's.

The outputs of the stages that run a model over images are sharded, the same for every engine: one part per input
shard (a webdataset ``.tar``; for a zip or folder of images, every :data:`PART_IMAGES` images), each part written
atomically, and a ``manifest.json`` that downstream stages read::

    data/captions/            manifest.json, part-00000.csv (image_id,caption), ...
    data/embeddings/images/   manifest.json, part-00000.npy + part-00000.ids.txt, ...

The manifest records the model and its revision, the dimensions, the rows, every skipped image with its reason,
and per part its key (what computed it: model, code, settings, the part's images and input shard) and the SHA-256
of its files. A part whose key and hashes still match is reused, so an interrupted run resumes shard by shard.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from capsearch.io import load_npy, read_csv, save_npy, write_csv, write_json, write_text

IMAGES_HEADER = ("image_id", "width", "height", "shard")  # shard: the file the image is read from
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
    generated: Path = Path("data/captions")  # parts + manifest.json
    image_vectors: Path = Path("data/embeddings/images")  # parts + manifest.json
    reference_vectors: Path = Path("data/embeddings/references.npy")
    generated_vectors: Path = Path("data/embeddings/generated.npy")
    reference_clipscore_vectors: Path = Path("data/embeddings/references_clipscore.npy")  # CLIPScore's prefix
    generated_clipscore_vectors: Path = Path("data/embeddings/generated_clipscore.npy")  # CLIPScore's prefix
    text_counts: Path = Path("data/embeddings/texts.json")
    alpha: Path = Path("data/fusion/alpha.json")
    ann_images: Path = Path("data/index/images.faiss")
    ann_generated: Path = Path("data/index/generated.faiss")
    metrics: Path = Path("metrics")
    clip_model: Path = Path("data/models/clip")  # finetune_clip's model (or its record of none)
    finetune_clip_log: Path = Path("metrics/finetune_clip")  # DVCLive: metrics.json, plots/metrics/*.tsv
    captioner_model: Path = Path("data/models/captioner")  # finetune_captioner's model (or its record of none)
    finetune_captioner_log: Path = Path("metrics/finetune_captioner")  # DVCLive, as finetune_clip's

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


def write_image_table(path: PathLike, rows: Iterable[tuple[str, int, int, str]]) -> None:
    """``image_id,width,height,shard`` of the chosen images (shard: the zip or ``.tar`` each is read from)."""
    write_csv(path, IMAGES_HEADER, list(rows))


def read_image_table(path: PathLike) -> list[tuple[str, str]]:
    """(image_id, shard) of an ``images.csv`` table, in order."""
    return [(row["image_id"], row["shard"]) for row in read_csv(path, IMAGES_HEADER)]


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
    """Image ids and their generated captions, row-aligned: from a ``generated.csv`` or the caption stage's parts."""
    if Path(path).is_dir():
        ids: list[str] = []
        captions: list[str] = []
        for entry in read_manifest(path, "captions")["parts"]:
            part_ids, part_captions = read_generated(Path(path) / entry["files"][0])
            check_part(path, entry, len(part_ids))
            ids += part_ids
            captions += part_captions
        return ids, captions
    rows = read_csv(path, GENERATED_HEADER)
    return [row["image_id"] for row in rows], [row["caption"] for row in rows]


def write_excluded(path: PathLike, rows: Iterable[tuple[str, str]]) -> None:
    """``image_id,reason`` of every image left out."""
    write_csv(path, EXCLUDED_HEADER, list(rows))


def write_ids(path: PathLike, ids: Sequence[str]) -> None:
    """One id per line (``\\n``): the row order of the arrays beside it. An id holding ``\\n`` or ``\\r`` is refused
    (it would be two lines); any other character, U+2028 and form feeds included, is kept as it is."""
    for image_id in ids:
        if "\n" in image_id or "\r" in image_id:
            raise ValueError(f"image id {image_id!r} holds a line break: rename the file")
    write_text(path, "".join(f"{image_id}\n" for image_id in ids))


def read_ids(path: PathLike) -> list[str]:
    """The ids written by :func:`write_ids`: split at ``\\n`` only (``str.splitlines`` would also split at U+2028,
    U+0085 or a form feed inside an id)."""
    with Path(path).open(encoding="utf-8", newline="") as handle:
        ids = handle.read().split("\n")
    return ids[:-1] if ids[-1] == "" else ids  # the last line's end


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


# ---- sharded outputs -------------------------------------------------------------------------------------------

PART_IMAGES = 1000  # images per part where the source is one zip or folder (a .tar shard is one part however big)
MANIFEST = "manifest.json"
PART_KINDS = {"captions": "caption", "image_embeddings": "embed_images"}  # what each layout holds -> its stage


@dataclass(frozen=True)
class PlannedPart:
    """One output part: the images read from one input shard (or one chunk of a zip), in output order, and what
    identifies those images' bytes (``content``: see :func:`capsearch.engine.with_content`; empty until then)."""

    name: str
    shard: str
    image_ids: tuple[str, ...]
    content: str = ""


def plan_parts(rows: Sequence[tuple[str, str]]) -> list[PlannedPart]:
    """Parts for (image_id, shard) rows in order: a new part where the shard changes, and every
    :data:`PART_IMAGES` rows of a shard that is not a ``.tar`` (the Flickr8k zip)."""
    parts: list[PlannedPart] = []
    for shard, group in itertools.groupby(rows, key=lambda row: row[1]):
        ids = [image_id for image_id, _ in group]
        size = len(ids) if shard.endswith(".tar") else PART_IMAGES
        for start in range(0, len(ids), size):
            parts.append(PlannedPart(f"part-{len(parts):05d}", shard, tuple(ids[start : start + size])))
    return parts


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def read_manifest(directory: PathLike, kind: str) -> dict[str, Any]:
    """The manifest of a sharded output; missing, or of another kind: an error naming the stage to run."""
    path = Path(directory) / MANIFEST
    stage = PART_KINDS[kind]
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run the pipeline first (`dvc repro {stage}`)")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("kind") != kind or not manifest.get("complete"):
        raise ValueError(f"{path}: not a complete {kind} output; re-run `dvc repro {stage}`")
    return manifest


def check_part(directory: PathLike, entry: dict[str, Any], rows: int) -> None:
    """A part's file holds the rows its manifest entry says, else an error naming it."""
    if rows != entry["rows"]:
        raise ValueError(f"{Path(directory) / entry['files'][0]}: {rows} rows, manifest says {entry['rows']}; re-run")


def read_image_embeddings(directory: PathLike) -> tuple[list[str], np.ndarray]:
    """Image ids and their embeddings from the embed_images parts.

    Each part is memory-mapped; one part is returned as it is (read-only), several are copied once into one
    array, so a gallery is never in memory twice.
    """
    manifest = read_manifest(directory, "image_embeddings")
    ids: list[str] = []
    blocks: list[np.ndarray] = []
    for entry in manifest["parts"]:
        vectors_file, ids_file = (Path(directory) / name for name in entry["files"])
        part_ids = read_ids(ids_file)
        block = load_npy(vectors_file, mmap=True)
        check_part(directory, entry, len(part_ids))
        check_rows(vectors_file.name, block, len(part_ids), "embed_images")
        ids += part_ids
        blocks.append(block)
    if not blocks:
        return ids, np.zeros((0, int(manifest.get("dims") or 0)), dtype=np.float32)
    return ids, blocks[0] if len(blocks) == 1 else np.concatenate(blocks)


class PartStore:
    """A sharded output folder written part by part; what a new run may reuse of an earlier (interrupted) one.

    ``identity`` says what computes the parts (model, revision, code, library versions, settings); a part's key adds
    its images and the digest of their bytes (never a file's size or time: a rewrite that keeps both is noticed).
    :meth:`reusable` answers the parts whose key matches and whose files still hash as recorded; :meth:`write`
    stores one part atomically and records it in the manifest at once; :meth:`finish` writes the complete manifest
    and deletes every file no part of it names.
    """

    def __init__(self, directory: PathLike, kind: str, identity: dict[str, Any]) -> None:
        if kind not in PART_KINDS:
            raise ValueError(f"unknown part kind {kind!r}")
        self.directory = Path(directory)
        self.kind = kind
        self.identity = identity
        self.entries: dict[str, dict[str, Any]] = {}  # by part name: this run's finished parts
        previous = self.directory / MANIFEST
        self._earlier: dict[str, dict[str, Any]] = {}
        if previous.exists():
            try:
                self._earlier = {e["key"]: e for e in json.loads(previous.read_text(encoding="utf-8"))["parts"]}
            except (ValueError, KeyError, TypeError):
                self._earlier = {}  # unreadable: nothing is reused

    def key(self, part: PlannedPart) -> str:
        """What decides a part's content: the store's identity, the part's images and their bytes' digest."""
        if not part.content:
            raise ValueError(f"{part.name}: no content digest of its images; plan it with engine.with_content")
        blob = {
            **self.identity,
            "name": part.name,
            "shard": part.shard,
            "content": part.content,
            "images": list(part.image_ids),
        }
        return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()

    def reusable(self, part: PlannedPart) -> bool:
        """Whether an earlier run finished this part with the same key and its files are intact (then kept)."""
        entry = self._earlier.get(self.key(part))
        if entry is None or entry.get("name") != part.name:
            return False
        paths = [self.directory / name for name in entry["files"]]
        if not all(p.exists() and _sha256(p) == digest for p, digest in zip(paths, entry["sha256"], strict=True)):
            return False
        self.entries[part.name] = entry
        return True

    def write(
        self, part: PlannedPart, ids: Sequence[str], values: Any, skipped: Sequence[tuple[str, str]], **facts: Any
    ) -> dict[str, Any]:
        """Store one finished part (``values``: captions, or an embedding array) and record it in the manifest."""
        if self.kind == "captions":
            files = [f"{part.name}.csv"]
            write_generated(self.directory / files[0], ids, values)
        else:
            files = [f"{part.name}.npy", f"{part.name}.ids.txt"]
            vectors = np.asarray(values, dtype=np.float32)
            save_vectors(self.directory / files[0], vectors)
            write_ids(self.directory / files[1], ids)
            facts["dims"] = int(vectors.shape[1]) if vectors.ndim == 2 else 0
        entry = {
            "name": part.name,
            "shard": part.shard,
            "key": self.key(part),
            "rows": len(ids),
            "skipped": [list(row) for row in skipped],
            "files": files,
            "sha256": [_sha256(self.directory / name) for name in files],
            **facts,
        }
        self.entries[part.name] = entry
        self._write_manifest(complete=False)
        return entry

    def finish(self, parts: Sequence[PlannedPart], **facts: Any) -> dict[str, Any]:
        """The complete manifest (parts in plan order); files of no part are removed. Every part must be done."""
        missing = [p.name for p in parts if p.name not in self.entries]
        if missing:
            raise RuntimeError(f"{self.directory}: parts {', '.join(missing[:5])} were never written")
        self.entries = {p.name: self.entries[p.name] for p in parts}
        manifest = self._write_manifest(complete=True, **facts)
        keep = {MANIFEST, *(name for e in self.entries.values() for name in e["files"])}
        for path in self.directory.iterdir():
            if path.is_file() and path.name not in keep:
                path.unlink()
        return manifest

    def _write_manifest(self, complete: bool, **facts: Any) -> dict[str, Any]:
        entries = list(self.entries.values())
        manifest = {
            "kind": self.kind,
            "complete": complete,
            **self.identity,
            **facts,
            "rows": sum(e["rows"] for e in entries),
            "dims": max((e.get("dims", 0) for e in entries), default=0) if self.kind == "image_embeddings" else None,
            "skipped": [[*row, e["shard"]] for e in entries for row in e["skipped"]],
            "parts": entries,
        }
        write_json(self.directory / MANIFEST, manifest)
        return manifest
