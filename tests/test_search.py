"""search: exact scoring of the whole gallery, or of the candidates a nearest-neighbour index proposes."""

import numpy as np
import pytest

from capsearch.ann import build_index
from capsearch.data.images import ImageSource
from capsearch.demo.vectors import clip_like_images, text_like_queries
from capsearch.index import ModelRef, SearchIndex
from capsearch.params import IndexParams
from capsearch.search import search, weak_below


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    images = clip_like_images(3000, 32, concepts=40, seed=5)
    generated = clip_like_images(3000, 32, concepts=40, seed=6)
    ids = [f"img{i:05d}.jpg" for i in range(3000)]
    source = ImageSource(tmp_path_factory.mktemp("empty"))
    return SearchIndex(ids, images, [f"caption {i}" for i in ids], generated, source, ModelRef("toy"), alpha=0.7)


def attach(index, kind, candidates, **knobs):
    params = IndexParams(kind=kind, **knobs)
    index.ann = {
        "image": build_index(index.image_vectors, params),
        "caption": build_index(index.generated_vectors, params),
    }
    index.candidates = candidates
    return index


@pytest.mark.parametrize("method", ["image", "caption"])
def test_search_through_an_exact_index_equals_scoring_every_image(index, method):
    queries, _ = text_like_queries(index.image_vectors, 20, seed=7)
    full = search(attach(index, "exact", 50), queries, 10, method, exact=True)
    through = search(index, queries, 10, method)
    assert [[h.image_id for h in hits] for hits in through] == [[h.image_id for h in hits] for hits in full]
    assert np.allclose([[h.score for h in hits] for hits in through], [[h.score for h in hits] for hits in full])


@pytest.mark.parametrize("method", ["image", "caption", "fusion"])
def test_candidates_are_scored_exactly_and_rarely_miss(index, method):
    queries, _ = text_like_queries(index.image_vectors, 40, seed=8)
    attach(index, "ivf_sq8", 100, ivf_nprobe=16)
    found = search(index, queries, 10, method)
    full = search(index, queries, 10, method, exact=True)
    row = {image_id: i for i, image_id in enumerate(index.ids)}
    alpha = index.alpha
    gallery = {
        "image": index.image_vectors,
        "caption": index.generated_vectors,
        "fusion": alpha * index.image_vectors + (1 - alpha) * index.generated_vectors,
    }[method]
    overlap = []
    for query, hits, truth in zip(queries, found, full, strict=True):
        exact_scores = [float(gallery[row[h.image_id]] @ query) for h in hits]
        assert [h.score for h in hits] == pytest.approx(exact_scores, abs=1e-5)  # exact scores, not SQ8 ones
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        overlap.append(len({h.image_id for h in hits} & {h.image_id for h in truth}) / 10)
    assert np.mean(overlap) >= 0.9


def test_fusion_candidates_come_from_both_indexes(index):
    queries, _ = text_like_queries(index.generated_vectors, 10, seed=9)
    attach(index, "exact", 10)
    index.ann["image"].index.reset()  # an image index that proposes nothing: fusion still has caption candidates
    hits = search(index, queries, 5, "fusion")
    assert all(len(h) == 5 for h in hits)
    with pytest.raises(ValueError, match="unknown method 'clip'"):
        search(index, queries, 5, "clip")


def test_a_hit_is_weak_when_its_image_is_no_closer_than_a_random_pair():
    rng = np.random.default_rng(3)
    images = np.zeros((200, 64), dtype=np.float32)
    images[:, :48] = rng.normal(size=(200, 48))  # nothing in the last 16 dimensions
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    captions = images + 0.05 * rng.normal(size=images.shape).astype(np.float32)  # each caption near its own image
    captions /= np.linalg.norm(captions, axis=1, keepdims=True)
    ids = [f"{i}.jpg" for i in range(200)]
    index = SearchIndex(ids, images, ids, captions, ImageSource("."), ModelRef("toy"))
    line = weak_below(index)
    own, other = float(np.median((images * captions).sum(1))), float(np.median((images * captions[::-1]).sum(1)))
    assert line == pytest.approx((own + other) / 2, abs=0.05) and other < line < own
    (strong,) = search(index, captions[:1], 3)  # a query like an image's own caption
    assert strong[0].image_id == "0.jpg" and not strong[0].weak
    unrelated = np.zeros((1, 64), dtype=np.float32)
    unrelated[0, 60] = 1.0  # a direction no image has
    for method in ("image", "caption", "fusion"):
        (hits,) = search(index, unrelated, 3, method)
        assert all(hit.weak for hit in hits), method
