"""A cache of per-image results (captions, embeddings) keyed by model, code, settings and image content.

The code is part of the key (:func:`capsearch.imports.code_fingerprint` of the model wrapper and everything it
imports), so after an edit to, say, the resize in ``models/pixels.py`` nothing computed before the edit is reused.

Growing a subset from 1,000 to 2,000 images then computes only the new 1,000; an interrupted stage resumes
from the batches it finished. The cache lives outside DVC's outputs (``$CAPSEARCH_CACHE_DIR``, else
``$XDG_CACHE_HOME/capsearch``, else ``~/.cache/capsearch``) in one SQLite file; deleting it is always safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from capsearch.versions import library_versions

CACHE_FILE = "results.sqlite"
COMMIT = re.compile(r"[0-9a-f]{40}")  # a full git commit id, as the Hub's snapshots are named
CACHE_FORMAT = 2  # bump when the stored encoding changes meaning (code edits change the code fingerprint)


def default_cache_dir() -> Path:
    """Where results are cached unless told otherwise."""
    explicit = os.environ.get("CAPSEARCH_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "capsearch"


def content_hash(data: bytes) -> str:
    """SHA-256 of an encoded image file."""
    return hashlib.sha256(data).hexdigest()


def model_fingerprint(model_id: str, revision: str | None = None) -> str:
    """What identifies a model's weights: SHA-256 of a local folder's files, or the hub commit they came from.

    ``revision`` is best the commit :func:`capsearch.models.runtime.resolve_model` resolved; a branch name is
    looked up in the hub cache.
    """
    local = Path(model_id).expanduser()
    if local.is_dir():
        digest = hashlib.sha256()
        for path in sorted(local.iterdir()):
            if path.is_file() and path.suffix in (".safetensors", ".json", ".txt", ".model", ".bin", ".pth"):
                digest.update(path.name.encode())
                with path.open("rb") as handle:
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(block)
        return "sha256:" + digest.hexdigest()
    if revision is not None and COMMIT.fullmatch(revision):
        return f"{model_id}@{revision}"  # the commit the weights were loaded from
    from huggingface_hub import try_to_load_from_cache

    resolved = try_to_load_from_cache(model_id, "config.json", revision=revision)
    if isinstance(resolved, str):  # .../snapshots/<commit>/config.json
        return f"{model_id}@{Path(resolved).parent.name}"
    raise ValueError(
        f"cannot fingerprint model {model_id!r} (revision {revision!r}): not a local folder, not in the hub cache"
    )


def namespace(**settings: Any) -> str:
    """A key for everything besides the image that decides a result (model, dtype, decoding, preprocessing) and the
    versions of the libraries that compute it."""
    blob = json.dumps(
        {"format": CACHE_FORMAT, "libraries": library_versions(), **settings}, sort_keys=True, default=str
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


class ResultCache:
    """Results by (namespace, image hash) in one SQLite file; each ``put`` is committed at once."""

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / CACHE_FILE
        try:
            self._db = sqlite3.connect(self.path, timeout=60)
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS results (namespace TEXT, image TEXT, value BLOB, "
                "PRIMARY KEY (namespace, image))"
            )
            self._db.commit()
        except sqlite3.DatabaseError as exc:
            raise OSError(f"result cache {self.path} is unusable ({exc}); delete it, it is safe to") from exc

    def get_many(self, space: str, images: Sequence[str]) -> dict[str, bytes]:
        """The cached values of those ``images`` (hashes) that are present."""
        found: dict[str, bytes] = {}
        unique = sorted(set(images))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT image, value FROM results WHERE namespace = ? AND image IN ({marks})", [space, *chunk]
            )
            found.update((image, bytes(value)) for image, value in rows)
        return found

    def put_many(self, space: str, values: Mapping[str, bytes] | Iterable[tuple[str, bytes]]) -> None:
        """Store values by image hash, committed before returning."""
        items = values.items() if isinstance(values, Mapping) else values
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO results (namespace, image, value) VALUES (?, ?, ?)",
                [(space, image, value) for image, value in items],
            )

    def close(self) -> None:
        """Close the database."""
        self._db.close()
