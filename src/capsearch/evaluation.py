"""Evaluating a pipeline run from its artifacts (subset tables and embedding arrays)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from capsearch.caption_metrics import bleu, cider_d
from capsearch.clipscore import best_reference_similarity, clip_score, harmonic_mean
from capsearch.fusion import fusion_ranks
from capsearch.io import load_npy, read_csv
from capsearch.metrics import retrieval_report, summarise_ranks, with_intervals
from capsearch.retrieval import index_of

CURVE_KEYS = ("text_to_image", "image_to_text", "text_to_generated_caption", "text_to_image_fusion")


def _rows(array: np.ndarray, expected: int, what: str) -> np.ndarray:
    if array.ndim != 2 or len(array) != expected:
        raise ValueError(f"{what}: expected {expected} rows, found shape {array.shape}; re-run its stage")
    return array


def _tables(data_dir: Path) -> tuple[list[str], list[dict[str, str]], list[dict[str, str]]]:
    """Image ids (embedding order), reference caption rows and generated caption rows, checked to agree."""
    image_ids = (data_dir / "embeddings" / "images.ids.txt").read_text(encoding="utf-8").split()
    captions = read_csv(data_dir / "subset" / "captions.csv", ["image_id", "caption_index", "caption"])
    generated = read_csv(data_dir / "captions" / "generated.csv", ["image_id", "caption"])
    if [row["image_id"] for row in generated] != image_ids:
        raise ValueError(
            "generated captions and image embeddings list different images; re-run caption and embed_images"
        )
    return image_ids, captions, generated


def evaluate_run(data_dir: Path, ks: Sequence[int]) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """Metrics of the run under ``data_dir`` and the recall-vs-K curve (one row per K, percent)."""
    ks = sorted(ks)
    embeddings = data_dir / "embeddings"
    image_ids, captions, generated = _tables(data_dir)
    image_vectors = _rows(load_npy(embeddings / "images.npy"), len(image_ids), "images.npy")
    caption_vectors = _rows(load_npy(embeddings / "captions.npy"), len(captions), "captions.npy")
    generated_vectors = _rows(load_npy(embeddings / "generated.npy"), len(generated), "generated.npy")
    caption_image_index = index_of(image_ids, [row["image_id"] for row in captions])
    report = retrieval_report(image_vectors, caption_vectors, caption_image_index, generated_vectors, ks)
    tuned = json.loads((data_dir / "fusion" / "alpha.json").read_text(encoding="utf-8"))
    alpha = float(tuned["alpha"])
    fused = fusion_ranks(caption_vectors, image_vectors, generated_vectors, caption_image_index, alpha)
    report["text_to_image_fusion"] = {
        "alpha": alpha,
        "alpha_tuning_images": int(tuned["images"]),  # from fusion.split, never the reported split
        **with_intervals(summarise_ranks(fused, ks), fused, ks),
    }
    curve = [{"k": k, **{key: report[key][f"R@{k}"] for key in CURVE_KEYS}} for k in ks]  # type: ignore[index]
    return report, curve


def caption_quality(data_dir: Path) -> tuple[dict[str, Any], list[list[Any]]]:
    """Generated captions scored against their image's reference captions and against the image.

    BLEU-1..4 and CIDEr-D (COCO way, corpus level, x100), mean CLIP-S and RefCLIP-S (unscaled, as the
    CLIPScore paper reports them); plus one row per image:
    image_id, generated caption, BLEU-4, CIDEr-D, CLIP-S, RefCLIP-S.
    """
    embeddings = data_dir / "embeddings"
    image_ids, captions, generated = _tables(data_dir)
    references: dict[str, list[str]] = {}
    for row in captions:
        references.setdefault(row["image_id"], []).append(row["caption"])
    candidates = {row["image_id"]: row["caption"] for row in generated}
    bleu_corpus, bleu_items = bleu(candidates, references)
    cider_corpus, cider_items = cider_d(candidates, references)
    images = _rows(load_npy(embeddings / "images.npy"), len(image_ids), "images.npy")
    candidate_vectors = _rows(
        load_npy(embeddings / "generated_clipscore.npy"), len(generated), "generated_clipscore.npy"
    )
    reference_vectors = _rows(load_npy(embeddings / "captions_clipscore.npy"), len(captions), "captions_clipscore.npy")
    owner = index_of(image_ids, [row["image_id"] for row in captions])
    clip_s = clip_score(candidate_vectors, images)
    ref_clip_s = harmonic_mean(clip_s, best_reference_similarity(candidate_vectors, reference_vectors, owner))
    summary = {
        **{name: round(100 * value, 4) for name, value in bleu_corpus.items()},
        "CIDEr-D": round(100 * cider_corpus, 4),
        "CLIP-S": round(float(clip_s.mean()), 6),
        "RefCLIP-S": round(float(ref_clip_s.mean()), 6),
        "images": len(image_ids),
    }
    rows = [
        [
            image_id,
            candidates[image_id],
            round(float(b4), 6),
            round(float(c), 6),
            round(float(s), 6),
            round(float(r), 6),
        ]
        for image_id, b4, c, s, r in zip(image_ids, bleu_items[:, 3], cider_items, clip_s, ref_clip_s, strict=True)
    ]
    return summary, rows
