"""evaluation.ranks: ranks of the true match, by hand and against brute force; top-k."""

import numpy as np
import pytest

from capsearch.evaluation.ranks import image_to_text_ranks, index_of, text_to_image_ranks, top_k_of_scores


def test_text_to_image_ranks_by_hand():
    # 3 images on the axes; texts point at them with known similarities.
    images = np.eye(3, dtype=np.float32)
    texts = np.array(
        [
            [0.9, 0.1, 0.0],  # own image 0 scores best -> rank 1
            [0.5, 0.3, 0.8],  # own image 1 scores 0.3, two others higher -> rank 3
            [0.2, 0.7, 0.6],  # own image 2 scores 0.6, image 1 higher -> rank 2
        ],
        dtype=np.float32,
    )
    assert text_to_image_ranks(texts, images, np.array([0, 1, 2])).tolist() == [1, 3, 2]


def test_ties_count_against_the_query():
    images = np.eye(3, dtype=np.float32)
    constant = np.ones((2, 3), dtype=np.float32)  # scores every image equally
    assert text_to_image_ranks(constant, images, np.array([0, 2])).tolist() == [3, 3]
    half_tie = np.array([[0.5, 0.5, 0.1]], dtype=np.float32)  # own image 1 ties with image 0
    assert text_to_image_ranks(half_tie, images, np.array([1])).tolist() == [2]


def test_image_to_text_uses_best_of_its_captions():
    # 2 images; captions 0,1 belong to image 0, captions 2,3 to image 1.
    images = np.eye(2, dtype=np.float32)
    captions = np.array([[0.2, 0.0], [0.9, 0.0], [0.5, 0.1], [0.95, 0.3]], dtype=np.float32)
    owner = np.array([0, 0, 1, 1])
    # image 0 scores captions [0.2, 0.9, 0.5, 0.95]: best own 0.9, one foreign (0.95) above -> rank 2
    # image 1 scores captions [0, 0, 0.1, 0.3]: best own 0.3 is top -> rank 1
    assert image_to_text_ranks(images, captions, owner).tolist() == [2, 1]
    # identical own captions do not push each other down
    duplicate = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    assert image_to_text_ranks(images, duplicate, np.array([0, 0, 1])).tolist() == [1, 1]


def _brute_force_t2i(texts, images, owner):
    """Sort the gallery by score, the target after every image it ties with; its 1-based position."""
    ranks = []
    for t, row in enumerate(texts @ images.T):
        order = sorted(range(len(row)), key=lambda j: (-row[j], j == owner[t]))
        ranks.append(order.index(owner[t]) + 1)
    return np.array(ranks)


def _brute_force_i2t(images, texts, owner):
    ranks = []
    for i, row in enumerate(images @ texts.T):
        order = np.argsort(-row, kind="stable")
        for position, j in enumerate(order):
            if owner[j] == i:
                # count earlier foreign texts plus foreign texts tied with this one that came later
                tied_later = [k for k in order[position + 1 :] if owner[k] != i and row[k] == row[j]]
                foreign_before = [k for k in order[:position] if owner[k] != i]
                ranks.append(len(foreign_before) + len(tied_later) + 1)
                break
    return np.array(ranks)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ranks_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(30, 8)).astype(np.float32)
    texts = rng.normal(size=(150, 8)).astype(np.float32)
    texts[::7] = np.round(texts[::7])  # some exact ties
    images[::5] = np.round(images[::5])
    owner = np.repeat(np.arange(30), 5)
    assert (text_to_image_ranks(texts, images, owner) == _brute_force_t2i(texts, images, owner)).all()
    assert (image_to_text_ranks(images, texts, owner) == _brute_force_i2t(images, texts, owner)).all()


def test_top_k_and_index_of():
    gallery = np.eye(4, dtype=np.float32)
    order, scores = top_k_of_scores(np.array([[0.1, 0.9, 0.5, 0.0]], dtype=np.float32) @ gallery.T, 2)
    assert order.tolist() == [[1, 2]] and np.allclose(scores, [[0.9, 0.5]])
    assert index_of(["a", "b", "c"], ["c", "a"]).tolist() == [2, 0]
    with pytest.raises(KeyError, match="'z' not found"):
        index_of(["a"], ["z"])


@pytest.mark.parametrize("k", [1, 3, 7, 20])
def test_top_k_matches_a_stable_full_sort_with_ties(k):
    scores = np.random.default_rng(k).integers(0, 4, size=(50, 20)).astype(np.float32)  # many ties
    order, values = top_k_of_scores(scores, k)
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    assert (order == expected).all()
    assert np.array_equal(values, np.take_along_axis(scores, expected, axis=1))


def test_a_nan_score_is_never_a_hit():
    # a broken model's NaN vectors: every score NaN (before, no image scored >= NaN: rank 0, a hit at every K)
    broken = np.full((3, 3), np.nan, dtype=np.float32)
    assert text_to_image_ranks(broken, np.eye(3, dtype=np.float32), np.array([0, 1, 2])).tolist() == [3, 3, 3]
    assert image_to_text_ranks(broken, np.eye(3, dtype=np.float32), np.array([0, 1, 2])).tolist() == [3, 3, 3]
    # one NaN image: the texts of the others are not pushed down by it, its own text ranks last
    images = np.eye(3, dtype=np.float32)
    images[2] = np.nan
    texts = np.array([[0.9, 0.1, 0.0], [0.1, 0.9, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    assert text_to_image_ranks(texts, images, np.array([0, 1, 2])).tolist() == [1, 1, 3]
    order, scores = top_k_of_scores(np.array([[np.nan, 0.2, 0.5]], dtype=np.float32), 2)
    assert order.tolist() == [[2, 1]] and scores.tolist() == [[0.5, pytest.approx(0.2)]]
