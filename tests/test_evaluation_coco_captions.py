"""evaluation.coco_captions: BLEU, CIDEr-D and ROUGE-L by hand and by their properties; all four (METEOR too) equal
to the COCO caption toolkit's COCOEvalCap on the same captions."""

import math

import numpy as np
import pytest

from capsearch.cache import ResultCache
from capsearch.evaluation.coco_captions import bleu, cider_d, meteor, rouge_l
from capsearch.evaluation.meteor import MeteorJar, resampled_sums, summable
from capsearch.evaluation.meteor import meteor as meteor_of_tokens


def test_bleu_by_hand():
    # candidate "a red circle on black": every unigram occurs in a reference -> p1 = 5/5;
    # bigrams: "a red", "red circle", "circle on", "on black"; only "a red" and "on black" occur -> p2 = 2/4;
    # the closest reference length is 5 = candidate length -> no brevity penalty.
    scores, per_item = bleu({"x": "A red circle on black."}, {"x": ["a red square on black", "a blue circle"]})
    assert scores["BLEU-1"] == pytest.approx(1.0, abs=1e-6)
    assert scores["BLEU-2"] == pytest.approx(math.sqrt(1.0 * 0.5), abs=1e-6)
    assert per_item.shape == (1, 4) and per_item[0, 1] == pytest.approx(math.sqrt(0.5), abs=1e-6)


def test_bleu_brevity_penalty_by_hand():
    # candidate of 2 words, closest reference of 4 words: BP = exp(1 - 4/2) = e^-1; p1 = 1
    scores, _ = bleu({"x": "red circle"}, {"x": ["a red circle here"]})
    assert scores["BLEU-1"] == pytest.approx(math.exp(-1), abs=1e-6)


def test_bleu_and_cider_properties():
    refs = {"a": ["a red circle on white", "a large red circle"], "b": ["a blue square", "a blue box on gray"]}
    perfect = {"a": "a red circle on white", "b": "a blue square"}
    wrong = {"a": "green triangle", "b": "yellow triangle"}
    assert bleu(perfect, refs)[0]["BLEU-4"] > 0.5 > bleu(wrong, refs)[0]["BLEU-4"]
    perfect_cider, perfect_items = cider_d(perfect, refs)
    wrong_cider, wrong_items = cider_d(wrong, refs)
    assert wrong_cider == 0.0 and (wrong_items == 0).all()
    assert perfect_cider == pytest.approx(perfect_items.mean()) and perfect_cider > 1.0
    swapped, _ = cider_d({"b": perfect["b"], "a": perfect["a"]}, refs)  # key order does not matter
    assert swapped == pytest.approx(perfect_cider)
    with pytest.raises(ValueError, match="no references for 'c'"):
        cider_d({"c": "x"}, refs)


def test_rouge_l_by_hand_takes_the_best_precision_and_recall_over_references():
    # candidate "a b c d", reference "a c d e": LCS 3, P = R = 3/4, F(beta 1.2) = 3/4
    corpus, items = rouge_l({"x": "a b c d"}, {"x": ["a c d e"]})
    assert corpus == pytest.approx(0.75) and items[0] == pytest.approx(0.75)
    # COCO's ROUGE-L takes the best precision (ref "a b c d e f": LCS 4 of 4) and the best recall (ref "a b": 2 of
    # 2) separately: F = 1, though no single reference matches the candidate
    corpus, _ = rouge_l({"x": "a b c d"}, {"x": ["a b", "a b c d e f"]})
    assert corpus == pytest.approx(1.0)
    p, r, beta = 2 / 4, 2 / 3, 1.2  # candidate "a b x y", reference "a b z": LCS 2
    assert rouge_l({"x": "a b x y"}, {"x": ["a b z"]})[0] == pytest.approx((1 + beta**2) * p * r / (r + beta**2 * p))


CAPTIONS = {
    1: ("A dog runs on the grass.", ["A brown dog is running through the grass!", "The dog runs.", "a dog outside"]),
    2: ("Two kids playing soccer", ["Two children play football in a park.", "Kids kicking a ball", "boys, soccer"]),
    3: ("a man's red bike", ["A man rides his red bicycle down the road.", "Man on a bike", "a red bike"]),
    4: ("A woman with an umbrella", ["A woman holds an umbrella in the rain", "Lady, umbrella", "woman walking"]),
    5: ("The cat sleeps", ["A cat is sleeping on the sofa.", "Cat asleep", "a sleeping grey cat"]),
}


class _Annotations:
    """What COCOEvalCap reads of a COCO object: image ids and their caption annotations."""

    def __init__(self, captions: dict[int, list[str]]) -> None:
        self.imgToAnns = {i: [{"image_id": i, "caption": c} for c in texts] for i, texts in captions.items()}

    def getImgIds(self) -> list[int]:
        return list(self.imgToAnns)


class _NoSpice:
    """SPICE needs Stanford CoreNLP models that cannot be fetched here: COCOEvalCap runs without it."""

    def method(self) -> str:
        return "SPICE (not run)"

    def compute_score(self, gts, res):
        return float("nan"), [float("nan")] * len(res)


@pytest.fixture(scope="module")
def jar():
    """One METEOR jar for the module's tests (it takes seconds to start)."""
    with MeteorJar() as running:
        yield running


def test_meteor_rouge_bleu_and_cider_equal_coco_eval_cap(monkeypatch, jar):
    """The COCO caption toolkit itself (its Java PTB tokenizer, its scorers) on the same captions."""
    import pycocoevalcap.eval

    monkeypatch.setattr(pycocoevalcap.eval, "Spice", _NoSpice)
    coco = pycocoevalcap.eval.COCOEvalCap(
        _Annotations({i: refs for i, (_, refs) in CAPTIONS.items()}),
        _Annotations({i: [candidate] for i, (candidate, _) in CAPTIONS.items()}),
    )
    coco.evaluate()
    candidates = {str(i): candidate for i, (candidate, _) in CAPTIONS.items()}
    references = {str(i): refs for i, (_, refs) in CAPTIONS.items()}
    result = meteor(candidates, references, jar=jar)
    assert result.corpus == pytest.approx(coco.eval["METEOR"], abs=1e-12)
    assert result.items == pytest.approx([coco.imgToEval[i]["METEOR"] for i in CAPTIONS], abs=1e-12)
    assert result.low <= result.corpus <= result.high
    assert rouge_l(candidates, references)[0] == pytest.approx(coco.eval["ROUGE_L"], abs=1e-12)
    assert bleu(candidates, references)[0]["BLEU-4"] == pytest.approx(coco.eval["Bleu_4"], abs=1e-12)
    assert cider_d(candidates, references)[0] == pytest.approx(coco.eval["CIDEr"], abs=1e-12)


def test_meteor_of_a_resample_is_the_jar_score_of_its_summed_statistics_and_a_cached_result_starts_no_java(
    tmp_path, monkeypatch, jar
):
    texts = [(c.lower().rstrip("."), [r.lower() for r in refs]) for c, refs in CAPTIONS.values()]
    texts += [("a dog runs on the grass", ["a dog runs on the grass", "a dog"])]  # one whole match: chunks not added
    statistics = jar.statistics_of([c for c, _ in texts], [refs for _, refs in texts])
    assert statistics[-1].split()[20] == "1.0"  # its one chunk, which the jar's corpus sum leaves out
    table = np.array([[float(v) for v in line.split()] for line in statistics])
    corpus = jar.aggregate(statistics)[1]
    line = lambda row: " ".join(repr(float(v)) for v in row)  # noqa: E731
    assert jar.aggregate([line(summable(table).sum(axis=0))])[1] == corpus
    assert jar.aggregate([line(table.sum(axis=0))])[1] != corpus  # a plain sum is not the corpus's
    for seed in range(3):  # a resample's sum, scored by the jar = the jar's EVAL over the resampled rows
        draws = np.random.default_rng(seed).integers(0, len(statistics), size=(1, len(statistics)))[0]
        (summed,) = resampled_sums(statistics, 1, seed)
        assert jar.aggregate([summed])[1] == jar.aggregate([statistics[i] for i in draws])[1]
    sums = resampled_sums(statistics, 50, 7)  # all resamples in one EVAL: each line's answer is its sum's score
    assert jar.aggregate(sums)[0] == [jar.aggregate([line])[1] for line in sums]
    cache = ResultCache(tmp_path)
    first = meteor_of_tokens([c for c, _ in texts], [refs for _, refs in texts], cache, jar=jar)
    monkeypatch.setattr("capsearch.evaluation.meteor.MeteorJar", None)  # a second run must not start Java
    assert meteor_of_tokens([c for c, _ in texts], [refs for _, refs in texts], cache) == first
