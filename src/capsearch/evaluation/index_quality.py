"""What a nearest-neighbour index costs against exact search, measured with text queries (over plain arrays).

Text queries are the honest test: a text embedding lies farther from the image embeddings than an image does
(the modality gap), so an index tuned on image queries loses several points more on text ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from capsearch.evaluation.ranks import TIE, text_to_image_ranks, top_k_among
from capsearch.evaluation.recall import recall_at_k

Candidates = Callable[[np.ndarray, int], np.ndarray]  # (queries, count) -> candidate rows per query


def kth_scores(queries: np.ndarray, gallery: np.ndarray, k: int) -> np.ndarray:
    """Each query's ``k``-th best exact score over ``gallery``."""
    return np.concatenate(
        [
            -np.partition(-(queries[i : i + 256] @ gallery.T), k - 1, axis=1)[:, k - 1]
            for i in range(0, len(queries), 256)
        ]
    )


def neighbour_recall(
    queries: np.ndarray, gallery: np.ndarray, found: np.ndarray, k: int, kth: np.ndarray | None = None
) -> float:
    """Mean share of each query's exact top ``k`` that the ``k`` rows ``found`` for it (``-1``: none) hold.

    Tie-aware: a found row counts when its exact score reaches the query's ``k``-th best exact score, so an index
    that returns another of several equally scored rows (duplicate captions, say) is not marked wrong. ``kth``:
    the queries' :func:`kth_scores`, when already computed.
    """
    if found.shape != (len(queries), k):
        raise ValueError(f"expected {k} found rows for each of {len(queries)} queries, got shape {found.shape}")
    kth = kth_scores(queries, gallery, k) if kth is None else kth
    scores = np.einsum("qd,qkd->qk", queries, gallery[np.maximum(found, 0)])
    reached = (scores >= kth[:, None] - 1e-6) & (found >= 0)
    return float(reached.sum(axis=1).mean() / k)


def ranks_through(queries: np.ndarray, gallery: np.ndarray, targets: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Each query's rank of its target by the evaluate stage's definition (ties count against the query), among
    the rows the index proposed and scored exactly; ``len(gallery) + 1`` where the index did not propose it."""
    ranks = np.full(len(queries), len(gallery) + 1, dtype=np.int64)
    for i, (query, target, rows) in enumerate(zip(queries, targets, candidates, strict=True)):
        rows = np.unique(rows[rows >= 0])
        if target in rows:
            scores = gallery[rows] @ query
            ranks[i] = int((scores >= scores[rows == target][0] - TIE).sum())  # ties as evaluate counts them
    return ranks


def index_quality(
    queries: np.ndarray,
    gallery: np.ndarray,
    targets: np.ndarray,
    candidates: Candidates,
    rerank: int,
    ks: Sequence[int],
    k: int = 10,
) -> dict[str, object]:
    """The index against exact search for ``queries`` over ``gallery`` (row ``targets[q]`` is query q's image).

    * ``recall_at_{k}``: share of the exact top ``k`` the index itself returns in its top ``k``;
    * ``reranked_recall_at_{k}``: the same after re-ranking the index's top ``rerank`` rows exactly (what search
      returns);
    * ``exact`` / ``index``: text→image Recall@K (percent) as the evaluate stage defines it, over the whole gallery
      and over the index's top ``rerank`` rows re-ranked exactly.
    """
    top = min(k, len(gallery))
    proposed = candidates(queries, max(rerank, top))
    reranked, _ = top_k_among(queries, proposed, lambda rows: gallery[rows], top)
    exact_ranks = text_to_image_ranks(queries, gallery, targets)
    index_ranks = ranks_through(queries, gallery, targets, proposed)
    return {
        f"recall_at_{k}": round(neighbour_recall(queries, gallery, candidates(queries, top), top), 4),
        f"reranked_recall_at_{k}": round(neighbour_recall(queries, gallery, reranked, top), 4),
        "exact": {f"R@{n}": round(100 * recall_at_k(exact_ranks, n), 4) for n in ks},
        "index": {f"R@{n}": round(100 * recall_at_k(index_ranks, n), 4) for n in ks},
    }
