"""Reading images straight from the release zip (or a folder) without extracting thousands of files."""

from __future__ import annotations

import hashlib
import io
import os
import warnings
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from capsearch.data.flickr8k import IMAGE_SUFFIXES, IMAGE_ZIP_NAME, IMAGES_DIR_IN_ZIP, SUFFIXES_SHOWN
from capsearch.data.hf_dataset import FOLDER as HF_FOLDER
from capsearch.data.hf_dataset import SavedImages
from capsearch.data.imagefolder import is_unicode
from capsearch.data.karpathy import COCO_IMAGES_DIR_IN_ZIP, COCO_IMAGES_ZIP, FLICKR30K_IMAGES_DIR
from capsearch.data.webdataset import ShardError, ShardReader, is_shard_spec, resolve_shards, shards_digest
from capsearch.errors import CapsearchError

ORIENTATION_TAG = 0x0112
# What PIL raises on a file it cannot decode: unknown format, truncated data, bad headers, or more pixels than
# Image.MAX_IMAGE_PIXELS (a decompression bomb; a warning above the limit is turned into an error too).
DECODE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    Image.DecompressionBombWarning,
    Image.DecompressionBombError,
)


def to_rgb(image: Image.Image) -> Image.Image:
    """Upright 8-bit RGB: EXIF rotation applied, 16-bit scaled down, CMYK converted, alpha over white."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.int64)
        peak = 65535 if image.mode.startswith("I;16") or array.max(initial=0) > 255 else 255
        image = Image.fromarray((np.clip(array, 0, peak) * 255 // peak).astype(np.uint8), "L")
    elif image.mode == "F":
        image = Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8), "L")
    if (image.mode == "P" and "transparency" in image.info) or image.mode in ("LA", "PA", "La"):
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "RGBa"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert("RGB")


def _reason(exc: BaseException, data: bytes) -> str:
    """A short reason for a decode failure (PIL's own message, minus object reprs)."""
    if not data:
        return "empty file (0 bytes): cannot identify image format"
    if isinstance(exc, Image.UnidentifiedImageError):
        return f"cannot identify image format ({len(data)} bytes, starting {data[:8]!r})"
    return str(exc) or type(exc).__name__


class ImageReadError(CapsearchError, OSError):
    """An image could not be read or decoded; the message names the file."""


ZIP_IMAGE_FOLDERS = {IMAGE_ZIP_NAME: IMAGES_DIR_IN_ZIP, COCO_IMAGES_ZIP: COCO_IMAGES_DIR_IN_ZIP}


class ImageSource:
    """Images by id from ``Flickr8k_Dataset.zip`` (member ``Flicker8k_Dataset/<id>``), from webdataset shards (id =
    the image's member name, unique across shards; see :mod:`capsearch.data.webdataset`), from a Hugging Face
    dataset fetch saved (:mod:`capsearch.data.hf_dataset`) or from a folder.

    Safe to use from DataLoader worker processes and Ray tasks: each process opens its own file handles.
    """

    def __init__(self, location: str | Path, member_prefix: str | None = None, recursive: bool = False) -> None:
        self.location = Path(location)
        self.recursive = recursive  # a folder's ids: paths relative to it, subfolders included (imagefolder)
        # the folder of the images inside a known zip (Flickr8k's release, COCO's val2014.zip); None: by its name
        default = ZIP_IMAGE_FOLDERS.get(self.location.name, IMAGES_DIR_IN_ZIP)
        self.member_prefix = default if member_prefix is None else member_prefix
        self.is_zip = self.location.is_file() and zipfile.is_zipfile(self.location)
        self.shards: list[ShardReader] = []
        self._shard_of: dict[str, ShardReader] = {}
        self.saved = SavedImages(self.location) if SavedImages.holds(self.location) else None
        if not self.is_zip and is_shard_spec(location):
            self.shards = [ShardReader(path) for path in resolve_shards(location)]
            for reader in self.shards:
                for name in reader.images():
                    if name in self._shard_of:
                        raise ShardError(f"{reader.path}: image {name!r} is also in {self._shard_of[name].path}")
                    self._shard_of[name] = reader
        elif not self.is_zip and not self.location.is_dir():
            raise FileNotFoundError(f"image source not found: {self.location}")
        self._zip: zipfile.ZipFile | None = None
        self._zip_pid: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_zip"] = None
        state["_zip_pid"] = None
        return state

    def _archive(self) -> zipfile.ZipFile:
        if self._zip is None or self._zip_pid != os.getpid():
            self._zip = zipfile.ZipFile(self.location)
            self._zip_pid = os.getpid()
        return self._zip

    def ids(self) -> list[str]:
        """All image ids (files named with one of ``IMAGE_SUFFIXES``) in this source, sorted (shards: in order)."""
        if self.shards:
            return list(self._shard_of)
        if self.saved:
            return self.saved.ids()
        if self.is_zip:
            prefix = self.member_prefix
            names = self._archive().namelist()
            members = (n for n in names if n.startswith(prefix) and n.lower().endswith(IMAGE_SUFFIXES))
            return sorted(n[len(prefix) :] for n in members)
        if self.recursive:
            files = (p for p in self.location.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            return sorted(p.relative_to(self.location).as_posix() for p in files)
        return sorted(p.name for p in self.location.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)

    def content_digest(self, image_ids: Sequence[str]) -> str:
        """What identifies the bytes of ``image_ids``, so that a rewritten image is noticed whatever its file's size and
        modification time: for shards, SHA-256 of every shard they are in (each read once per source); for a zip,
        the members' CRC-32 and sizes from its central directory (no image data read); for a folder, SHA-256 of each
        image file."""
        if self.shards:
            readers = dict.fromkeys(self._shard_of[image_id] for image_id in image_ids)
            return shards_digest((reader.path, reader.sha256()) for reader in readers)
        digest = hashlib.sha256()
        if self.is_zip:
            archive = self._archive()
            for image_id in image_ids:
                try:
                    info = archive.getinfo(self.member_prefix + image_id)
                except KeyError:
                    raise ImageReadError(f"cannot read image {self.describe(image_id)}: not in the zip") from None
                digest.update(f"{image_id}\0{info.CRC:08x}\0{info.file_size}\0".encode())
        else:
            for image_id in image_ids:
                digest.update(image_id.encode() + b"\0" + hashlib.sha256(self.read_bytes(image_id)).digest())
        return digest.hexdigest()

    def shard_of(self, image_id: str) -> Path:
        """The shard file holding ``image_id`` (webdataset sources only)."""
        reader = self._shard_of.get(image_id)
        if reader is None:
            raise ImageReadError(f"image {image_id!r} is in none of the {len(self.shards)} shards of {self.location}")
        return reader.path

    def caption_of(self, image_id: str) -> str | None:
        """The caption stored beside an image in its shard (``KEY.txt``); None where there is none."""
        return self._shard_of[image_id].caption_of(image_id)

    def describe(self, image_id: str) -> str:
        """Where an image lives, for error messages."""
        if image_id in self._shard_of:
            return f"{self._shard_of[image_id].path}:{image_id}"
        if self.is_zip:
            return f"{self.location}:{self.member_prefix}{image_id}"
        if self.saved:
            return f"{self.location}:{image_id}"
        return str(self.location / image_id)

    def read_bytes(self, image_id: str) -> bytes:
        """The encoded file of one image."""
        try:
            if self.shards:
                return self._shard_of[image_id].read(image_id)
            if self.saved:
                return self.saved.read_bytes(image_id)
            if self.is_zip:
                return self._archive().read(self.member_prefix + image_id)
            return (self.location / image_id).read_bytes()
        except (KeyError, OSError, ShardError) as exc:
            raise ImageReadError(f"cannot read image {self.describe(image_id)}: {exc}") from exc

    def open_rgb(self, image_id: str, draft_for: Callable[[int, int], tuple[int, int]] | None = None) -> Image.Image:
        """Decode one image into upright RGB (EXIF orientation applied, transparency on white).

        ``draft_for(width, height)`` gives the smallest size needed, so a large JPEG decodes at a reduced scale.
        """
        return self._decode(image_id, draft_for)[0]

    def plain_jpeg(self, image_id: str) -> bytes | None:
        """The file's bytes when it is a JPEG a GPU decoder can take as it is (8-bit RGB or grayscale, upright: no
        EXIF rotation, within the pixel limit), from its header alone; None for anything else (PNG, CMYK, rotated,
        unreadable), which then goes through :meth:`open_rgb`."""
        data = self.read_bytes(image_id)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(data))
                if image.format != "JPEG" or image.mode not in ("RGB", "L"):
                    return None
                if image.getexif().get(ORIENTATION_TAG, 1) != 1:
                    return None
        except DECODE_ERRORS:
            return None
        return data

    def check(self, image_id: str) -> tuple[int, int]:
        """Decode an image (at 1/8 scale where JPEG allows) to prove it is readable; return its upright size."""
        return self._decode(image_id, lambda width, height: (max(1, width // 8), max(1, height // 8)))[1]

    def _decode(
        self, image_id: str, draft_for: Callable[[int, int], tuple[int, int]] | None
    ) -> tuple[Image.Image, tuple[int, int]]:
        """The upright RGB image and its full upright (width, height), or an ImageReadError naming the file."""
        data = self.read_bytes(image_id)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(data))
                sideways = image.getexif().get(ORIENTATION_TAG, 1) in (5, 6, 7, 8)  # stored rotated by 90 degrees
                width, height = (image.height, image.width) if sideways else image.size
                if draft_for is not None and image.format == "JPEG":
                    wanted = draft_for(width, height)
                    image.draft("RGB", wanted[::-1] if sideways else wanted)
                image.load()
                return to_rgb(image), (width, height)
        except DECODE_ERRORS as exc:
            raise ImageReadError(f"cannot decode image {self.describe(image_id)}: {_reason(exc, data)}") from exc


def source_images(kind: str, images: str | Path) -> ImageSource:
    """The images of a ``source`` params section: what fetch put in ``images`` (``data/raw``: Flickr8k's release
    zip, Flickr30k's extracted folder, COCO's ``val2014.zip``, a Hugging Face dataset's saved Arrow files), or the
    webdataset shards or image folder ``images`` names."""
    path = Path(images)
    if kind == "flickr8k":
        return ImageSource(path / IMAGE_ZIP_NAME)
    if kind == "flickr30k":
        return ImageSource(path / FLICKR30K_IMAGES_DIR)
    if kind == "coco":
        return ImageSource(path / COCO_IMAGES_ZIP)
    if kind == "imagefolder":
        return ImageSource(path, recursive=True)
    if kind == "hf_dataset":
        return ImageSource(path / HF_FOLDER)
    return ImageSource(path)


def shown_name(path: str | Path) -> str:
    """A file name as text: itself, or with the bytes that are not UTF-8 escaped (``caf\\xe9.jpg``)."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


def is_utf8_name(path: str | Path) -> bool:
    """Whether a file name decodes as UTF-8 (else Python holds it with surrogate escapes, which no CSV, JSON or URL
    carries faithfully)."""
    return is_unicode(str(path))


def find_images(paths: Sequence[str | Path], skipped: list[tuple[str, str]] | None = None) -> list[Path]:
    """Image files named by ``paths``: files as given, folders searched recursively (hidden folders such as a
    ``.capsearch`` index skipped), glob patterns expanded.

    A file whose name is not UTF-8 is left out and, with ``skipped``, listed there by its escaped name with the
    reason. Raises FileNotFoundError naming a path that matches nothing (or a folder holding no images).
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            images = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            images = [p for p in images if not any(part.startswith(".") for part in p.relative_to(path).parts)]
            if not images:
                raise FileNotFoundError(f"{path}: no images ({SUFFIXES_SHOWN}) in this folder")
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
    bad = [p for p in found if not is_utf8_name(p)]
    if skipped is not None:
        skipped += [(shown_name(p), "file name is not valid UTF-8: rename the file to use it") for p in bad]
    return [p for p in found if is_utf8_name(p)]
