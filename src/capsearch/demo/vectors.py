"""Synthetic CLIP-like embeddings for the index tests and benchmark.

Image vectors lie near a low-dimensional subspace (``latent`` dimensions projected into ``dim``, plus a little
isotropic noise), grouped around ``concepts`` centres, as CLIP's image embeddings do: their intrinsic dimension
is far below 512, which is what makes graph and inverted-list indexes work on them. Text queries each match one
image but sit off the image cloud: shifted along one shared direction (the modality gap) and blurred, so a
query's cosine to its own image is about 0.3, as CLIP's is. Indexes lose more recall on such queries than on
image queries, which is why capsearch measures them with text.
"""

from __future__ import annotations

import numpy as np

CHUNK = 100_000  # rows generated at a time: 10^6 x 512 floats is 2 GB already


def _normalise(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def _basis(dim: int, latent: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((latent, dim), dtype=np.float32) / np.sqrt(latent)


def clip_like_images(count: int, dim: int = 512, concepts: int = 1000, latent: int = 32, seed: int = 0) -> np.ndarray:
    """``count`` unit vectors: ``concepts`` clusters in a ``latent``-dimensional subspace, plus 0.5% noise."""
    rng = np.random.default_rng(seed)
    basis = _basis(dim, latent, seed)
    centres = rng.standard_normal((concepts, latent), dtype=np.float32)
    images = np.empty((count, dim), dtype=np.float32)
    for start in range(0, count, CHUNK):
        rows = min(CHUNK, count - start)
        codes = centres[rng.integers(0, concepts, rows)] + 0.8 * rng.standard_normal((rows, latent), dtype=np.float32)
        noise = 0.48 * rng.standard_normal((rows, dim), dtype=np.float32) / np.sqrt(dim)
        images[start : start + rows] = _normalise(codes @ basis / np.sqrt(latent) + noise)
    return images


def text_like_queries(
    images: np.ndarray, count: int, latent: int = 32, basis_seed: int = 0, seed: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` unit queries and the image row each one describes (use the ``latent`` and ``basis_seed`` the
    images were made with): the image moved along the modality gap and blurred within and off its subspace."""
    rng = np.random.default_rng(seed)
    dim = images.shape[1]
    basis = _basis(dim, latent, basis_seed)
    gap = _normalise(rng.standard_normal((1, dim)))[0]
    targets = rng.integers(0, len(images), count)
    blur = 0.6 * rng.standard_normal((count, latent), dtype=np.float32) @ basis / np.sqrt(latent)
    off = 0.8 * rng.standard_normal((count, dim), dtype=np.float32) / np.sqrt(dim)
    return _normalise(images[targets] + gap + blur + off), targets
