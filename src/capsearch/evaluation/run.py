"""A run's metrics from its arrays and tables: Recall@K both ways, caption retrieval, fusion, caption quality."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from capsearch.artifacts import References, check_rows
from capsearch.cache import ResultCache
from capsearch.evaluation.clipscore import best_reference_similarity, clip_score, harmonic_mean
from capsearch.evaluation.coco_captions import bleu_of, cider_d_of, meteor_of, rouge_l_of, tokenize_pairs
from capsearch.evaluation.ranks import index_of
from capsearch.evaluation.recall import bootstrap_mean_interval, retrieval_report, summarise_ranks, with_intervals
from capsearch.fusion import fusion_ranks

CURVE_KEYS = ("text_to_image", "image_to_text", "text_to_generated_caption", "text_to_image_fusion")


@dataclass
class EvaluationInputs:
    """What evaluating a run needs, checked to be row-aligned.

    Image rows follow ``image_ids`` (the embedding order); reference rows follow ``references``; the generated
    captions are one per image, in ``generated_ids`` order, which must be ``image_ids``. The ``*_clipscore``
    vectors embed the texts with CLIPScore's prefix. ``alpha`` is the fusion weight chosen on another split.
    """

    image_ids: list[str]
    references: References
    generated_ids: list[str]
    generated: list[str]
    image_vectors: np.ndarray
    reference_vectors: np.ndarray
    generated_vectors: np.ndarray
    reference_clipscore_vectors: np.ndarray
    generated_clipscore_vectors: np.ndarray
    alpha: float
    alpha_images: int

    def __post_init__(self) -> None:
        if self.generated_ids != self.image_ids:
            raise ValueError(
                "generated captions and image embeddings list different images; re-run caption and embed_images"
            )
        rows = {
            "images.npy": (self.image_vectors, len(self.image_ids)),
            "references.npy": (self.reference_vectors, len(self.references.texts)),
            "generated.npy": (self.generated_vectors, len(self.generated)),
            "references_clipscore.npy": (self.reference_clipscore_vectors, len(self.references.texts)),
            "generated_clipscore.npy": (self.generated_clipscore_vectors, len(self.generated)),
        }
        for name, (array, expected) in rows.items():
            check_rows(name, array, expected)

    @property
    def reference_owner(self) -> np.ndarray:
        """For each reference row, the row of its image."""
        return index_of(self.image_ids, self.references.image_ids)


def retrieval_metrics(run: EvaluationInputs, ks: Sequence[int]) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """Recall@K (with bootstrap intervals), median and mean rank in both directions, caption and fusion retrieval,
    and the recall-vs-K curve (one row per K, percent)."""
    ks = sorted(ks)
    owner = run.reference_owner
    report = retrieval_report(run.image_vectors, run.reference_vectors, owner, run.generated_vectors, ks)
    fused = fusion_ranks(run.reference_vectors, run.image_vectors, run.generated_vectors, owner, run.alpha)
    report["text_to_image_fusion"] = {
        "alpha": run.alpha,
        "alpha_tuning_images": run.alpha_images,  # from fusion.split, never the reported split
        **with_intervals(summarise_ranks(fused, ks), fused, ks),
    }
    curve = [{"k": k, **{key: report[key][f"R@{k}"] for key in CURVE_KEYS}} for k in ks]  # type: ignore[index]
    return report, curve


CAPTION_SCORES_HEADER = ["image_id", "caption", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D", "CLIP-S", "RefCLIP-S"]


def caption_quality(run: EvaluationInputs, cache: ResultCache | None = None) -> tuple[dict[str, Any], list[list[Any]]]:
    """Generated captions scored against their image's reference captions and against the image.

    BLEU-1..4, METEOR, ROUGE-L and CIDEr-D (COCO way, corpus level, x100; METEOR and ROUGE-L with a 95% bootstrap
    interval over the images, ``<metric>_low``/``_high``), mean CLIP-S and RefCLIP-S (unscaled, as the CLIPScore
    paper reports them); plus one row per image (:data:`CAPTION_SCORES_HEADER`). ``cache`` keeps METEOR's result
    (its jar takes seconds to start).
    """
    candidates = dict(zip(run.image_ids, run.generated, strict=True))
    tokenized = tokenize_pairs(candidates, run.references.by_image())  # once, for the four scorers
    bleu_corpus, bleu_items = bleu_of(tokenized)
    cider_corpus, cider_items = cider_d_of(tokenized)
    meteor_result = meteor_of(tokenized, cache)
    rouge_corpus, rouge_items = rouge_l_of(tokenized)
    rouge_low, rouge_high = bootstrap_mean_interval(rouge_items)
    clip_s = clip_score(run.generated_clipscore_vectors, run.image_vectors)
    best_reference = best_reference_similarity(
        run.generated_clipscore_vectors, run.reference_clipscore_vectors, run.reference_owner
    )
    ref_clip_s = harmonic_mean(clip_s, best_reference)
    summary = {
        **{name: round(100 * value, 4) for name, value in bleu_corpus.items()},
        "METEOR": round(100 * meteor_result.corpus, 4),
        "METEOR_low": round(100 * meteor_result.low, 4),
        "METEOR_high": round(100 * meteor_result.high, 4),
        "ROUGE-L": round(100 * rouge_corpus, 4),
        "ROUGE-L_low": round(100 * rouge_low, 4),
        "ROUGE-L_high": round(100 * rouge_high, 4),
        "CIDEr-D": round(100 * cider_corpus, 4),
        "CLIP-S": round(float(clip_s.mean()), 6),
        "RefCLIP-S": round(float(ref_clip_s.mean()), 6),
        "images": len(run.image_ids),
    }
    rows = [
        [image_id, candidates[image_id], *(round(float(v), 6) for v in values)]
        for image_id, *values in zip(
            run.image_ids,
            bleu_items[:, 3],
            meteor_result.items,
            rouge_items,
            cider_items,
            clip_s,
            ref_clip_s,
            strict=True,
        )
    ]
    return summary, rows
