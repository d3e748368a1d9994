"""A folder of images with their captions in the Hugging Face ImageFolder convention.

``metadata.jsonl`` (one JSON object per line) or ``metadata.csv`` beside the images, each row a ``file_name``
relative to the metadata file and a caption in the column ``source.caption_column`` (``text`` by default): a string,
or in JSON lines a list of strings; a file named on several rows has all their captions. Splits come from the
column ``source.split_column`` where set, else from ``train/``, ``validation/`` (or ``valid/``, ``dev/``) and
``test/`` subfolders with a metadata file each (as ImageFolder reads them), else from the stable hash of the file
name that the webdataset source uses (:func:`capsearch.data.webdataset.split_of`: 80/10/10). Image ids are the
files' paths relative to the folder (``train/0001.png``).

A bad metadata file is one error naming the file and the line: a file that is not UTF-8, invalid JSON or CSV, a
missing column, a file name that is not there, that leaves the folder, that is too long for the file system or holds
a control character or line break (an image id is one line of the stages' id files), text that is no Unicode (a
lone surrogate escape such as ``"\\ud800"``), an empty caption, an unknown split. JSON lines end at ``\\n`` only: a
raw U+2028 or U+0085 inside a caption is part of it. Metadata both at the top and in split folders is refused (which
one counts would be a guess).
"""

from __future__ import annotations

import csv
import io
import json
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from capsearch.data.webdataset import split_of
from capsearch.errors import CapsearchError

METADATA_FILES = ("metadata.jsonl", "metadata.csv")
# the split folders Hugging Face's ImageFolder reads (val/ and valid/ as validation), as capsearch's splits
SPLIT_FOLDERS = {"train": "train", "validation": "dev", "valid": "dev", "val": "dev", "dev": "dev", "test": "test"}
SPLIT_NAMES = SPLIT_FOLDERS  # values of source.split_column, lower-cased


class MetadataError(CapsearchError, ValueError):
    """A metadata file that cannot be read as an ImageFolder caption file (the message names file and line)."""


@dataclass
class ImageFolderCaptions:
    """Every captioned image of the folder (id: path relative to it) with its captions, and the split of each."""

    captions: dict[str, list[str]] = field(default_factory=dict)
    split_of: dict[str, str] = field(default_factory=dict)
    split_from: str = "hash"  # column | folders | hash


def metadata_files(root: Path) -> list[Path]:
    """The metadata files of ``root``: its own, or one in each split subfolder."""
    own = [root / name for name in METADATA_FILES if (root / name).is_file()]
    if len(own) > 1:
        raise MetadataError(f"{root}: both metadata.jsonl and metadata.csv; keep one")
    found = []
    for folder in sorted(SPLIT_FOLDERS):
        files = [root / folder / name for name in METADATA_FILES if (root / folder / name).is_file()]
        if len(files) > 1:
            raise MetadataError(f"{root / folder}: both metadata.jsonl and metadata.csv; keep one")
        found += files
    if own and found:
        raise MetadataError(
            f"{root}: metadata both at the top ({own[0].name}) and in split folders ({found[0].relative_to(root)}); "
            "keep one layout: one file at the top (splits from source.split_column or by hash), or one per split folder"
        )
    if own:
        return own
    if not found:
        raise MetadataError(
            f"{root}: no metadata.jsonl or metadata.csv (nor in train/, validation/, test/): an imagefolder source "
            "needs one with a file_name and a caption column"
        )
    return found


def _rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) of a metadata file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise MetadataError(
            f"{path}:{line}: not UTF-8 (byte 0x{exc.object[exc.start]:02x}); save the file as UTF-8"
        ) from None
    if path.suffix == ".jsonl":
        for number, line in enumerate(text.split("\n"), start=1):  # JSON lines end at \n (U+2028 is text)
            line = line.removesuffix("\r")
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise MetadataError(f"{path}:{number}: invalid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise MetadataError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
            yield number, row
        return
    with io.StringIO(text, newline="") as handle:
        reader = csv.DictReader(handle, strict=True)
        done = 1  # the last line of the last record read (the header's, first)
        try:
            for row in reader:
                if None in row or any(value is None for value in row.values()):
                    raise MetadataError(
                        f"{path}:{reader.line_num}: expected {len(reader.fieldnames or [])} columns "
                        f"({', '.join(reader.fieldnames or [])})"
                    )
                done = reader.line_num
                yield reader.line_num, row
        except csv.Error as exc:  # the record that starts after the last good one
            raise MetadataError(f"{path}:{done + 1}: invalid CSV ({exc})") from None


def caption_texts(value: Any, where: str, column: str, error: type[ValueError] = MetadataError) -> list[str]:
    """A caption cell as a list of stripped texts (a text, or a list of texts); ``error`` names ``where`` when it is
    not text, is empty or holds none."""
    values = value if isinstance(value, list) else [value]
    texts = []
    for text in values:
        if not isinstance(text, str):
            raise error(f"{where}: {column} must be text or a list of texts, got {text!r}")
        if not is_unicode(text):
            raise error(f"{where}: {column} {text!r} holds a lone surrogate (an escape such as \\ud800), not text")
        if not text.strip():
            raise error(f"{where}: empty caption in column {column!r}")
        texts.append(text.strip())
    if not texts:
        raise error(f"{where}: no caption in column {column!r}")
    return texts


def is_unicode(text: str) -> bool:
    """Whether ``text`` is Unicode text (no lone surrogate, which JSON's ``\\ud800`` escapes can make)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def name_problem(name: str) -> str | None:
    """Why a file name cannot be an image id (one line of the stages' id files, one CSV cell), or None."""
    if not is_unicode(name):
        return "holds a lone surrogate (an escape such as \\ud800), not text"
    bad = next((ch for ch in name if unicodedata.category(ch) == "Cc"), None)
    if bad is not None:
        return f"holds a control character (U+{ord(bad):04X}; line breaks among them); rename the file"
    return None


def read_imagefolder(
    root: str | Path, caption_column: str = "text", split_column: str | None = None
) -> ImageFolderCaptions:
    """The captions and splits of the ImageFolder at ``root`` (see the module's docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"imagefolder source not found: {root}")
    result = ImageFolderCaptions()
    files = metadata_files(root)
    by_folder = files[0].parent != root
    result.split_from = "column" if split_column else ("folders" if by_folder else "hash")
    base = root.resolve()
    for path in files:
        for number, row in _rows(path):
            where = f"{path}:{number}"
            for column in ("file_name", caption_column, *([split_column] if split_column else [])):
                if column not in row:
                    raise MetadataError(f"{where}: no {column!r} column (the row has {', '.join(row)})")
            name = row["file_name"]
            if not isinstance(name, str) or not name.strip():
                raise MetadataError(f"{where}: file_name must be a relative path, got {name!r}")
            problem = name_problem(name)
            if problem:
                raise MetadataError(f"{where}: file_name {name!r} {problem}")
            relative = PurePosixPath(name.replace("\\", "/"))
            target = (path.parent / relative).resolve()
            if relative.is_absolute() or ".." in relative.parts or not target.is_relative_to(base):
                raise MetadataError(f"{where}: file_name {name!r} leaves the folder {root}")
            try:
                found = target.is_file()
            except OSError as exc:  # a name too long for the file system
                raise MetadataError(
                    f"{where}: file_name {name[:60]!r}... ({len(name)} characters): {exc.strerror}"
                ) from None
            if not found:
                raise MetadataError(f"{where}: file_name {name!r}: no such file ({target})")
            image_id = target.relative_to(base).as_posix()
            result.captions.setdefault(image_id, []).extend(caption_texts(row[caption_column], where, caption_column))
            if split_column:
                value = str(row[split_column]).strip().lower()
                if value not in SPLIT_NAMES:
                    raise MetadataError(
                        f"{where}: {split_column} {row[split_column]!r} is no split (train, validation/val/dev, test)"
                    )
                split = SPLIT_NAMES[value]
            elif by_folder:
                split = SPLIT_FOLDERS[path.parent.name]
            else:
                split = split_of(image_id)
            if result.split_of.setdefault(image_id, split) != split:
                earlier = result.split_of[image_id]
                raise MetadataError(f"{where}: {image_id} is in split {split!r} here, {earlier!r} above")
    if not result.captions:
        raise MetadataError(f"{files[0]}: no rows")
    return result
