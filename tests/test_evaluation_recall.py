"""evaluation.recall: Recall@K, rank summaries and the bootstrap interval, by hand."""

import numpy as np
import pytest

from capsearch.evaluation.recall import mean_rank, median_rank, recall_at_k, retrieval_report, summarise_ranks


def test_recall_at_k_by_hand():
    ranks = np.array([1, 2, 5, 11])
    assert recall_at_k(ranks, 1) == 0.25
    assert recall_at_k(ranks, 5) == 0.75
    assert recall_at_k(ranks, 10) == 0.75
    assert recall_at_k(ranks, 11) == 1.0
    assert median_rank(ranks) == 3.5
    assert mean_rank(ranks) == 4.75
    assert summarise_ranks(ranks, [1, 5]) == {"R@1": 25.0, "R@5": 75.0, "median_rank": 3.5, "mean_rank": 4.75}


def test_recall_rejects_bad_k_and_empty():
    with pytest.raises(ValueError, match="k must be positive"):
        recall_at_k(np.array([1]), 0)
    with pytest.raises(ValueError, match="no queries"):
        recall_at_k(np.array([]), 1)


def test_perfect_and_shuffled_embeddings():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(200, 32)).astype(np.float32)
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    owner = np.repeat(np.arange(200), 5)
    texts = images[owner] + 0.05 * rng.normal(size=(1000, 32)).astype(np.float32)
    report = retrieval_report(images, texts, owner, images, [1, 5, 10])
    assert report["text_to_image"]["R@1"] == 100.0
    assert report["image_to_text"]["R@1"] == 100.0
    assert report["gallery_images"] == 200 and report["query_captions"] == 1000
    shuffled = rng.permutation(owner)
    chance = retrieval_report(images, texts, shuffled, images, [1, 5, 10])
    assert chance["text_to_image"]["R@10"] < 15.0  # chance is 5%


def test_bootstrap_interval_matches_the_binomial_normal_approximation():
    from capsearch.evaluation.recall import bootstrap_recall_interval

    ranks = np.where(np.random.default_rng(0).random(2000) < 0.3, 1, 50)  # R@1 close to 30%
    point = 100 * recall_at_k(ranks, 1)
    low, high = bootstrap_recall_interval(ranks, 1, resamples=2000, seed=0)
    assert low < point < high
    analytic = 2 * 1.96 * 100 * np.sqrt(point / 100 * (1 - point / 100) / len(ranks))
    assert (high - low) == pytest.approx(analytic, rel=0.15)
    assert bootstrap_recall_interval(ranks, 1, resamples=2000, seed=0) == (low, high)  # seeded
    assert bootstrap_recall_interval(np.ones(10, dtype=int), 1) == (100.0, 100.0)
