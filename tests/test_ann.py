"""ann: each faiss index kind against brute force, on CLIP-like vectors with text-like queries."""

import numpy as np
import pytest

from capsearch.ann import build_index, choose_kind, list_count, load_index, save_index
from capsearch.demo.vectors import clip_like_images, text_like_queries
from capsearch.evaluation.index_quality import neighbour_recall
from capsearch.params import IndexParams, ParamError


@pytest.fixture(scope="module")
def gallery():
    images = clip_like_images(6000, 64, concepts=60, seed=3)
    queries, targets = text_like_queries(images, 200, seed=4)
    return images, queries, targets


def brute_force(queries, images, k):
    return np.argsort(-(queries @ images.T), axis=1, kind="stable")[:, :k]


def test_text_like_queries_match_their_image_as_clip_does(gallery):
    images, queries, targets = gallery
    own = (queries * images[targets]).sum(axis=1)
    assert 0.2 < own.mean() < 0.6  # CLIP's matching text-image cosines are about 0.3
    ranks = (queries @ images.T >= own[:, None]).sum(axis=1)
    assert 0.05 < np.mean(ranks == 1) < 0.95  # findable, but not trivially


@pytest.mark.parametrize(
    ("kind", "knobs", "least"),
    [
        ("exact", {}, 1.0),
        ("hnsw", {"hnsw_ef_search": 64}, 0.9),
        ("ivf_sq8", {"ivf_nprobe": 32}, 0.9),
        ("ivf_pq", {"ivf_nprobe": 16, "pq_bytes": 16}, 0.3),
    ],
)
def test_each_kind_finds_the_exact_neighbours_of_text_queries(gallery, kind, knobs, least):
    images, queries, _ = gallery
    ann = build_index(images, IndexParams(kind=kind, **knobs))
    assert ann.kind == kind and ann.rows == len(images)
    found = ann.candidates(queries, 10)
    recall = neighbour_recall(queries, images, found, 10)
    assert least <= recall <= 1.0
    if kind == "exact":
        assert np.array_equal(found, brute_force(queries, images, 10))


def test_bytes_per_vector_follow_the_code_size(gallery, tmp_path):
    images, _, _ = gallery
    dim = images.shape[1]
    sizes = {
        kind: save_index(build_index(images, IndexParams(kind=kind, pq_bytes=8)), tmp_path / f"{kind}.faiss")
        for kind in ("exact", "ivf_sq8", "ivf_pq")
    }
    assert 4 * dim <= sizes["exact"] < 4 * dim + 4
    assert dim <= sizes["ivf_sq8"] < dim + 8 + 4 * dim * list_count(len(images), IndexParams()) / len(images) + 2
    assert sizes["ivf_pq"] < sizes["ivf_sq8"] < sizes["exact"]


def test_a_saved_index_loads_with_its_kind_and_gives_the_same_answers(gallery, tmp_path):
    images, queries, _ = gallery
    for kind in ("exact", "hnsw", "ivf_sq8", "ivf_pq"):
        params = IndexParams(kind=kind, pq_bytes=16)
        built = build_index(images, params)
        save_index(built, tmp_path / f"{kind}.faiss")
        loaded = load_index(tmp_path / f"{kind}.faiss", params)
        assert loaded.kind == kind
        assert np.array_equal(loaded.candidates(queries, 10), built.candidates(queries, 10))
    with pytest.raises(FileNotFoundError, match="dvc repro index"):
        load_index(tmp_path / "missing.faiss", IndexParams())


def test_search_knobs_trade_recall_for_speed(gallery, tmp_path):
    images, queries, _ = gallery
    built = build_index(images, IndexParams(kind="ivf_sq8"))
    save_index(built, tmp_path / "ivf.faiss")
    narrow = load_index(tmp_path / "ivf.faiss", IndexParams(ivf_nprobe=1)).candidates(queries, 10)
    wide = load_index(tmp_path / "ivf.faiss", IndexParams(ivf_nprobe=64)).candidates(queries, 10)
    assert neighbour_recall(queries, images, narrow, 10) < neighbour_recall(queries, images, wide, 10)


def test_auto_chooses_by_gallery_size():
    params = IndexParams(exact_max=1000, compressed_above=5000)
    assert [choose_kind(n, params) for n in (10, 1000, 1001, 5000, 5001)] == [
        "exact",
        "exact",
        "ivf_sq8",
        "ivf_sq8",
        "ivf_pq",
    ]
    assert choose_kind(10, IndexParams(kind="hnsw")) == "hnsw"
    assert list_count(100_000, IndexParams()) == 632 and list_count(1000, IndexParams()) == 25  # 1000 / 39
    assert list_count(10_000, IndexParams(ivf_nlist=7)) == 7


def test_impossible_indexes_are_refused_naming_the_param():
    small = clip_like_images(100, 64, concepts=5)
    with pytest.raises(ValueError, match=r"index.kind: ivf_pq needs at least 256 vectors"):
        build_index(small, IndexParams(kind="ivf_pq"))
    with pytest.raises(ValueError, match=r"index.pq_bytes: 24 does not divide the embedding dimension 64"):
        build_index(clip_like_images(300, 64, concepts=5), IndexParams(kind="ivf_pq", pq_bytes=24))
    with pytest.raises(ParamError, match=r"index.kind: unknown index kind 'annoy'"):
        IndexParams(kind="annoy")
    with pytest.raises(ParamError, match=r"index.candidates: expected >= 1, got 0"):
        IndexParams(candidates=0)
