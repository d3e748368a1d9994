"""Scoring an index for text queries: by the image (CLIP), by its generated caption, or by their fusion."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import numpy as np

from capsearch.evaluation.ranks import top_k_among, top_k_of_scores
from capsearch.fusion import fused_gallery
from capsearch.index import SearchIndex
from capsearch.params import SEARCH_METHODS

METHODS = SEARCH_METHODS
DEFAULT_ALPHA = 0.5  # the fusion weight when the index has no tuned one


@dataclass
class Hit:
    """One search result. ``weak``: the image itself is not clearly closer to the query than a random image is to a
    random caption (see :func:`weak_below`), whatever the method ranked it by."""

    rank: int
    score: float
    image_id: str
    path: str
    caption: str
    weak: bool = False


CALIBRATION_ROWS = 2000  # images sampled to place the weak-match line
# what a query can hold without holding anything to search for: controls (NUL), format characters (zero-width
# space, BOM) and separators (spaces)
INVISIBLE = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})


def is_blank(query: str) -> bool:
    """Whether ``query`` has nothing to search for: only spaces, control or format characters."""
    return all(unicodedata.category(char) in INVISIBLE for char in query)


def ranked_exactly(index: SearchIndex, exact: bool) -> bool:
    """Whether a search of ``index`` ranks every image exactly: asked so, or an index with no approximate part."""
    return exact or not index.ann or all(ann.kind == "exact" for ann in index.ann.values())


def weak_below(index: SearchIndex) -> float:
    """The image score under which a hit is a weak match: half-way between the median score of an image for its own
    generated caption and for another image's (a sample of :data:`CALIBRATION_ROWS`, seeded; once per index).

    Cosine similarities of a dual encoder have no fixed scale across models, so the line is placed on the index's
    own model and images rather than at a constant.
    """
    if index.weak_line is not None:
        return index.weak_line
    count = len(index.ids)
    if count < 2:
        level = float("-inf")
    else:
        rows = np.sort(np.random.default_rng(0).permutation(count)[:CALIBRATION_ROWS])
        images, captions = np.asarray(index.image_vectors[rows]), np.asarray(index.generated_vectors[rows])
        own = (images * captions).sum(axis=1)
        other = (images * np.roll(captions, 1, axis=0)).sum(axis=1)
        level = float((np.median(own) + np.median(other)) / 2)
    index.weak_line = level
    return level


def gallery_scores(
    index: SearchIndex, query_vectors: np.ndarray, method: str, alpha: float | None = None
) -> np.ndarray:
    """Scores (queries, images): cosine to the image (``image``), to its generated caption (``caption``), or
    ``alpha * image + (1 - alpha) * caption`` (``fusion``; alpha defaults to the index's tuned one, else 0.5)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return query_vectors @ gallery_rows(index, slice(None), method, alpha).T


def _weight(index: SearchIndex, alpha: float | None) -> float:
    return alpha if alpha is not None else index.alpha if index.alpha is not None else DEFAULT_ALPHA


def gallery_rows(index: SearchIndex, rows: np.ndarray | slice, method: str, alpha: float | None = None) -> np.ndarray:
    """The gallery vectors of ``rows`` whose dot product with a query is the ``method``'s score."""
    if method == "image":
        return index.image_vectors[rows]
    if method == "caption":
        return index.generated_vectors[rows]
    return fused_gallery(index.image_vectors[rows], index.generated_vectors[rows], _weight(index, alpha))


def candidate_rows(index: SearchIndex, query_vectors: np.ndarray, method: str, count: int) -> list[np.ndarray]:
    """Per query, the rows the nearest-neighbour indexes propose (fusion: the union of both indexes')."""
    sides = ("image", "caption") if method == "fusion" else (method,)
    found = [index.ann[side].candidates(query_vectors, count) for side in sides]
    return [np.concatenate([rows[i] for rows in found]) for i in range(len(query_vectors))]


def search(
    index: SearchIndex,
    query_vectors: np.ndarray,
    k: int,
    method: str = "image",
    alpha: float | None = None,
    exact: bool = False,
) -> list[list[Hit]]:
    """The top ``k`` images for each query vector (already embedded with the index's CLIP).

    With nearest-neighbour indexes attached (and not ``exact``), each index proposes ``index.candidates`` rows
    (at least ``k``) and those are scored exactly; otherwise every image is scored.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if k <= 0:
        raise ValueError(f"-k must be at least 1, got {k}")
    k = min(k, len(index.ids))
    if exact or not index.ann:
        order, scores = top_k_of_scores(gallery_scores(index, query_vectors, method, alpha), k)
    else:
        rows = candidate_rows(index, query_vectors, method, max(k, index.candidates))
        order, scores = top_k_among(query_vectors, rows, lambda r: gallery_rows(index, r, method, alpha), k)
    line = weak_below(index)
    return [
        [
            Hit(
                rank + 1,
                float(score),
                index.ids[row],
                index.location(row),
                index.generated[row],
                weak=bool(float(np.dot(query, index.image_vectors[row])) < line),
            )
            for rank, (row, score) in enumerate(zip(rows, row_scores, strict=True))
        ]
        for query, rows, row_scores in zip(query_vectors, order, scores, strict=True)
    ]
