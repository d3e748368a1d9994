"""Ranking over cosine similarities: where the correct item lands for each query.

A rank is ``1 + (number of wrong gallery items scoring at least as high as the best correct one)``: ties are
counted against the query, so a model that scores everything equally gets the worst rank, never the best. Scores
within :data:`TIE` of each other are ties: identical vectors (two images given the same caption) get scores that
differ in the last bits with their row's place in a BLAS kernel, and that must not decide a rank. A NaN score (a
broken model's) ranks below every number: a query whose own item scores NaN gets the worst rank, never a hit.

LAION's CLIP_benchmark ranks by ``torch.topk``'s order instead, which breaks ties by position; where no query has a
tie the two agree exactly (tested against its code), and :func:`tied` counts the queries where they can differ.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

CHUNK = 2048
TIE = 1e-6  # cosine scores this close are one score (float32 rounding of identical vectors is ~1e-7)


def _ordered(scores: np.ndarray) -> np.ndarray:
    """``scores`` with NaN as -inf, the lowest of all (a comparison with NaN is false either way)."""
    return np.where(np.isnan(scores), -np.inf, scores)


def text_to_image_ranks(
    text_vectors: np.ndarray, image_vectors: np.ndarray, text_image_index: np.ndarray, ties_for: bool = False
) -> np.ndarray:
    """Rank (1-based) of each text's own image among all images; ``text_image_index[t]`` is its image row.
    ``ties_for``: the best rank a tie allows instead (what a tie-breaking order can give at most)."""
    ranks = np.empty(len(text_vectors), dtype=np.int64)
    for start in range(0, len(text_vectors), CHUNK):
        scores = _ordered(text_vectors[start : start + CHUNK] @ image_vectors.T)
        rows = np.arange(len(scores))
        target = scores[rows, text_image_index[start : start + CHUNK]]
        above = scores > target[:, None] + TIE if ties_for else scores >= target[:, None] - TIE
        own = np.zeros_like(above)
        own[rows, text_image_index[start : start + CHUNK]] = True
        ranks[start : start + CHUNK] = 1 + (above & ~own).sum(axis=1)
    return ranks


def image_to_text_ranks(
    image_vectors: np.ndarray, text_vectors: np.ndarray, text_image_index: np.ndarray, ties_for: bool = False
) -> np.ndarray:
    """Rank (1-based) of the first of each image's own texts among all texts (``ties_for``: as above)."""
    ranks = np.empty(len(image_vectors), dtype=np.int64)
    owner = np.asarray(text_image_index)
    for start in range(0, len(image_vectors), CHUNK):
        scores = _ordered(image_vectors[start : start + CHUNK] @ text_vectors.T)
        own = owner[None, :] == np.arange(start, start + len(scores))[:, None]
        if not own.any(axis=1).all():
            missing = start + int(np.flatnonzero(~own.any(axis=1))[0])
            raise ValueError(f"image row {missing} has no texts: image→text rank is undefined")
        best_own = np.where(own, scores, -np.inf).max(axis=1)
        above = scores > best_own[:, None] + TIE if ties_for else scores >= best_own[:, None] - TIE
        ranks[start : start + CHUNK] = 1 + (above & ~own).sum(axis=1)
    return ranks


def tied(ranks_against: np.ndarray, ranks_for: np.ndarray) -> int:
    """How many queries a tie decides: their rank with ties counted against them differs from the best one."""
    return int((np.asarray(ranks_against) != np.asarray(ranks_for)).sum())


def top_k_of_scores(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best columns of each row of ``scores``, best first (ties: lower index first)."""
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    k = min(k, scores.shape[1])
    scores = _ordered(scores)
    if k < scores.shape[1]:
        candidates = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        # argpartition may cut through a tie: widen to every item scoring at least the k-th score
        threshold = np.take_along_axis(scores, candidates, axis=1).min(axis=1, keepdims=True)
        order = [np.flatnonzero(row >= t) for row, t in zip(scores, threshold[:, 0], strict=True)]
        order = np.stack([o[np.lexsort((o, -row[o]))][:k] for o, row in zip(order, scores, strict=True)])
    else:
        order = np.argsort(-scores, axis=1, kind="stable")
    return order, np.take_along_axis(scores, order, axis=1)


def index_of(ids: Sequence[str], wanted: Sequence[str]) -> np.ndarray:
    """Row of each ``wanted`` id in ``ids``; a KeyError names the first id that is missing."""
    position = {item: row for row, item in enumerate(ids)}
    try:
        return np.array([position[item] for item in wanted], dtype=np.int64)
    except KeyError as exc:
        raise KeyError(f"id {exc.args[0]!r} not found among {len(ids)} ids") from exc


def top_k_among(
    query_vectors: np.ndarray, candidates: Sequence[np.ndarray], vectors_of: Callable[[np.ndarray], np.ndarray], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best of each query's ``candidates`` rows (``-1`` entries ignored), scored exactly against
    ``vectors_of(rows)``; rows best first, ties to the lower row, as :func:`top_k_of_scores` over the whole gallery.
    """
    orders, scores = [], []
    for query, rows in zip(query_vectors, candidates, strict=True):
        rows = np.unique(rows[rows >= 0])
        best, best_scores = top_k_of_scores((vectors_of(rows) @ query)[None, :], k)
        orders.append(rows[best[0]])
        scores.append(best_scores[0])
    return np.stack(orders), np.stack(scores)
