"""evaluation.coco_captions: BLEU and CIDEr-D by hand and by their properties."""

import math

import pytest

from capsearch.evaluation.coco_captions import bleu, cider_d


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
