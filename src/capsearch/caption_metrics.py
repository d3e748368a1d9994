"""Caption quality against references, computed the COCO way: BLEU-1..4 and CIDEr-D.

The scorers are pycocoevalcap's own ``Bleu`` and ``Cider`` (the COCO caption evaluation code; its ``Cider`` is
CIDEr-D). Its PTB tokenizer needs Java, so texts are tokenized here in plain Python the way it ends up: lower-case,
punctuation removed, tokens joined by single spaces.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider

_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def coco_tokenize(text: str) -> str:
    """Lower-cased words and numbers, punctuation dropped: 'A dog, running!' -> 'a dog running'."""
    return " ".join(_TOKEN.findall(text.lower()))


def _prepare(candidates: Mapping[str, str], references: Mapping[str, Sequence[str]]):
    missing = [key for key in candidates if not references.get(key)]
    if missing:
        raise ValueError(f"no references for {missing[0]!r} ({len(missing)} candidates without references)")
    keys = list(candidates)
    res = {key: [coco_tokenize(candidates[key])] for key in keys}
    gts = {key: [coco_tokenize(r) for r in references[key]] for key in keys}
    return keys, gts, res


def bleu(candidates: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> tuple[dict[str, float], np.ndarray]:
    """Corpus BLEU-1..4 (COCO's, closest reference length) and the per-candidate BLEU (rows: keys, cols: n=1..4)."""
    if not candidates:
        raise ValueError("no candidates to score")
    _, gts, res = _prepare(candidates, references)
    corpus, per_item = Bleu(4).compute_score(gts, res, verbose=0)
    return {f"BLEU-{n + 1}": float(corpus[n]) for n in range(4)}, np.array(per_item, dtype=np.float64).T


def cider_d(candidates: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> tuple[float, np.ndarray]:
    """Corpus CIDEr-D (document frequencies from these references) and the per-candidate scores."""
    if not candidates:
        raise ValueError("no candidates to score")
    _, gts, res = _prepare(candidates, references)
    corpus, per_item = Cider().compute_score(gts, res)
    return float(corpus), np.asarray(per_item, dtype=np.float64)
