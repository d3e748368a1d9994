"""evaluation.human_agreement: Kendall's tau-c, the judgment files, the published Flickr8k numbers."""

import numpy as np
import pytest

from capsearch.data.flickr8k import (
    parse_token_file,
)
from capsearch.evaluation.coco_captions import bleu_of, cider_d_of, meteor_of, rouge_l_of, tokenize_pairs
from capsearch.evaluation.human_agreement import (
    agreement,
    expert_protocol,
    kendall_tau_c,
    read_crowdflower_judgments,
    read_expert_judgments,
)


def test_kendall_tau_c_by_hand():
    # 4 points, x = [1,2,3,4], y = [1,3,2,4]: 5 concordant, 1 discordant pairs; tau-c = 2m(C-D)/(n^2 (m-1)), m = 4
    assert kendall_tau_c(np.array([1, 2, 3, 4]), np.array([1, 3, 2, 4])) == pytest.approx(100 * 2 * 4 * 4 / (16 * 3))


def test_parse_and_protocol(tmp_path):
    expert = tmp_path / "ExpertAnnotations.txt"
    expert.write_text("a.jpg\ta.jpg#0\t4\t4\t3\na.jpg\tb.jpg#2\t1\t2\t1\n")
    judgments = read_expert_judgments(expert)
    assert judgments[1].caption_image == "b.jpg" and judgments[1].caption_index == 2
    assert judgments[1].ratings == (1.0, 2.0, 1.0)
    assert [j.own_caption for j in judgments] == [True, False]
    assert expert_protocol(judgments) == [judgments[1]]
    crowd = tmp_path / "CrowdFlowerAnnotations.txt"
    crowd.write_text("a.jpg\tb.jpg#1\t0.333\t1\t2\n")
    assert read_crowdflower_judgments(crowd)[0].ratings == (0.333,)
    bad = tmp_path / "bad.txt"
    bad.write_text("a.jpg\tb.jpg\t1\t2\t3\n")
    with pytest.raises(ValueError, match=r"bad.txt:1: expected 5 tab-separated fields"):
        read_expert_judgments(bad)


def test_agreement_per_rating_and_mean():
    from capsearch.evaluation.human_agreement import Judgment

    judgments = [Judgment("a", "b", 0, (1.0, 2.0, 1.0)), Judgment("a", "c", 0, (4.0, 4.0, 3.0))]
    assert agreement(judgments, np.array([0.1, 0.9]), per_rating=False) == pytest.approx(100.0)
    with pytest.raises(ValueError, match="2 judgments but 1 metric scores"):
        agreement(judgments, np.array([0.1]))


def test_published_flickr8k_expert_numbers_for_bleu_meteor_rouge_and_cider(shared_flickr8k):
    captions = parse_token_file(shared_flickr8k / "Flickr8k.token.txt").captions
    judgments = expert_protocol(read_expert_judgments(shared_flickr8k / "ExpertAnnotations.txt"))
    assert len(judgments) == 5664
    candidates = {str(i): captions[j.caption_image][j.caption_index] for i, j in enumerate(judgments)}
    references = {str(i): captions[j.image] for i, j in enumerate(judgments)}
    tokenized = tokenize_pairs(candidates, references)
    bleu_items = bleu_of(tokenized)[1]
    cider = cider_d_of(tokenized)[1]
    meteor_items = np.asarray(meteor_of(tokenized, resamples=0).items)
    rouge = rouge_l_of(tokenized)[1]
    # CLIPScore paper (Hessel et al., 2021), Table 1, Flickr8K-Expert tau-c: BLEU-1 32.3, BLEU-4 30.8, ROUGE-L 32.3,
    # METEOR 41.8, CIDEr 43.9
    assert round(agreement(judgments, bleu_items[:, 0]), 1) == 32.3
    assert round(agreement(judgments, bleu_items[:, 3]), 1) == 30.8
    assert round(agreement(judgments, rouge), 1) == 32.3
    assert round(agreement(judgments, meteor_items), 1) == 41.8
    assert round(agreement(judgments, cider), 1) == 43.9


def test_judgment_files_with_byte_order_mark(tmp_path):
    from capsearch.evaluation.human_agreement import read_crowdflower_judgments, read_expert_judgments

    expert = tmp_path / "ExpertAnnotations.txt"
    expert.write_bytes(b"\xef\xbb\xbfa.jpg\tb.jpg#2\t1\t2\t3\n")
    crowd = tmp_path / "CrowdFlowerAnnotations.txt"
    crowd.write_bytes(b"\xef\xbb\xbfa.jpg\tb.jpg#2\t0.5\t2\t1\n")
    assert read_expert_judgments(expert)[0].image == "a.jpg"
    assert read_crowdflower_judgments(crowd)[0].image == "a.jpg"
