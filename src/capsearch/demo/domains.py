"""Generated data in a domain the toy models never saw: the same scenes and captions as :mod:`capsearch.demo.scenes`,
seen through diagonal stripes (a new texture over every picture, as a new scanner or a new kind of photograph would
bring). What fine-tuning is for: the toy dual encoder, trained on plain scenes, retrieves these worse until it is
fine-tuned on their train split."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from capsearch.demo.scenes import write_flickr8k_layout
from capsearch.io import atomic_path

STRIPE_PERIOD = 8  # pixels
STRIPE_STRENGTH = 0.8  # how much of each stripe's colour covers the picture


def striped(image: Image.Image) -> Image.Image:
    """``image`` under alternating dark and light diagonal stripes."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    rows, cols = np.indices(rgb.shape[:2])
    band = ((rows + cols) // (STRIPE_PERIOD // 2)) % 2  # 0: dark stripe, 1: light stripe
    colour = np.where(band[..., None] == 1, np.float32(230.0), np.float32(25.0))
    mixed = (1 - STRIPE_STRENGTH) * rgb + STRIPE_STRENGTH * colour
    return Image.fromarray(mixed.round().clip(0, 255).astype(np.uint8))


def write_striped_layout(out_dir: str | Path, count: int, seed: int = 0) -> dict[str, Path]:
    """:func:`capsearch.demo.scenes.write_flickr8k_layout`'s zips with every image striped (same names, captions,
    splits and judgments). Byte-identical for the same arguments."""
    paths = write_flickr8k_layout(out_dir, count, seed)
    plain = paths["images"]
    with atomic_path(plain) as tmp, zipfile.ZipFile(plain) as source, zipfile.ZipFile(tmp, "w") as out:
        for info in source.infolist():
            buffer = io.BytesIO()
            striped(Image.open(io.BytesIO(source.read(info)))).save(buffer, format="JPEG", quality=90)
            copy = zipfile.ZipInfo(info.filename, date_time=info.date_time)
            copy.compress_type = info.compress_type
            out.writestr(copy, buffer.getvalue())
    return paths
