"""Reading images straight from the release zip (or a folder) without extracting thousands of files."""

from __future__ import annotations

import io
import os
import warnings
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from capsearch.data.flickr8k import IMAGES_DIR_IN_ZIP


class ImageReadError(OSError):
    """An image could not be read or decoded; the message names the file."""


class ImageSource:
    """Images by id from ``Flickr8k_Dataset.zip`` (member ``Flicker8k_Dataset/<id>``) or from a folder.

    Safe to use from DataLoader worker processes: each process opens its own zip handle.
    """

    def __init__(self, location: str | Path, member_prefix: str = IMAGES_DIR_IN_ZIP) -> None:
        self.location = Path(location)
        self.member_prefix = member_prefix
        self.is_zip = self.location.is_file()
        if not self.is_zip and not self.location.is_dir():
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
        """All ``.jpg`` image ids available in this source, sorted."""
        if self.is_zip:
            prefix = self.member_prefix
            names = self._archive().namelist()
            return sorted(n[len(prefix) :] for n in names if n.startswith(prefix) and n.lower().endswith(".jpg"))
        return sorted(p.name for p in self.location.iterdir() if p.suffix.lower() == ".jpg")

    def describe(self, image_id: str) -> str:
        """Where an image lives, for error messages."""
        if self.is_zip:
            return f"{self.location}:{self.member_prefix}{image_id}"
        return str(self.location / image_id)

    def read_bytes(self, image_id: str) -> bytes:
        """The encoded file of one image."""
        try:
            if self.is_zip:
                return self._archive().read(self.member_prefix + image_id)
            return (self.location / image_id).read_bytes()
        except (KeyError, OSError) as exc:
            raise ImageReadError(f"cannot read image {self.describe(image_id)}: {exc}") from exc

    def open_rgb(self, image_id: str, draft_size: tuple[int, int] | None = None) -> Image.Image:
        """Decode one image fully into RGB; ``draft_size`` lets JPEG decode at a reduced scale."""
        data = self.read_bytes(image_id)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(data))
                if draft_size is not None:
                    image.draft("RGB", draft_size)
                image.load()
            return image.convert("RGB")
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombWarning) as exc:
            raise ImageReadError(f"cannot decode image {self.describe(image_id)}: {exc}") from exc

    def check(self, image_id: str) -> tuple[int, int]:
        """Decode an image to prove it is readable; return its (width, height)."""
        data = self.read_bytes(image_id)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(data))
                size = image.size
                image.draft("RGB", (max(1, size[0] // 8), max(1, size[1] // 8)))
                image.load()
            return size
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombWarning) as exc:
            raise ImageReadError(f"cannot decode image {self.describe(image_id)}: {exc}") from exc


class ImageDataset:
    """A map-style dataset of preprocessed images: ``transform(PIL RGB image)`` per id."""

    def __init__(self, source: ImageSource, image_ids: Sequence[str], transform: Callable[[Image.Image], Any]) -> None:
        self.source = source
        self.image_ids = list(image_ids)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> Any:
        return self.transform(self.source.open_rgb(self.image_ids[index]))
