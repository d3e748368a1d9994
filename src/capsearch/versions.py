"""The versions of the libraries that change capsearch's numbers, part of every result's identity.

An upgrade of torch, transformers, tokenizers, Pillow, numpy or faiss can change a caption, an embedding or an
index. Their installed versions are part of every result-cache key and part key and are written in each manifest,
so results computed under other versions are never reused; ``requirements.lock`` pins them for ``make``.
"""

from __future__ import annotations

import importlib.metadata
from functools import cache

# distribution names: what computes captions and embeddings, decodes and resizes images, and builds the index
NUMERIC_LIBRARIES = ("torch", "transformers", "tokenizers", "pillow", "numpy", "faiss-cpu")


@cache
def library_versions(names: tuple[str, ...] = NUMERIC_LIBRARIES) -> dict[str, str]:
    """Installed version of each library (``"missing"`` where one is not installed)."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions
