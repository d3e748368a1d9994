"""Fusion retrieval: score = alpha * sim(query, image) + (1 - alpha) * sim(query, generated caption).

The fused score is linear in the gallery, so it is a plain dot product with the fused gallery vectors
``alpha * image + (1 - alpha) * caption``, and the usual rank code applies. ``alpha`` is chosen on a split other
than the one reported (the ``tune_fusion`` stage uses ``dev``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from capsearch.evaluation.ranks import text_to_image_ranks
from capsearch.evaluation.recall import recall_at_k


def fused_gallery(image_vectors: np.ndarray, caption_vectors: np.ndarray, alpha: float) -> np.ndarray:
    """Gallery vectors whose dot product with a query is the fused score."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be within 0..1, got {alpha}")
    if image_vectors.shape != caption_vectors.shape:
        raise ValueError(f"image {image_vectors.shape} and caption {caption_vectors.shape} embeddings differ in shape")
    return alpha * image_vectors + (1.0 - alpha) * caption_vectors


def fusion_ranks(
    query_vectors: np.ndarray, image_vectors: np.ndarray, caption_vectors: np.ndarray, targets: np.ndarray, alpha: float
) -> np.ndarray:
    """Rank of each query's own image under the fused score."""
    return text_to_image_ranks(query_vectors, fused_gallery(image_vectors, caption_vectors, alpha), targets)


def choose_alpha(
    query_vectors: np.ndarray,
    image_vectors: np.ndarray,
    caption_vectors: np.ndarray,
    targets: np.ndarray,
    alphas: Sequence[float],
    ks: Sequence[int] = (1, 5, 10),
) -> tuple[float, list[dict[str, float]]]:
    """The alpha with the best mean Recall@K over ``ks`` (the first on ties), and the whole grid."""
    if not alphas:
        raise ValueError("fusion.alphas: expected at least one value")
    grid = []
    for alpha in alphas:
        ranks = fusion_ranks(query_vectors, image_vectors, caption_vectors, targets, float(alpha))
        row = {"alpha": float(alpha), **{f"R@{k}": round(100 * recall_at_k(ranks, k), 4) for k in ks}}
        row["mean_recall"] = round(float(np.mean([row[f"R@{k}"] for k in ks])), 4)
        grid.append(row)
    best = max(grid, key=lambda row: row["mean_recall"])
    return best["alpha"], grid
