"""Retrieval metrics over plain rank arrays (one function per metric, as in LAION's CLIP_benchmark)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from capsearch.evaluation.ranks import image_to_text_ranks, text_to_image_ranks, tied


def recall_at_k(ranks: np.ndarray, k: int) -> float:
    """Fraction of queries whose correct item is within the top ``k`` (rank <= k)."""
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    if len(ranks) == 0:
        raise ValueError("no queries")
    return float(np.mean(np.asarray(ranks) <= k))


def median_rank(ranks: np.ndarray) -> float:
    """Median rank of the correct item (1 is best)."""
    return float(np.median(ranks))


def mean_rank(ranks: np.ndarray) -> float:
    """Mean rank of the correct item (1 is best)."""
    return float(np.mean(ranks))


def summarise_ranks(ranks: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    """Recall@K in percent for each K, plus median and mean rank."""
    summary = {f"R@{k}": round(100.0 * recall_at_k(ranks, k), 4) for k in ks}
    summary["median_rank"] = median_rank(ranks)
    summary["mean_rank"] = round(mean_rank(ranks), 4)
    return summary


def retrieval_report(
    image_vectors: np.ndarray,
    caption_vectors: np.ndarray,
    caption_image_index: np.ndarray,
    generated_vectors: np.ndarray,
    ks: Sequence[int],
) -> dict[str, object]:
    """All retrieval metrics of one run.

    * ``text_to_image``: each ground-truth caption queries the images; a hit if its own image is in the top K.
    * ``image_to_text``: each image queries all captions; a hit if any of its captions is in the top K.
    * ``text_to_generated_caption``: each ground-truth caption queries the generated captions (one per image,
      row i for image i); a hit if its image's generated caption is in the top K.

    Ties count against the query (:mod:`capsearch.evaluation.ranks`); ``tied_queries`` says for how many queries a
    tie decided the rank (where CLIP_benchmark's ``torch.topk`` order could give a better one: identical generated
    captions of different images, say).

    Each Recall@K comes with ``R@K_low``/``R@K_high``, a seeded 95% bootstrap interval over the queries.
    """
    report: dict[str, object] = {"gallery_images": len(image_vectors), "query_captions": len(caption_vectors)}
    for name, ranked, queries, gallery in (
        ("text_to_image", text_to_image_ranks, caption_vectors, image_vectors),
        ("image_to_text", image_to_text_ranks, image_vectors, caption_vectors),
        ("text_to_generated_caption", text_to_image_ranks, caption_vectors, generated_vectors),
    ):
        ranks = ranked(queries, gallery, caption_image_index)
        best = ranked(queries, gallery, caption_image_index, ties_for=True)
        report[name] = {**with_intervals(summarise_ranks(ranks, ks), ranks, ks), "tied_queries": tied(ranks, best)}
    return report


def bootstrap_recall_interval(
    ranks: np.ndarray, k: int, resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval (percent) of Recall@K, resampling queries with replacement."""
    hits = (np.asarray(ranks) <= k).astype(np.float64)
    low, high = bootstrap_mean_interval(hits, resamples, seed, level)
    return round(100.0 * low, 4), round(100.0 * high, 4)


def bootstrap_mean_interval(
    values: np.ndarray, resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values``, resampling them with replacement (seeded)."""
    values = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    low, high = np.percentile(means, [50 * (1 - level), 100 - 50 * (1 - level)])
    return float(low), float(high)


def with_intervals(summary: dict[str, float], ranks: np.ndarray, ks: Sequence[int], seed: int = 0) -> dict[str, float]:
    """``summary`` plus ``R@K_low``/``R@K_high``: the 95% bootstrap interval of each Recall@K."""
    out = dict(summary)
    for k in ks:
        out[f"R@{k}_low"], out[f"R@{k}_high"] = bootstrap_recall_interval(ranks, k, seed=seed)
    return out
