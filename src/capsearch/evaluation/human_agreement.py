"""Flickr8k's human judgments of (image, caption) pairs and how well a metric agrees with them.

``ExpertAnnotations.txt``: image, caption id, three expert scores 1-4. ``CrowdFlowerAnnotations.txt``: image,
caption id, fraction of yes, yes count, no count. A judged caption is usually another image's caption.

The published Flickr8k-Expert protocol (CLIPScore paper, Table 1: BLEU-1 32.3, BLEU-4 30.8, ROUGE-L 32.3,
METEOR 41.8, CIDEr 43.9, CLIP-S 51.2, RefCLIP-S 53.0) is reproduced exactly by :func:`expert_protocol`: the 158
pairs whose caption is one of the judged image's own captions are dropped (5,664 pairs left), the references are
the judged image's 5 captions, and Kendall tau-c is taken over every single rating (16,992 points).
``tests/test_evaluation_human_agreement.py`` checks BLEU-1, BLEU-4, METEOR, ROUGE-L and CIDEr against the
published numbers on the real files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau

from capsearch.cache import ResultCache
from capsearch.evaluation.clipscore import clip_score, ref_clip_score, with_prefix
from capsearch.evaluation.coco_captions import bleu_of, cider_d_of, meteor_of, rouge_l_of, tokenize_pairs
from capsearch.evaluation.meteor import MeteorJar

EXPERT_FILE = "ExpertAnnotations.txt"
CROWDFLOWER_FILE = "CrowdFlowerAnnotations.txt"


@dataclass
class Judgment:
    """One judged pair: the image, the judged caption's own image and index, and the human ratings."""

    image: str
    caption_image: str
    caption_index: int
    ratings: tuple[float, ...]

    @property
    def own_caption(self) -> bool:
        """Whether the judged caption is one of the judged image's own captions."""
        return self.caption_image == self.image


def _parse(path: Path, columns: int) -> list[tuple[str, str, int, list[str]]]:
    rows = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != columns or "#" not in fields[1]:
            raise ValueError(f"{path}:{line_no}: expected {columns} tab-separated fields '<image> <image>#<i> ...'")
        caption_image, _, index = fields[1].rpartition("#")
        if not index.isdigit():
            raise ValueError(f"{path}:{line_no}: bad caption id {fields[1]!r}")
        rows.append((fields[0], caption_image, int(index), fields[2:]))
    return rows


def read_expert_judgments(path: str | Path) -> list[Judgment]:
    """``ExpertAnnotations.txt``: three 1-4 ratings per pair."""
    return [Judgment(i, c, k, tuple(float(s) for s in scores)) for i, c, k, scores in _parse(Path(path), 5)]


def read_crowdflower_judgments(path: str | Path) -> list[Judgment]:
    """``CrowdFlowerAnnotations.txt``: the fraction of yes votes as the single rating of each pair."""
    return [Judgment(i, c, k, (float(scores[0]),)) for i, c, k, scores in _parse(Path(path), 5)]


def kendall_tau_c(human: np.ndarray, metric: np.ndarray) -> float:
    """Kendall tau-c (the variant the CLIPScore paper reports), in percent."""
    return float(100.0 * kendalltau(human, metric, variant="c")[0])


def expert_protocol(judgments: list[Judgment]) -> list[Judgment]:
    """The published pairs: those whose caption is not one of the judged image's own captions."""
    return [j for j in judgments if not j.own_caption]


def agreement(judgments: list[Judgment], metric_scores: np.ndarray, per_rating: bool = True) -> float:
    """tau-c between ratings and a metric's per-pair scores; each rating its own point (published) or the mean."""
    if len(judgments) != len(metric_scores):
        raise ValueError(f"{len(judgments)} judgments but {len(metric_scores)} metric scores")
    if per_rating:
        human = np.array([r for j in judgments for r in j.ratings])
        metric = np.repeat(np.asarray(metric_scores), [len(j.ratings) for j in judgments])
    else:
        human = np.array([np.mean(j.ratings) for j in judgments])
        metric = np.asarray(metric_scores)
    return kendall_tau_c(human, metric)


def kendall_tau_b(human: np.ndarray, metric: np.ndarray) -> float:
    """Kendall tau-b in percent (for the CrowdFlower yes fractions)."""
    return float(100.0 * kendalltau(human, metric, variant="b")[0])


def score_judged_pairs(
    pairs: list[Judgment],
    candidates: list[str],
    references: list[list[str]],
    image_rows: np.ndarray,
    image_vectors: np.ndarray,
    embed: Callable[[list[str]], np.ndarray],
    cache: ResultCache | None = None,
    jar: MeteorJar | None = None,
) -> dict[str, np.ndarray]:
    """Per-pair BLEU-1, BLEU-4, METEOR, ROUGE-L, CIDEr-D, CLIP-S and RefCLIP-S; ``embed`` gives normalised
    CLIPScore text embeddings; ``cache`` keeps METEOR's result; ``jar``: a METEOR jar to share (else one is
    started where METEOR is not cached)."""
    keys = [str(i) for i in range(len(pairs))]
    tokenized = tokenize_pairs(dict(zip(keys, candidates, strict=True)), dict(zip(keys, references, strict=True)))
    bleu_items = bleu_of(tokenized)[1]
    texts = sorted(set(candidates) | {r for refs in references for r in refs})
    vectors = embed(with_prefix(texts))
    row = {text: i for i, text in enumerate(texts)}
    candidate_vectors = vectors[[row[c] for c in candidates]]
    owner = np.repeat(np.arange(len(pairs)), [len(refs) for refs in references])
    reference_vectors = vectors[[row[r] for refs in references for r in refs]]
    images = image_vectors[image_rows]
    return {
        "BLEU-1": bleu_items[:, 0],
        "BLEU-4": bleu_items[:, 3],
        "METEOR": np.asarray(meteor_of(tokenized, cache, resamples=0, jar=jar).items),
        "ROUGE-L": rouge_l_of(tokenized)[1],
        "CIDEr-D": cider_d_of(tokenized)[1],
        "CLIP-S": clip_score(candidate_vectors, images),
        "RefCLIP-S": ref_clip_score(candidate_vectors, images, reference_vectors, owner),
    }


def human_agreement(
    expert: list[Judgment],
    crowdflower: list[Judgment],
    captions: dict[str, list[str]],
    image_ids: list[str],
    image_vectors: np.ndarray,
    embed: Callable[[list[str]], np.ndarray],
    cache: ResultCache | None = None,
) -> dict[str, dict[str, float]]:
    """tau of each metric with Flickr8k-Expert (published protocol, tau-c) and Flickr8k-CrowdFlower (tau-b).

    For Expert, ``tau_<metric>`` counts every rating (the published numbers); ``tau_<metric>_vs_mean_rating``
    uses the mean of the three ratings per pair.

    Only pairs whose judged image is among ``image_ids`` (the subset) can be scored; ``coverage`` says how many.
    CrowdFlower keeps every pair and leaves the candidate out of its references where it is one of them.
    """
    row_of = {image_id: i for i, image_id in enumerate(image_ids)}
    report = {}
    with MeteorJar() as jar:  # one jar for both sets, started only where METEOR is not cached (6 s a start)
        for name, judgments, per_rating in (
            ("flickr8k_expert", expert, True),
            ("flickr8k_crowdflower", crowdflower, False),
        ):
            usable = [j for j in judgments if j.image in row_of and j.caption_image in captions]
            if per_rating:
                usable = expert_protocol(usable)
            if len(usable) < 2:
                report[name] = {"pairs": len(usable), "coverage": len(usable) / max(1, len(judgments))}
                continue
            candidates = [captions[j.caption_image][j.caption_index] for j in usable]
            references = [
                [c for k, c in enumerate(captions[j.image]) if not (j.own_caption and k == j.caption_index)]
                for j in usable
            ]
            rows = np.array([row_of[j.image] for j in usable])
            scores = score_judged_pairs(usable, candidates, references, rows, image_vectors, embed, cache, jar)
            if per_rating:
                taus = {metric: agreement(usable, values) for metric, values in scores.items()}
                taus |= {f"{m}_vs_mean_rating": agreement(usable, v, per_rating=False) for m, v in scores.items()}
            else:
                human = np.array([j.ratings[0] for j in usable])
                taus = {metric: kendall_tau_b(human, values) for metric, values in scores.items()}
            report[name] = {
                "pairs": len(usable),
                "coverage": round(len(usable) / len(judgments), 4),
                **{f"tau_{metric}": round(value, 4) for metric, value in taus.items()},
            }
    return report
