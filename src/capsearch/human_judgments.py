"""Flickr8k's human judgments of (image, caption) pairs and how well a metric agrees with them.

``ExpertAnnotations.txt``: image, caption id, three expert scores 1-4. ``CrowdFlowerAnnotations.txt``: image,
caption id, fraction of yes, yes count, no count. A judged caption is usually another image's caption.

The published Flickr8k-Expert protocol (CLIPScore paper, Table 1: BLEU-4 30.8, CIDEr 43.9, CLIP-S 51.2,
RefCLIP-S 53.0) is reproduced exactly by :func:`expert_protocol`: the 158 pairs whose caption is one of the
judged image's own captions are dropped (5,664 pairs left), the references are the judged image's 5 captions, and
Kendall tau-c is taken over every single rating (16,992 points). ``tests/test_human_judgments_real.py`` checks
BLEU-4 and CIDEr against the published numbers on the real files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau

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
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
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
