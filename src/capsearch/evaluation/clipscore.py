"""CLIPScore and RefCLIPScore (Hessel et al., 2021) over normalised CLIP embeddings.

* CLIP-S(c, v) = w * max(cos(c, v), 0) with w = 2.5;
* RefCLIP-S(c, R, v) = harmonic mean of CLIP-S(c, v) and max(max_r cos(c, r), 0).

As in the paper's code, candidate and reference texts are embedded with the prefix "A photo depicts".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CLIPSCORE_PREFIX = "A photo depicts "
W = 2.5


def with_prefix(texts: Sequence[str]) -> list[str]:
    """Texts as CLIPScore embeds them."""
    return [CLIPSCORE_PREFIX + text for text in texts]


def clip_score(candidate_vectors: np.ndarray, image_vectors: np.ndarray, w: float = W) -> np.ndarray:
    """Per-row CLIP-S of candidate i against image i (both L2-normalised)."""
    if candidate_vectors.shape != image_vectors.shape:
        raise ValueError(f"candidates {candidate_vectors.shape} and images {image_vectors.shape} differ in shape")
    return w * np.maximum(np.einsum("ij,ij->i", candidate_vectors, image_vectors), 0.0)


def best_reference_similarity(
    candidate_vectors: np.ndarray, reference_vectors: np.ndarray, reference_owner: np.ndarray
) -> np.ndarray:
    """max(max_r cos(c_i, r), 0) over the references r whose owner row is i."""
    best = np.zeros(len(candidate_vectors))
    sims = np.einsum("ij,ij->i", candidate_vectors[reference_owner], reference_vectors)
    np.maximum.at(best, reference_owner, sims)
    return best


def harmonic_mean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise 2ab/(a+b), 0 where a+b is 0."""
    total = a + b
    return np.divide(2 * a * b, total, out=np.zeros_like(total, dtype=np.float64), where=total > 0)


def ref_clip_score(
    candidate_vectors: np.ndarray,
    image_vectors: np.ndarray,
    reference_vectors: np.ndarray,
    reference_owner: np.ndarray,
    w: float = W,
) -> np.ndarray:
    """Per-row RefCLIP-S; ``reference_owner[j]`` is the candidate row reference j belongs to."""
    return harmonic_mean(
        clip_score(candidate_vectors, image_vectors, w),
        best_reference_similarity(candidate_vectors, reference_vectors, reference_owner),
    )
