"""Caption quality against references, computed the COCO way: BLEU-1..4, METEOR, ROUGE-L and CIDEr-D.

The scorers are pycocoevalcap's own ``Bleu``, ``Rouge`` and ``Cider`` (the COCO caption evaluation code; its
``Cider`` is CIDEr-D) and its METEOR 1.5 jar (:mod:`capsearch.evaluation.meteor`). SPICE is not computed: it needs
Stanford CoreNLP models that cannot be fetched here, and is not approximated. Texts are tokenized exactly as its
``PTBTokenizer`` does (Stanford PTBTokenizer 3.4.1, lower-cased, punctuation tokens removed), by the plain-Python
port in :mod:`capsearch.evaluation.ptb_tokenizer`, so no Java is needed for it: references in one batch and
candidates in another, in key order, as ``COCOEvalCap`` tokenizes them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from capsearch.cache import ResultCache
from capsearch.evaluation.meteor import MeteorJar, MeteorResult
from capsearch.evaluation.meteor import meteor as meteor_of_tokens
from capsearch.evaluation.ptb_tokenizer import coco_tokenize_batch


@dataclass(frozen=True)
class Tokenized:
    """Candidates and references PTB-tokenized as ``COCOEvalCap`` tokenizes them, in pycocoevalcap's shape."""

    keys: list[str]
    gts: dict[str, list[str]]  # key -> its tokenized references
    res: dict[str, list[str]]  # key -> [its tokenized candidate]


def tokenize_pairs(candidates: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> Tokenized:
    """The tokenized form every scorer reads (references in one batch, candidates in another, in key order)."""
    if not candidates:
        raise ValueError("no candidates to score")
    missing = [key for key in candidates if not references.get(key)]
    if missing:
        raise ValueError(f"no references for {missing[0]!r} ({len(missing)} candidates without references)")
    keys = list(candidates)
    flat_references = coco_tokenize_batch([text for key in keys for text in references[key]])
    tokenized_candidates = coco_tokenize_batch([candidates[key] for key in keys])
    gts: dict[str, list[str]] = {}
    position = 0
    for key in keys:
        gts[key] = flat_references[position : position + len(references[key])]
        position += len(references[key])
    res = {key: [text] for key, text in zip(keys, tokenized_candidates, strict=True)}
    return Tokenized(keys, gts, res)


def bleu_of(t: Tokenized) -> tuple[dict[str, float], np.ndarray]:
    """Corpus BLEU-1..4 (COCO's, closest reference length) and the per-candidate BLEU (rows: keys, cols: n=1..4)."""
    corpus, per_item = Bleu(4).compute_score(t.gts, t.res, verbose=0)
    return {f"BLEU-{n + 1}": float(corpus[n]) for n in range(4)}, np.array(per_item, dtype=np.float64).T


def cider_d_of(t: Tokenized) -> tuple[float, np.ndarray]:
    """Corpus CIDEr-D (document frequencies from these references) and the per-candidate scores."""
    corpus, per_item = Cider().compute_score(t.gts, t.res)
    return float(corpus), np.asarray(per_item, dtype=np.float64)


def rouge_l_of(t: Tokenized) -> tuple[float, np.ndarray]:
    """Corpus ROUGE-L (COCO's: the mean over candidates of the LCS F-measure, beta 1.2, best precision and best
    recall over the references) and the per-candidate scores."""
    corpus, per_item = Rouge().compute_score(t.gts, t.res)
    return float(corpus), np.asarray(per_item, dtype=np.float64)


def meteor_of(
    t: Tokenized, cache: ResultCache | None = None, resamples: int = 1000, jar: MeteorJar | None = None
) -> MeteorResult:
    """Corpus METEOR 1.5 (COCO's), the per-candidate scores and a bootstrap interval of the corpus score
    (:func:`capsearch.evaluation.meteor.meteor`)."""
    candidates = [t.res[key][0] for key in t.keys]
    return meteor_of_tokens(candidates, [t.gts[key] for key in t.keys], cache, resamples, jar=jar)


# The same from plain captions, tokenized for the one metric (to score several, tokenize once: ``tokenize_pairs``)


def bleu(candidates: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> tuple[dict[str, float], np.ndarray]:
    """:func:`bleu_of` the captions."""
    return bleu_of(tokenize_pairs(candidates, references))


def cider_d(candidates: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> tuple[float, np.ndarray]:
    """:func:`cider_d_of` the captions."""
    return cider_d_of(tokenize_pairs(candidates, references))


def rouge_l(candidates: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> tuple[float, np.ndarray]:
    """:func:`rouge_l_of` the captions."""
    return rouge_l_of(tokenize_pairs(candidates, references))


def meteor(
    candidates: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    cache: ResultCache | None = None,
    resamples: int = 1000,
    jar: MeteorJar | None = None,
) -> MeteorResult:
    """:func:`meteor_of` the captions."""
    return meteor_of(tokenize_pairs(candidates, references), cache, resamples, jar)
