"""Generated Flickr8k: simple shape scenes with five captions each, written in the release layout.

The layout is exactly the public release's: ``Flickr8k_Dataset.zip`` holding ``Flicker8k_Dataset/*.jpg``
and ``Flickr8k_text.zip`` holding ``Flickr8k.token.txt`` and the three split files. Captions describe what
is drawn (colour, shape, size, background), so models trained on one generated set can be evaluated on
another.
"""

from __future__ import annotations

import io
import random
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from capsearch.data.flickr8k import (
    IMAGE_ZIP_NAME,
    IMAGES_DIR_IN_ZIP,
    SPLIT_FILES,
    TEXT_ZIP_NAME,
    TOKEN_FILE,
)
from capsearch.io import atomic_path

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 40),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 30),
    "purple": (140, 40, 170),
}
GRAY_COLOURS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "gray": (128, 128, 128),
    "black": (10, 10, 10),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "black": (10, 10, 10),
    "gray": (128, 128, 128),
}
SHAPES = ("circle", "square", "triangle")
SIZES = ("small", "large")

TEMPLATES = (
    "a {colour} {shape} on a {background} background",
    "a {size} {colour} {shape}",
    "there is a {colour} {shape} in the picture",
    "a {size} {shape} that is {colour}",
    "a picture of a {colour} {shape} on {background}",
    "one {colour} {shape} in front of a {background} background",
    "a {colour} {shape} drawn on a plain {background} background",
)


@dataclass(frozen=True)
class Scene:
    """What one generated image shows."""

    colour: str
    shape: str
    size: str
    background: str
    grayscale: bool
    width: int
    height: int


def random_scene(rng: random.Random) -> Scene:
    """Draw a random scene: mostly landscape ~500x375, some portrait, a few grayscale."""
    grayscale = rng.random() < 0.06
    if grayscale:
        background = rng.choice(list(BACKGROUNDS))
        colour = rng.choice([c for c in GRAY_COLOURS if c != background])
    else:
        background = rng.choice(list(BACKGROUNDS))
        colour = rng.choice(list(COLOURS))
    long_side, short_side = rng.randint(440, 540), rng.randint(330, 420)
    portrait = rng.random() < 0.15
    width, height = (short_side, long_side) if portrait else (long_side, short_side)
    return Scene(colour, rng.choice(SHAPES), rng.choice(SIZES), background, grayscale, width, height)


def render_scene(scene: Scene, rng: random.Random) -> Image.Image:
    """Draw the scene; the shape stays inside the central square so a centre crop keeps it whole."""
    palette = GRAY_COLOURS if scene.grayscale else COLOURS
    image = Image.new("RGB", (scene.width, scene.height), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(image)
    side = min(scene.width, scene.height)
    radius = int(side * (rng.uniform(0.17, 0.22) if scene.size == "small" else rng.uniform(0.30, 0.38)))
    margin = radius + 4
    cx = scene.width // 2 + rng.randint(-(side // 2 - margin), side // 2 - margin)
    cy = scene.height // 2 + rng.randint(-(side // 2 - margin), side // 2 - margin)
    fill = tuple(max(0, min(255, c + rng.randint(-15, 15))) for c in palette[scene.colour])
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    if scene.shape == "circle":
        draw.ellipse(box, fill=fill)
    elif scene.shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(cx, cy - radius), (cx - radius, cy + radius), (cx + radius, cy + radius)], fill=fill)
    return image.convert("L") if scene.grayscale else image


def scene_captions(scene: Scene, rng: random.Random) -> list[str]:
    """Five different captions describing the scene, some in Flickr8k's 'Capitalised .' style."""
    words = {"colour": scene.colour, "shape": scene.shape, "size": scene.size, "background": scene.background}
    captions = []
    for template in rng.sample(TEMPLATES, 5):
        text = template.format(**words)
        if rng.random() < 0.5:
            text = text[0].upper() + text[1:] + " ."
        captions.append(text)
    return captions


def iter_scenes(count: int, seed: int) -> Iterator[tuple[Scene, Image.Image, list[str]]]:
    """``count`` (scene, image, captions) triples one at a time, deterministically from ``seed`` (memory stays flat)."""
    rng = random.Random(seed)
    for _ in range(count):
        scene = random_scene(rng)
        yield scene, render_scene(scene, rng), scene_captions(scene, rng)


def generate_scenes(count: int, seed: int) -> list[tuple[Scene, Image.Image, list[str]]]:
    """:func:`iter_scenes` as a list."""
    return list(iter_scenes(count, seed))


def judgment_lines(
    scenes: dict[str, Scene], judged: list[str], rng: random.Random, per_image: int = 4
) -> tuple[list[str], list[str]]:
    """Human-like judgments in the release's two formats, for each judged image and ``per_image`` captions.

    One judged caption is sometimes the image's own; the others come from random images. A caption describing a
    scene that shares k of (colour, shape, background) with the judged image gets expert ratings around 1 + k
    (three experts, one point of disagreement now and then) and a yes fraction around k / 3 from three workers.
    """
    names = sorted(scenes)
    expert, crowd = [], []
    for image in judged:
        candidates = rng.sample(names, per_image)
        if rng.random() < 0.1:
            candidates[0] = image
        for candidate in candidates:
            a, b = scenes[image], scenes[candidate]
            shared = (a.colour == b.colour) + (a.shape == b.shape) + (a.background == b.background)
            key = f"{candidate}#{rng.randrange(5)}"
            ratings = [min(4, max(1, 1 + shared + rng.choice((-1, 0, 0, 0, 1)))) for _ in range(3)]
            expert.append(f"{image}\t{key}\t" + "\t".join(str(r) for r in ratings))
            yes = sum(rng.random() < (shared + 0.2) / 3.4 for _ in range(3))
            crowd.append(f"{image}\t{key}\t{yes / 3:.3f}\t{yes}\t{3 - yes}")
    return expert, crowd


def zip_member(zf: zipfile.ZipFile, name: str, data: bytes | str, compression: int = zipfile.ZIP_DEFLATED) -> None:
    """Write one member with a fixed time (``writestr`` with a bare name stamps the current one), so a generated
    archive is byte-identical for the same content."""
    info = zipfile.ZipInfo(name, date_time=(2013, 1, 1, 0, 0, 0))
    info.compress_type = compression
    zf.writestr(info, data)


def write_flickr8k_layout(out_dir: str | Path, count: int, seed: int = 0) -> dict[str, Path]:
    """Write ``Flickr8k_Dataset.zip`` and ``Flickr8k_text.zip`` for ``count`` generated images.

    Splits follow the release's proportions (75% train, 12.5% dev, 12.5% test). Byte-identical for the same
    arguments; each image is written as it is drawn, so memory stays flat. Returns the paths of both zips.
    """
    if count < 8:
        raise ValueError(f"count must be at least 8 to fill three splits, got {count}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    names = [f"{seed:04d}{index:06d}_{rng.getrandbits(40):010x}.jpg" for index in range(count)]
    token_lines, scenes = [], {}
    image_zip, text_zip = out / IMAGE_ZIP_NAME, out / TEXT_ZIP_NAME
    with atomic_path(image_zip) as tmp, zipfile.ZipFile(tmp, "w") as zf:  # each image written as it is drawn
        for name, (scene, image, captions) in zip(names, iter_scenes(count, seed + 1), strict=True):
            scenes[name] = scene
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=90)
            zip_member(zf, IMAGES_DIR_IN_ZIP + name, buffer.getvalue())
            token_lines += [f"{name}#{i}\t{caption}" for i, caption in enumerate(captions)]
    order = list(names)
    random.Random(seed + 2).shuffle(order)
    n_test = n_dev = max(1, count // 8)
    splits = {"test": order[:n_test], "dev": order[n_test : n_test + n_dev], "train": order[n_test + n_dev :]}

    with atomic_path(text_zip) as tmp, zipfile.ZipFile(tmp, "w") as zf:
        zip_member(zf, TOKEN_FILE, ("\n".join(token_lines) + "\n").encode())
        for split, filename in SPLIT_FILES.items():
            zip_member(zf, filename, ("\n".join(splits[split]) + "\n").encode())
        expert, crowd = judgment_lines(scenes, splits["test"], random.Random(seed + 3))
        zip_member(zf, "ExpertAnnotations.txt", ("\n".join(expert) + "\n").encode())
        zip_member(zf, "CrowdFlowerAnnotations.txt", ("\n".join(crowd) + "\n").encode())
        zip_member(zf, "readme.txt", b"Generated Flickr8k-layout data (capsearch.demo.scenes).\n")
    return {"images": image_zip, "text": text_zip}
