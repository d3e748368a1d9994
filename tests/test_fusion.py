"""Fusion retrieval: the fused score and the choice of alpha."""

import numpy as np
import pytest

from capsearch.evaluation.ranks import text_to_image_ranks
from capsearch.fusion import choose_alpha, fused_gallery, fusion_ranks


def _unit(rows):
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_fused_score_is_the_weighted_sum_of_similarities():
    rng = np.random.default_rng(0)
    q, img, cap = _unit(rng.normal(size=(4, 8))), _unit(rng.normal(size=(6, 8))), _unit(rng.normal(size=(6, 8)))
    expected = 0.3 * (q @ img.T) + 0.7 * (q @ cap.T)
    assert np.allclose(q @ fused_gallery(img, cap, 0.3).T, expected)
    targets = np.array([0, 1, 2, 3])
    assert (fusion_ranks(q, img, cap, targets, 1.0) == text_to_image_ranks(q, img, targets)).all()
    assert (fusion_ranks(q, img, cap, targets, 0.0) == text_to_image_ranks(q, cap, targets)).all()
    with pytest.raises(ValueError, match=r"alpha must be within 0\.\.1"):
        fused_gallery(img, cap, 1.5)


@pytest.mark.parametrize(("informative", "expected_alpha"), [("captions", 0.0), ("images", 1.0)])
def test_choose_alpha_follows_the_informative_side(informative, expected_alpha):
    rng = np.random.default_rng(1)
    truth = _unit(rng.normal(size=(40, 16)))
    noise = _unit(rng.normal(size=(40, 16)))
    images, captions = (noise, truth) if informative == "captions" else (truth, noise)
    targets = np.repeat(np.arange(40), 2)
    queries = _unit(truth[targets] + 0.1 * rng.normal(size=(80, 16)))
    alpha, grid = choose_alpha(queries, images, captions, targets, [1.0, 0.5, 0.0])
    assert alpha == expected_alpha
    assert [row["alpha"] for row in grid] == [1.0, 0.5, 0.0]
    best = next(row for row in grid if row["alpha"] == alpha)
    assert best["R@1"] > 90 and best["mean_recall"] == max(row["mean_recall"] for row in grid)
