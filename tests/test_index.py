"""index: a folder index is written as one unit (complete and consistent, or the old one untouched)."""

from __future__ import annotations

import numpy as np
import pytest

from capsearch import ann
from capsearch.data.images import ImageSource
from capsearch.index import ModelRef, SearchIndex, load_folder_index, write_folder_index


def small_index(folder, names: list[str], seed: int) -> SearchIndex:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(len(names), 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    captions = [f"caption of {name}" for name in names]
    return SearchIndex(names, vectors, captions, vectors[::-1].copy(), ImageSource(folder), ModelRef("clip"))


def test_a_failed_rewrite_leaves_the_old_index_whole(tmp_path, monkeypatch):
    out = tmp_path / ".capsearch"
    first = small_index(tmp_path, ["a.jpg", "b.jpg", "c.jpg"], seed=1)
    write_folder_index(first, out, [("x.jpg", "unreadable")])
    real_build = ann.build_index
    built = []

    def failing_build(vectors, params):  # the second faiss index fails, after every other file was written
        built.append(len(vectors))
        if len(built) == 2:
            raise MemoryError("no memory for the index")
        return real_build(vectors, params)

    monkeypatch.setattr(ann, "build_index", failing_build)
    with pytest.raises(MemoryError):
        write_folder_index(small_index(tmp_path, ["d.jpg", "e.jpg"], seed=2), out, [])
    loaded = load_folder_index(out)
    assert loaded.ids == first.ids and loaded.generated == first.generated
    assert np.array_equal(loaded.image_vectors, first.image_vectors)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".capsearch"]  # no half-written folder beside it
    monkeypatch.undo()
    second = small_index(tmp_path, ["d.jpg", "e.jpg"], seed=2)
    write_folder_index(second, out, [])
    loaded = load_folder_index(out)
    assert loaded.ids == ["d.jpg", "e.jpg"] and np.array_equal(loaded.image_vectors, second.image_vectors)
    assert (out / "skipped.csv").read_text() == "image_id,reason\n"


def test_an_index_killed_between_its_renames_is_restored_before_the_next_write(tmp_path):
    out = tmp_path / ".capsearch"
    first = small_index(tmp_path, ["a.jpg", "b.jpg"], seed=1)
    write_folder_index(first, out, [])
    out.rename(tmp_path / ".capsearch.old-4242")  # the old index moved aside, the new one never moved in
    (tmp_path / ".capsearch.building-x").mkdir()
    write_folder_index(small_index(tmp_path, ["c.jpg"], seed=3), out, [])
    assert load_folder_index(out).ids == ["c.jpg"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".capsearch"]
