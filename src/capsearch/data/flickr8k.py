"""Flickr8k annotations: the caption token file, the split files and deterministic subsets.

Quirks of the real release handled here (see ``tests/test_data_flickr8k.py``):

* ``Flickr8k.token.txt`` has 40,460 lines in 8,092 caption groups, but the image zip holds 8,091 images:
  ``2258277193_586949ec62.jpg`` has captions and no image. Subset drops it as "not in the image archive".
* Its caption #0 carries the stray key ``2258277193_586949ec62.jpg.1#0``; a key ``<name>.jpg.<n>`` is
  folded into ``<name>.jpg`` and counted in :attr:`CaptionFile.stray_keys_folded`.
* 92 captioned images are in no split file; they are only reachable with ``split: all``.

Kaggle's re-packaging (``Images/`` + ``captions.txt``, a CSV with header ``image,caption``, five rows per image,
no split files) is accepted too: :func:`load_captions` reads whichever caption file a text folder holds, and
split files are optional there (a split whose file is missing is an error only when it is asked for).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from capsearch.errors import CapsearchError
from capsearch.params import SPLITS

IMAGE_ZIP_NAME = "Flickr8k_Dataset.zip"
TEXT_ZIP_NAME = "Flickr8k_text.zip"
IMAGES_DIR_IN_ZIP = "Flicker8k_Dataset/"  # sic: the release misspells the folder
TOKEN_FILE = "Flickr8k.token.txt"
KAGGLE_CAPTIONS = "captions.txt"
KAGGLE_IMAGES_DIR = "Images"
# what PIL decodes and an image collection holds (16-bit TIFF and PNG, palette GIF: see images.to_rgb)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
SUFFIXES_SHOWN = ", ".join(IMAGE_SUFFIXES)
SPLIT_FILES = {
    "train": "Flickr_8k.trainImages.txt",
    "dev": "Flickr_8k.devImages.txt",
    "test": "Flickr_8k.testImages.txt",
}
CAPTIONS_PER_IMAGE = 5

_SUFFIX = "|".join(suffix.lstrip(".") for suffix in IMAGE_SUFFIXES)
_KEY = re.compile(rf"^(?P<image>.+?\.(?:{_SUFFIX}))(?P<stray>\.\d+)?#(?P<index>\d+)$", re.IGNORECASE)


class AnnotationError(CapsearchError, ValueError):
    """A malformed annotation file; the message names the file and line."""


@dataclass
class CaptionFile:
    """Parsed ``Flickr8k.token.txt``: captions per image in caption-index order."""

    captions: dict[str, list[str]]
    lines: int
    stray_keys_folded: int = 0
    stray_keys: list[str] = field(default_factory=list)

    @property
    def caption_groups(self) -> int:
        """Number of distinct images that have captions."""
        return len(self.captions)


def _read_utf8(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line_no = raw[: exc.start].count(b"\n") + 1
        raise AnnotationError(f"{path}:{line_no}: not valid UTF-8 ({exc.reason})") from exc


def parse_token_file(path: str | Path) -> CaptionFile:
    """Parse ``<image>.jpg#<0-4>\\t<caption>`` lines; raise :class:`AnnotationError` naming file:line."""
    path = Path(path)
    text = _read_utf8(path)
    by_image: dict[str, dict[int, str]] = {}
    stray: list[str] = []
    lines = 0
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        lines += 1
        key, tab, caption = line.partition("\t")
        match = _KEY.match(key.strip())
        if not tab or match is None:
            raise AnnotationError(f"{path}:{line_no}: expected '<image>.jpg#<0-4><TAB><caption>', got {line[:80]!r}")
        index = int(match["index"])
        caption = caption.strip()
        if index >= CAPTIONS_PER_IMAGE:
            raise AnnotationError(f"{path}:{line_no}: caption index {index} outside 0-4 in {key!r}")
        if not caption:
            raise AnnotationError(f"{path}:{line_no}: empty caption for {key!r}")
        image = match["image"]
        if match["stray"]:
            stray.append(key)
        slots = by_image.setdefault(image, {})
        if index in slots:
            raise AnnotationError(f"{path}:{line_no}: duplicate caption id {image}#{index}")
        slots[index] = caption
    captions = {image: [slots[i] for i in sorted(slots)] for image, slots in by_image.items()}
    return CaptionFile(captions=captions, lines=lines, stray_keys_folded=len(stray), stray_keys=stray)


def parse_kaggle_captions(path: str | Path) -> CaptionFile:
    """Parse Kaggle's ``captions.txt`` (``image,caption`` rows; a caption may hold commas, quoted or not).

    Captions keep file order per image; errors name file:line.
    """
    path = Path(path)
    lines = _read_utf8(path).splitlines()
    if not lines or lines[0].strip().lower().replace(" ", "") != "image,caption":
        raise AnnotationError(f"{path}:1: expected the header 'image,caption', got {lines[0][:80] if lines else ''!r}")
    by_image: dict[str, list[str]] = {}
    count = 0
    for line_no, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        count += 1
        image, comma, caption = line.partition(",")
        image, caption = image.strip(), caption.strip()
        if len(caption) >= 2 and caption[0] == caption[-1] == '"':
            caption = caption[1:-1].replace('""', '"').strip()
        if not comma or not image.lower().endswith(IMAGE_SUFFIXES) or "/" in image or "\\" in image:
            raise AnnotationError(f"{path}:{line_no}: expected '<image file>,<caption>', got {line[:80]!r}")
        if not caption:
            raise AnnotationError(f"{path}:{line_no}: empty caption for {image!r}")
        by_image.setdefault(image, []).append(caption)
    return CaptionFile(captions=by_image, lines=count)


def load_captions(text_dir: str | Path) -> CaptionFile:
    """The captions of a text folder: ``Flickr8k.token.txt`` (release) or ``captions.txt`` (Kaggle)."""
    text_dir = Path(text_dir)
    if (text_dir / TOKEN_FILE).exists():
        return parse_token_file(text_dir / TOKEN_FILE)
    if (text_dir / KAGGLE_CAPTIONS).exists():
        return parse_kaggle_captions(text_dir / KAGGLE_CAPTIONS)
    raise FileNotFoundError(f"{text_dir}: neither {TOKEN_FILE} nor {KAGGLE_CAPTIONS} found")


def read_split_file(path: str | Path) -> list[str]:
    """Image names of one split file, in file order (blank lines ignored; a UTF-8 BOM and CRLF are fine)."""
    return [line.strip() for line in _read_utf8(Path(path)).splitlines() if line.strip()]


def read_splits(text_dir: str | Path) -> dict[str, list[str]]:
    """The split files present in a text folder (all three in the release; Kaggle's layout has none)."""
    text_dir = Path(text_dir)
    present = {split: text_dir / name for split, name in SPLIT_FILES.items() if (text_dir / name).exists()}
    return {split: read_split_file(path) for split, path in present.items()}


@dataclass
class SplitCandidates:
    """Images of one split that have captions, plus what was left out and why."""

    images: list[str]
    without_captions: list[str]
    in_no_split: int


def split_candidates(
    captions: dict[str, list[str]], splits: dict[str, list[str]], split: str, section: str = "subset"
) -> SplitCandidates:
    """Captioned images of ``split`` (``test``/``dev``/``train``/``all``), sorted by name.

    ``section`` names the params section in errors (``subset`` or ``fusion``).
    """
    if split not in SPLITS:
        raise ValueError(f"{section}.split: unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if split != "all" and split not in splits:
        raise ValueError(
            f"{section}.split: {split!r} needs {SPLIT_FILES[split]}, which the annotations lack (Kaggle's layout "
            "has no split files): use split: all, or put the release's split files beside captions.txt"
        )
    in_any = {name for names in splits.values() for name in names}
    in_no_split = sum(1 for image in captions if image not in in_any)
    wanted = sorted(captions) if split == "all" else sorted(set(splits[split]))
    return SplitCandidates(
        images=[image for image in wanted if image in captions],
        without_captions=[image for image in wanted if image not in captions],
        in_no_split=in_no_split,
    )


def sampling_order(images: list[str], seed: int) -> list[str]:
    """A seeded permutation of ``images`` (sorted first, so the input order never matters)."""
    order = sorted(images)
    random.Random(seed).shuffle(order)
    return order
