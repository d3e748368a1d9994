"""Scoring an index for text queries: by the image (CLIP), by its generated caption, or by their fusion."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from capsearch.evaluation.ranks import top_k_of_scores
from capsearch.fusion import fused_gallery
from capsearch.index import SearchIndex
from capsearch.params import SEARCH_METHODS

METHODS = SEARCH_METHODS
DEFAULT_ALPHA = 0.5  # the fusion weight when the index has no tuned one


@dataclass
class Hit:
    """One search result."""

    rank: int
    score: float
    image_id: str
    path: str
    caption: str


def gallery_scores(
    index: SearchIndex, query_vectors: np.ndarray, method: str, alpha: float | None = None
) -> np.ndarray:
    """Scores (queries, images): cosine to the image (``image``), to its generated caption (``caption``), or
    ``alpha * image + (1 - alpha) * caption`` (``fusion``; alpha defaults to the index's tuned one, else 0.5)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if method == "image":
        gallery = index.image_vectors
    elif method == "caption":
        gallery = index.generated_vectors
    else:
        weight = alpha if alpha is not None else index.alpha if index.alpha is not None else DEFAULT_ALPHA
        gallery = fused_gallery(index.image_vectors, index.generated_vectors, weight)
    return query_vectors @ gallery.T


def search(
    index: SearchIndex, query_vectors: np.ndarray, k: int, method: str = "image", alpha: float | None = None
) -> list[list[Hit]]:
    """The top ``k`` images for each query vector (already embedded with the index's CLIP)."""
    if k <= 0:
        raise ValueError(f"-k must be at least 1, got {k}")
    order, scores = top_k_of_scores(gallery_scores(index, query_vectors, method, alpha), k)
    return [
        [
            Hit(rank + 1, float(score), index.ids[row], index.location(row), index.generated[row])
            for rank, (row, score) in enumerate(zip(rows, row_scores, strict=True))
        ]
        for rows, row_scores in zip(order, scores, strict=True)
    ]
