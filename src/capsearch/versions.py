"""The versions of the libraries that change capsearch's numbers, part of every result's identity.

An upgrade of torch, transformers, tokenizers, Pillow, numpy or faiss can change a caption, an embedding or an
index. Their installed versions are part of every result-cache key and part key and are written in each manifest,
so results computed under other versions are never reused; ``requirements.lock`` pins them for ``make``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from functools import cache
from pathlib import Path

# distribution names: what computes captions and embeddings, decodes and resizes images, and builds the index
NUMERIC_LIBRARIES = ("torch", "transformers", "tokenizers", "pillow", "numpy", "faiss-cpu")


@cache
def library_versions(names: tuple[str, ...] = NUMERIC_LIBRARIES) -> dict[str, str]:
    """Installed version of each library (``"missing"`` where one is not installed); torch's with its build label
    (``2.13.0+cpu``, ``2.13.0+cu130``), which its package metadata leaves out for PyPI's own build."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "missing"
    if versions.get("torch", "missing") != "missing":
        versions["torch"] = _built_version("torch") or versions["torch"]
    return versions


def _built_version(package: str) -> str | None:
    """``__version__`` as the package's ``version.py`` writes it (read, not imported: importing torch takes seconds)."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    try:
        text = (Path(spec.origin).parent / "version.py").read_text(encoding="utf-8")
    except OSError:
        return None
    found = re.search(r"^__version__\s*(?::\s*str\s*)?=\s*['\"]([^'\"]+)['\"]", text, re.M)
    return found.group(1) if found else None
