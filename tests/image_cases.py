"""Image files that break naive loaders, each with what capsearch must do with it."""

from __future__ import annotations

import io
import random
import struct
import zlib

import numpy as np
from PIL import Image


def _encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def bomb_png(side: int = 30000) -> bytes:
    """A tiny PNG whose header claims side x side pixels (PIL refuses it before decoding)."""
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (side + 1) * 4)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", rows) + _png_chunk(b"IEND", b"")


def half_red_photo(width: int = 120, height: int = 80) -> Image.Image:
    """Left half red, right half blue (so rotations are visible)."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, : width // 2] = (230, 20, 20)
    pixels[:, width // 2 :] = (20, 20, 230)
    return Image.fromarray(pixels)


def good_cases() -> dict[str, bytes]:
    """Files that must decode: odd modes and formats, rotated, tiny."""
    photo = half_red_photo()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display rotated 90 degrees clockwise
    rgba = Image.new("RGBA", (64, 48), (255, 0, 0, 255))
    rgba.paste((0, 0, 0, 0), (32, 0, 64, 48))  # right half fully transparent (black underneath)
    palette = Image.new("P", (64, 48), 1)
    palette.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    palette.paste(0, (32, 0, 64, 48))
    sixteen = Image.fromarray(np.tile(np.linspace(0, 65535, 64, dtype=np.uint16), (48, 1)))
    return {
        "png_named.jpg": _encoded(photo, "PNG"),
        "gray.jpg": _encoded(photo.convert("L"), "JPEG"),
        "cmyk.jpg": _encoded(photo.convert("CMYK"), "JPEG"),
        "rgba.png": _encoded(rgba, "PNG"),
        "palette.png": _encoded(palette, "PNG", transparency=0),
        "sixteen_bit.png": _encoded(sixteen, "PNG"),
        "exif_rotated.jpg": _encoded(photo, "JPEG", exif=exif.tobytes()),
        "one_pixel.jpg": _encoded(Image.new("RGB", (1, 1), (0, 200, 0)), "JPEG"),
        "normal.jpg": _encoded(photo, "JPEG", quality=95),
    }


def bad_cases() -> dict[str, tuple[bytes, str]]:
    """Files that must be refused, with a word the reason must contain."""
    jpeg = _encoded(half_red_photo(400, 300), "JPEG", quality=95)
    return {
        "zero_bytes.jpg": (b"", "cannot identify"),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "truncated"),
        "random_bytes.jpg": (random.Random(0).randbytes(5000), "cannot identify"),
        "bomb.png": (bomb_png(), "decompression bomb"),
    }
