"""A generated radiology-like image folder: grayscale "films" (a dark field, two lung fields, a spine) with a bright
round opacity of some size in some zone, or none, and synthetic finding captions, in the Hugging Face ImageFolder
layout (``train/``, ``validation/``, ``test/``, each with a ``metadata.jsonl`` listing several captions per image).

For testing that a medical-style collection runs through the pipeline; it says nothing about real medical images
or any model's performance on them.
"""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path

import yaml
from PIL import Image, ImageDraw, ImageFilter

from capsearch.io import write_text

SIZE = 96
SIDES = ("left", "right")
ZONES = ("upper", "lower")
SIZES = {"small": 5, "large": 11}  # opacity radius in pixels
SPLITS = (("train", 0.7), ("validation", 0.15), ("test", 0.15))


def film(finding: tuple[str, str, str] | None, rng: random.Random) -> Image.Image:
    """One grayscale film, with the opacity ``(size, side, zone)`` or none."""
    image = Image.new("L", (SIZE, SIZE), 20)
    draw = ImageDraw.Draw(image)
    for left in (8, 52):  # the two lung fields, a little brighter than the background
        draw.ellipse((left, 12, left + 36, 84), fill=60 + rng.randint(-8, 8))
    draw.rectangle((45, 8, 51, 90), fill=140)  # the spine
    if finding is not None:
        size, side, zone = finding
        radius = SIZES[size]
        x = (26 if side == "right" else 70) + rng.randint(-4, 4)  # the patient's right is the film's left
        y = (32 if zone == "upper" else 64) + rng.randint(-4, 4)
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=200 + rng.randint(-20, 20))
    return image.filter(ImageFilter.GaussianBlur(1.2))


def findings_captions(finding: tuple[str, str, str] | None) -> list[str]:
    """Three phrasings of the finding (or of none)."""
    if finding is None:
        return ["no acute cardiopulmonary abnormality", "clear lungs, no focal opacity", "normal chest radiograph"]
    size, side, zone = finding
    return [
        f"{size} opacity in the {side} {zone} zone",
        f"a {size} rounded density in the {zone} {side} lung",
        f"chest radiograph with a {size} {side} {zone} lobe opacity",
    ]


def write_radiology_imagefolder(out_dir: str | Path, count: int, seed: int = 0) -> Path:
    """``count`` films with their captions under ``out_dir`` (ImageFolder layout, split by a seeded shuffle)."""
    out = Path(out_dir)
    rng = random.Random(seed)
    choices = [None] + [(s, side, z) for s in SIZES for side in SIDES for z in ZONES]
    rows: dict[str, list[str]] = {split: [] for split, _ in SPLITS}
    order = list(range(count))
    rng.shuffle(order)
    bounds, start = [], 0
    for split, share in SPLITS:
        end = count if split == SPLITS[-1][0] else start + round(share * count)
        bounds.append((split, set(order[start:end])))
        start = end
    for index in range(count):
        finding = rng.choice(choices)
        split = next(name for name, members in bounds if index in members)
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        name = f"film_{index:05d}.png"
        film(finding, rng).save(folder / name)
        rows[split].append(json.dumps({"file_name": name, "text": findings_captions(finding)}))
    for split, lines in rows.items():
        write_text(out / split / "metadata.jsonl", "".join(f"{line}\n" for line in lines))
    return out


def write_radiology_dataset_repo(out_dir: str | Path, count: int, seed: int = 0) -> Path:
    """The same films as a Hugging Face dataset repo's files: ``data/<split>-00000-of-00001.parquet`` (an ``image``
    column of encoded PNGs, a ``findings`` column of caption lists) and a README whose YAML names the splits, as the
    Hub's Parquet datasets are laid out. Written through ``datasets`` (needs ``capsearch[hf]``)."""
    from capsearch.data.hf_dataset import datasets_library

    datasets = datasets_library()
    out = Path(out_dir)
    (out / "data").mkdir(parents=True, exist_ok=True)
    features = datasets.Features({"image": datasets.Image(), "findings": datasets.List(datasets.Value("string"))})
    data_files = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = write_radiology_imagefolder(scratch, count, seed)
        for split, _ in SPLITS:
            rows = [json.loads(line) for line in (folder / split / "metadata.jsonl").read_text().splitlines()]
            table = {
                "image": [{"bytes": (folder / split / row["file_name"]).read_bytes(), "path": None} for row in rows],
                "findings": [row["text"] for row in rows],
            }
            name = f"data/{split}-00000-of-00001.parquet"
            datasets.Dataset.from_dict(table, features=features).to_parquet(str(out / name))
            data_files.append({"split": split, "path": name})
    card = yaml.safe_dump({"configs": [{"config_name": "default", "data_files": data_files}]}, sort_keys=False)
    write_text(out / "README.md", f"---\n{card}---\n# Generated radiology-like films (not medical data)\n")
    return out
