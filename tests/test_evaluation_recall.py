"""evaluation.recall: Recall@K, rank summaries and the bootstrap interval, by hand."""

import numpy as np
import pytest

from capsearch.evaluation.ranks import text_to_image_ranks
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


def _clip_benchmark_recalls(texts: np.ndarray, images: np.ndarray, owner: np.ndarray, k: int) -> tuple[float, float]:
    """text→image and image→text Recall@K (percent) as LAION's CLIP_benchmark computes them, with its own code."""
    import torch
    from clip_benchmark.metrics.zeroshot_retrieval import recall_at_k as clip_benchmark_recall

    scores = torch.from_numpy(texts @ images.T)
    positive = torch.zeros_like(scores, dtype=torch.bool)
    positive[torch.arange(len(scores)), torch.from_numpy(owner)] = True
    t2i = (clip_benchmark_recall(scores, positive, k) > 0).float().mean().item()
    i2t = (clip_benchmark_recall(scores.T, positive.T, k) > 0).float().mean().item()
    return 100 * t2i, 100 * i2t


def test_recall_equals_clip_benchmarks_own_code_where_no_query_has_a_tie():
    rng = np.random.default_rng(5)
    images = rng.normal(size=(40, 16)).astype(np.float32)
    owner = np.repeat(np.arange(40), 5)  # five captions per image, as Flickr8k
    texts = (images[owner] + 1.5 * rng.normal(size=(200, 16))).astype(np.float32)
    report = retrieval_report(images, texts, owner, images, (1, 5, 10))
    assert report["text_to_image"]["tied_queries"] == report["image_to_text"]["tied_queries"] == 0
    for k in (1, 5, 10):
        t2i, i2t = _clip_benchmark_recalls(texts, images, owner, k)
        assert report["text_to_image"][f"R@{k}"] == pytest.approx(t2i, abs=1e-4)
        assert report["image_to_text"][f"R@{k}"] == pytest.approx(i2t, abs=1e-4)
        assert 5 < report["text_to_image"][f"R@{k}"] < 100  # neither trivial nor perfect


def test_identical_vectors_tie_wherever_they_sit_and_the_ties_are_counted():
    rng = np.random.default_rng(0)
    distinct = rng.normal(size=(8, 64)).astype(np.float32)
    generated = distinct[rng.integers(0, 8, size=300)]  # many images with the same generated caption
    owner = np.arange(300)
    queries = (generated + 0.1 * rng.normal(size=(300, 64))).astype(np.float32)
    report = retrieval_report(generated, queries, owner, generated, (1,))
    ranks = text_to_image_ranks(queries, generated, owner)
    copies = np.array([(generated == generated[i]).all(axis=1).sum() for i in range(300)])
    # every copy of a query's own vector scores as high as it, in whichever kernel row it was computed
    assert (ranks >= copies).all()
    assert report["text_to_generated_caption"]["tied_queries"] == int((copies > 1).sum()) > 0
    _, clip_benchmark_i2t = _clip_benchmark_recalls(queries, generated, owner, 1)  # runs; ties decided by position
    assert 0 <= clip_benchmark_i2t <= 100
