"""Generated scenes as webdataset shards in img2dataset's layout (one caption per image), for tests and the demo.

Kept apart from :mod:`capsearch.demo.scenes` on purpose: the toy models are keyed by that module's code.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from capsearch.demo.scenes import iter_scenes
from capsearch.io import atomic_path

CORRUPT_BYTES = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4  # a JPEG header, then noise no decoder reads


def _tar_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 1356998400, 0o644  # fixed: byte-identical shards
    tar.addfile(info, io.BytesIO(data))


def write_webdataset_shards(
    out_dir: str | Path, count: int, per_shard: int, seed: int = 0, corrupt: tuple[int, ...] = ()
) -> list[Path]:
    """Write ``count`` generated images as img2dataset writes shards: ``00000.tar`` ... of ``per_shard`` samples,
    each ``KEY.jpg``, ``KEY.txt`` (its first caption) and ``KEY.json``; keys are ``SSSSSIIII`` (shard, index).

    The images at positions ``corrupt`` get bytes no decoder reads. Byte-identical for the same arguments. Each
    image is written as it is generated, so memory stays flat however many there are. Returns the shard paths.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shards: list[Path] = []
    items = iter_scenes(count, seed + 1)
    for start in range(0, count, per_shard):
        shard = out / f"{len(shards):05d}.tar"
        with atomic_path(shard) as tmp, tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for position in range(start, min(start + per_shard, count)):
                _, image, captions = next(items)
                key = f"{len(shards):05d}{position - start:04d}"
                buffer = io.BytesIO()
                image.save(buffer, format="JPEG", quality=90)
                data = buffer.getvalue() if position not in corrupt else CORRUPT_BYTES
                meta = {"key": key, "caption": captions[0], "status": "success", "width": image.width}
                _tar_bytes(tar, f"{key}.jpg", data)
                _tar_bytes(tar, f"{key}.txt", captions[0].encode("utf-8"))
                _tar_bytes(tar, f"{key}.json", json.dumps(meta, sort_keys=True).encode("utf-8"))
        shards.append(shard)
    return shards
