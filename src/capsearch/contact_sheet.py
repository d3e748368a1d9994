"""Contact sheets: rows of thumbnails with text under each, saved as PNG (for search hits and reports)."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from capsearch.io import atomic_path

THUMB = 200
PAD = 10
TEXT_LINES = 7
LINE_HEIGHT = 16
TITLE_HEIGHT = 28


@dataclass
class Tile:
    """One thumbnail: how to load its image and the lines of text under it."""

    load: Callable[[], Image.Image]
    lines: Sequence[str]


def render_contact_sheet(rows: Sequence[tuple[str, Sequence[Tile]]]) -> Image.Image:
    """A white sheet with one titled row per entry of ``rows``, thumbnails scaled to fit ``THUMB`` px."""
    font = ImageFont.load_default(size=13)
    title_font = ImageFont.load_default(size=17)
    columns = max((len(tiles) for _, tiles in rows), default=1) or 1
    cell_h = THUMB + TEXT_LINES * LINE_HEIGHT + PAD
    width = PAD + columns * (THUMB + PAD)
    height = PAD + len(rows) * (TITLE_HEIGHT + cell_h)
    sheet = Image.new("RGB", (width, max(height, 2 * PAD)), "white")
    draw = ImageDraw.Draw(sheet)
    y = PAD
    for title, tiles in rows:
        draw.text((PAD, y), title, fill="black", font=title_font)
        y += TITLE_HEIGHT
        for column, tile in enumerate(tiles):
            x = PAD + column * (THUMB + PAD)
            image = tile.load().convert("RGB")
            image.thumbnail((THUMB, THUMB))
            sheet.paste(image, (x + (THUMB - image.width) // 2, y + (THUMB - image.height) // 2))
            wrapped = [part for line in tile.lines for part in textwrap.wrap(line, width=30)][:TEXT_LINES]
            for i, line in enumerate(wrapped):
                draw.text((x, y + THUMB + 2 + i * LINE_HEIGHT), line, fill="black", font=font)
        y += cell_h
    return sheet


def save_png(image: Image.Image, path: str | Path) -> None:
    """Save a PNG atomically."""
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
