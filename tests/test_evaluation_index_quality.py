"""evaluation.index_quality: an index against exact search, by hand and on CLIP-like vectors."""

import numpy as np
import pytest

from capsearch.evaluation.index_quality import index_quality, neighbour_recall, ranks_through

GALLERY = np.array([[1.0, 0.0], [0.8, 0.6], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.0]], dtype=np.float32)
QUERY = np.array([[1.0, 0.0]], dtype=np.float32)  # scores 1, .8, .8, 0, -1


def test_neighbour_recall_by_hand_counts_an_equally_scored_row():
    assert neighbour_recall(QUERY, GALLERY, np.array([[0, 1]]), 2) == 1.0
    assert neighbour_recall(QUERY, GALLERY, np.array([[0, 2]]), 2) == 1.0  # row 2 ties row 1: as good
    assert neighbour_recall(QUERY, GALLERY, np.array([[0, 3]]), 2) == 0.5
    assert neighbour_recall(QUERY, GALLERY, np.array([[3, -1]]), 2) == 0.0  # -1: the index found nothing
    with pytest.raises(ValueError, match="expected 2 found rows"):
        neighbour_recall(QUERY, GALLERY, np.array([[0, 1, 2]]), 2)


def test_ranks_through_the_index_by_hand():
    proposed = np.array([[3, 1, 0], [2, 1, -1], [3, 4, -1]])
    targets = np.array([0, 2, 0])
    # query 1: target 0 (score 1) first; query 2: row 2 ties row 1 at .8, and ties count against; query 3: missed
    assert ranks_through(np.repeat(QUERY, 3, axis=0), GALLERY, targets, proposed).tolist() == [1, 2, 6]


def test_an_index_that_misses_rows_loses_recall_and_reranking_restores_the_order():
    rng = np.random.default_rng(0)
    gallery = rng.standard_normal((300, 16)).astype(np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    targets = rng.integers(0, 300, 50)
    queries = gallery[targets] + 0.3 * rng.standard_normal((50, 16)).astype(np.float32)
    scores = queries @ gallery.T
    exact_order = np.argsort(-scores, axis=1, kind="stable")

    def perfect(q, count):
        return np.argsort(-(q @ gallery.T), axis=1, kind="stable")[:, :count]

    def shuffled_top(q, count):  # the right rows in the wrong order
        return perfect(q, count)[:, ::-1]

    def blind_to_odd_rows(q, count):  # never proposes an odd row
        order = np.argsort(-(q @ gallery.T), axis=1, kind="stable")
        return np.stack([row[row % 2 == 0][:count] for row in order])

    ks = (1, 5, 10)
    exact = index_quality(queries, gallery, targets, perfect, 10, ks)
    assert exact["recall_at_10"] == exact["reranked_recall_at_10"] == 1.0 and exact["index"] == exact["exact"]
    expected = {f"R@{k}": 100 * np.mean((exact_order[:, :k] == targets[:, None]).any(axis=1)) for k in ks}
    assert exact["exact"] == pytest.approx(expected)
    shuffled = index_quality(queries, gallery, targets, shuffled_top, 10, ks)
    assert shuffled["recall_at_10"] == 1.0 and shuffled["index"] == exact["exact"]  # re-ranking fixes the order
    blind = index_quality(queries, gallery, targets, blind_to_odd_rows, 50, ks)
    odd_share = np.mean([len([r for r in row[:10] if r % 2]) / 10 for row in exact_order])
    assert blind["recall_at_10"] == pytest.approx(1 - odd_share, abs=1e-4)
    even = targets % 2 == 0
    assert blind["index"]["R@10"] <= 100 * even.mean() + 1e-9  # odd targets can never be found


def test_an_exact_index_agrees_with_exact_search_on_a_gallery_of_duplicates():
    """Generated captions repeat (a toy captioner says "a red circle" of many images): the exact index and the
    evaluate stage must rank those ties alike, whatever kernel rounds each copy's score (GEMM there, GEMV here)."""
    import faiss

    rng = np.random.default_rng(1)
    distinct = rng.standard_normal((12, 64)).astype(np.float32)
    distinct /= np.linalg.norm(distinct, axis=1, keepdims=True)
    gallery = distinct[rng.integers(0, 12, 400)]
    targets = rng.integers(0, 400, 600)
    queries = (gallery[targets] + 0.5 * rng.standard_normal((600, 64))).astype(np.float32)
    flat = faiss.IndexFlatIP(64)
    flat.add(gallery)
    quality = index_quality(queries, gallery, targets, lambda q, count: flat.search(q, count)[1], 400, (1, 5, 10))
    assert quality["index"] == quality["exact"]
