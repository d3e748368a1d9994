"""evaluation.clipscore: CLIPScore and RefCLIPScore by hand."""

import math

import numpy as np
import pytest

from capsearch.evaluation.clipscore import (
    best_reference_similarity,
    clip_score,
    harmonic_mean,
    ref_clip_score,
    with_prefix,
)


def test_clip_score_by_hand():
    images = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    captions = np.array([[1.0, 0.0], [0.6, 0.8], [-0.6, 0.8]])  # cos 1, 0.6, -0.6
    assert clip_score(captions, images).tolist() == pytest.approx([2.5, 1.5, 0.0])
    assert with_prefix(["a dog"]) == ["A photo depicts a dog"]


def test_ref_clip_score_by_hand_and_identical_reference_property():
    image = np.array([[1.0, 0.0]])
    candidate = np.array([[0.96, 0.28]])  # cos with image 0.96 -> CLIP-S 2.4
    references = np.array([[0.0, 1.0], [0.96, 0.28]])  # cos 0.28 and 1.0 (identical)
    owner = np.array([0, 0])
    assert best_reference_similarity(candidate, references, owner).tolist() == pytest.approx([1.0])
    assert ref_clip_score(candidate, image, references, owner)[0] == pytest.approx(2 * 2.4 * 1.0 / 3.4)
    # with CLIP-S <= 1 (real CLIP: cos <= 0.4), a caption identical to a reference scores RefCLIP-S >= CLIP-S
    rng = np.random.default_rng(0)
    for _ in range(50):
        cos = rng.uniform(0, 0.4)
        cand = np.array([[cos, math.sqrt(1 - cos**2)]])
        clip_s = clip_score(cand, image)[0]
        assert ref_clip_score(cand, image, cand.copy(), np.array([0]))[0] >= clip_s
    assert harmonic_mean(np.array([0.0]), np.array([0.0])).tolist() == [0.0]
