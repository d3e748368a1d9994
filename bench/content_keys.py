"""``python bench/content_keys.py``: what the part keys' content digests cost at 10^5 images.

A part is reused only while the digest of its images' bytes is unchanged (``ImageSource.content_digest``): every
shard is read and hashed once per stage run, a folder's images are each read and hashed, and a zip's digest comes
from its central directory. This script builds the three layouts over the same bytes (generated 500x375 JPEGs of
about Flickr's size, reused cyclically: SHA-256 costs the same for repeated bytes), and times, on a warm page
cache:

- ``open``: what every run paid before content keys: indexing the source (``ImageSource(...)`` and its ids);
- ``content digest``: :func:`capsearch.engine.with_content` over the stage's part plan (one part per shard, or per
  1,000 images of a zip or folder), as caption and embed_images call it: shards hashed on every core.

Each row names the machine; the table in ``bench/RESULTS.md`` compares the digest with the stage's own work on the
same number of images.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import tarfile
import time
import zipfile
from pathlib import Path

import torch
from base_models import describe_machine  # bench/ is the script folder

from capsearch.artifacts import plan_parts
from capsearch.data.images import ImageSource
from capsearch.engine import with_content
from stages import write_photos

PER_SHARD = 10_000  # img2dataset's default shard size


def build_layouts(root: Path, images: int, distinct: int) -> dict[str, Path]:
    """The same ``images`` JPEGs (``distinct`` different ones, repeated) as shards, a zip and a folder."""
    photos = root / "photos"
    names = write_photos(photos, distinct, processes=os.cpu_count() or 1)
    blobs = [(photos / name).read_bytes() for name in names]
    layouts = {"shards": root / "shards", "zip": root / "Flickr8k_Dataset.zip", "folder": root / "folder"}
    if not layouts["shards"].exists():
        layouts["shards"].mkdir(parents=True)
        for start in range(0, images, PER_SHARD):
            shard = layouts["shards"] / f"{start // PER_SHARD:05d}.tar"
            with tarfile.open(shard.with_suffix(".tmp"), "w") as tar:
                for i in range(start, min(start + PER_SHARD, images)):
                    for suffix, data in ((".jpg", blobs[i % distinct]), (".txt", b"a photo")):
                        info = tarfile.TarInfo(f"{i:09d}{suffix}")
                        info.size = len(data)
                        tar.addfile(info, io.BytesIO(data))
            shard.with_suffix(".tmp").rename(shard)
    if not layouts["zip"].exists():
        with zipfile.ZipFile(layouts["zip"].with_suffix(".tmp"), "w", zipfile.ZIP_STORED) as archive:
            for i in range(images):
                archive.writestr(f"Flicker8k_Dataset/{i:09d}.jpg", blobs[i % distinct])
        layouts["zip"].with_suffix(".tmp").rename(layouts["zip"])
    if not layouts["folder"].exists():
        temporary = root / "folder.tmp"
        temporary.mkdir(parents=True, exist_ok=True)
        for i in range(images):
            (temporary / f"{i:09d}.jpg").write_bytes(blobs[i % distinct])
        temporary.rename(layouts["folder"])
    return layouts


def measure(layout: str, path: Path, machine: str, repeats: int) -> list[dict]:
    """The open and content-digest rows of one layout (medians of ``repeats``): the digest as the stages take it,
    over their part plan."""
    source = ImageSource(path)
    ids = source.ids()
    rows = [(image_id, str(source.shard_of(image_id) if source.shards else path)) for image_id in ids]
    with_content(plan_parts(rows))  # warm the page cache
    opened, digest = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        ImageSource(path).ids()
        opened.append(time.perf_counter() - started)
        started = time.perf_counter()
        with_content(plan_parts(rows))
        digest.append(time.perf_counter() - started)
    megabytes = sum(f.stat().st_size for f in ([path] if path.is_file() else path.iterdir())) / 1e6
    return [
        {"layout": layout, "work": work, "images": len(ids), "megabytes": round(megabytes),
         "seconds": round(statistics.median(s), 3), "runs": [round(x, 3) for x in s],
         "images_per_s": round(len(ids) / statistics.median(s)), "machine": machine}
        for work, s in (("open", opened), ("content digest", digest))
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    """Build the layouts (once; kept in --dir), time them, print and write the rows."""
    parser = argparse.ArgumentParser(prog="python bench/content_keys.py", description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--distinct", type=int, default=512, help="different photos among them")
    parser.add_argument("--quick", action="store_true", help="500 images: checks the script")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per row (the median is reported)")
    parser.add_argument("--dir", default="build/bench/content_keys")
    parser.add_argument("--out", default="bench/results/content_keys.json")
    args = parser.parse_args(argv)
    images = 500 if args.quick else args.images
    root = Path(args.dir) / str(images)
    layouts = build_layouts(root, images, min(args.distinct, images))
    machine = describe_machine(torch.device("cpu"))
    rows = [row for layout, path in layouts.items() for row in measure(layout, path, machine, args.repeats)]
    for row in rows:
        print(f"{row['layout']:>6}  {row['work']:<15} {row['images']:>7} images  {row['megabytes']:>6} MB  "
              f"{row['seconds']:>8.3f} s  {row['images_per_s']:>9} images/s")  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n", encoding="utf-8")
    print(f"machine: {machine}; written to {out}")


if __name__ == "__main__":
    main()
