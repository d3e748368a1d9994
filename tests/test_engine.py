"""engine.py with the local engine, and the sharded output layout it writes (artifacts.PartStore, plan_parts)."""

from __future__ import annotations

import json
import os
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from capsearch import artifacts, recipe
from capsearch.artifacts import (
    PartStore,
    PlannedPart,
    plan_parts,
    read_generated,
    read_image_embeddings,
    read_manifest,
)
from capsearch.data.images import ImageSource
from capsearch.demo.shards import write_webdataset_shards
from capsearch.engine import compute_parts, with_content
from capsearch.job import EngineError, ImageTask
from capsearch.models.captioner import Captioner, DecodingSettings
from capsearch.models.embedder import DualEncoder
from capsearch.models.runtime import resolve_runtime
from capsearch.params import RuntimeParams
from capsearch.versions import library_versions

KNOBS = RuntimeParams(device="cpu", num_workers=0, batch_size={"caption": 8, "embed_images": 16}, cache=False)


@pytest.fixture(scope="module")
def shard_rows(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, str]]:
    """(image id, shard) of three shards of 16 generated images; the 20th image is undecodable."""
    shards = write_webdataset_shards(tmp_path_factory.mktemp("wds"), 48, 16, seed=7, corrupt=(19,))
    source = ImageSource(shards[0].parent)
    return [(image_id, str(source.shard_of(image_id))) for image_id in source.ids()]


def tasks(toy_models: Path) -> dict[str, ImageTask]:
    return {
        "caption": ImageTask(
            Captioner, str(toy_models / "toy-blip"), "main", "fp32", "cpu", DecodingSettings(1, 20, 3)
        ),
        "embed_images": ImageTask(DualEncoder, str(toy_models / "toy-clip"), "main", "fp32", "cpu"),
    }


def run_task(task: ImageTask, rows, out: Path, knobs: RuntimeParams = KNOBS):
    store = PartStore(out, task.output_kind, task.identity())
    return compute_parts(task, plan_parts(rows), store, resolve_runtime(knobs), knobs)


def test_parts_follow_the_shards_and_chunk_a_zip(monkeypatch):
    rows = [("a", "s/0.tar"), ("b", "s/0.tar"), ("c", "s/1.tar"), ("d", "x.zip"), ("e", "x.zip"), ("f", "x.zip")]
    monkeypatch.setattr(artifacts, "PART_IMAGES", 2)
    assert plan_parts(rows) == [
        PlannedPart("part-00000", "s/0.tar", ("a", "b")),
        PlannedPart("part-00001", "s/1.tar", ("c",)),
        PlannedPart("part-00002", "x.zip", ("d", "e")),
        PlannedPart("part-00003", "x.zip", ("f",)),
    ]
    assert plan_parts([]) == []


def test_local_engine_writes_one_part_per_shard_and_skips_the_corrupt_image(toy_models, shard_rows, tmp_path):
    task = tasks(toy_models)["embed_images"]
    run = run_task(task, shard_rows, tmp_path / "images")
    manifest = read_manifest(tmp_path / "images", "image_embeddings")
    assert [p["rows"] for p in manifest["parts"]] == [16, 15, 16]
    assert manifest["rows"] == 47 and manifest["dims"] == 64 and manifest["model"] == task.model
    assert manifest["decode"] == "cpu"  # where the images were decoded: part of every part's key
    assert manifest["libraries"] == library_versions() and manifest["libraries"]["torch"] == torch.__version__
    [(image_id, reason, shard)] = manifest["skipped"]
    assert image_id == "000010003.jpg" and shard.endswith("00001.tar") and "cannot identify image format" in reason
    assert run.reused == 0 and run.computed_images == 47 and len(run.skipped) == 1
    ids, vectors = read_image_embeddings(tmp_path / "images")
    assert ids == [i for i, _ in shard_rows if i != "000010003.jpg"]
    assert vectors.shape == (47, 64) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    # each part on its own equals the wrapper's answer for those images (no rows shifted across parts)
    source = ImageSource(shard_rows[0][1])
    direct = task.load().embed_images(source, ids[:16], 16)
    assert np.allclose(vectors[:16], direct, atol=1e-6)


def test_a_rerun_reuses_finished_parts_and_recomputes_changed_ones(toy_models, shard_rows, tmp_path, monkeypatch):
    task = tasks(toy_models)["caption"]
    out = tmp_path / "captions"
    first = run_task(task, shard_rows, out)
    before = read_generated(out)
    again = run_task(task, shard_rows, out)
    assert (again.reused, again.computed_images) == (3, 0)
    assert read_generated(out) == before
    # a damaged part file is recomputed, the others are kept
    (out / "part-00001.csv").write_text("image_id,caption\n", encoding="utf-8")
    mended = run_task(task, shard_rows, out)
    assert (mended.reused, mended.computed_images) == (2, 15)
    assert read_generated(out) == before
    # other decoding settings: nothing is reused
    greedy = ImageTask(Captioner, task.model, "main", "fp32", "cpu", DecodingSettings(2, 20, 3))
    assert run_task(greedy, shard_rows, out).reused == 0
    # other library versions (an upgrade): nothing computed under the old ones is reused
    run_task(task, shard_rows, out)
    upgraded = {**library_versions(), "transformers": "99.0.0"}
    monkeypatch.setattr(recipe, "library_versions", lambda: upgraded)
    assert run_task(replace(task), shard_rows, out).reused == 0  # the job as a new process builds it
    monkeypatch.undo()
    # fewer shards: the stale part files go
    fewer = run_task(task, [row for row in shard_rows if row[1].endswith("00000.tar")], out)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "part-00000.csv"]
    assert fewer.images == 16 and first.images == 47


def test_an_interrupted_store_resumes_from_its_partial_manifest(toy_models, shard_rows, tmp_path):
    task = tasks(toy_models)["caption"]
    parts = with_content(plan_parts(shard_rows))
    store = PartStore(tmp_path / "c", task.output_kind, task.identity())
    store.write(parts[0], ["x.jpg"], ["a caption"], [])  # what a killed run left: one part, manifest incomplete
    assert json.loads((tmp_path / "c" / "manifest.json").read_text())["complete"] is False
    with pytest.raises(ValueError, match="not a complete captions output"):
        read_manifest(tmp_path / "c", "captions")
    resumed = PartStore(tmp_path / "c", task.output_kind, task.identity())
    assert resumed.reusable(parts[0]) and not resumed.reusable(parts[1])


def test_a_task_needs_an_image_wrapper_and_captions_need_decoding_settings(toy_models):
    with pytest.raises(ValueError, match="runs no image task"):
        ImageTask(PartStore, "m", None, "fp32")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs its decoding settings"):
        ImageTask(Captioner, "m", None, "fp32")


def test_a_missing_output_names_the_stage_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"dvc repro embed_images"):
        read_image_embeddings(tmp_path)


def test_a_part_whose_shard_vanished_fails_naming_it(toy_models, shard_rows, tmp_path):
    rows = [(image_id, str(tmp_path / "gone.tar")) for image_id, _ in shard_rows[:3]]
    with pytest.raises((EngineError, OSError, ValueError), match=r"gone\.tar"):
        run_task(tasks(toy_models)["embed_images"], rows, tmp_path / "out")


def test_a_shard_rewritten_with_the_same_size_and_time_recomputes_exactly_its_part(toy_models, tmp_path):
    shards = write_webdataset_shards(tmp_path / "wds", 24, 8, seed=21)
    source = ImageSource(shards[0].parent)
    rows = [(image_id, str(source.shard_of(image_id))) for image_id in source.ids()]
    task = tasks(toy_models)["embed_images"]
    run_task(task, rows, tmp_path / "out")
    ids, before = read_image_embeddings(tmp_path / "out")
    changed = "000010002.jpg"  # in the second shard: its bytes replaced by another image's of the same size
    with tarfile.open(shards[1]) as tar:
        members = {info.name: tar.extractfile(info).read() for info in tar.getmembers()}
    data = shards[1].read_bytes()
    old, new = members[changed], members["000010005.jpg"]
    replacement = (new + bytes(len(old)))[: len(old)] if len(new) <= len(old) else new[: len(old) - 2] + b"\xff\xd9"
    stat = shards[1].stat()
    shards[1].write_bytes(data.replace(old, replacement, 1))
    os.utime(shards[1], ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as `touch -r` or a time-preserving copy leaves it
    assert shards[1].stat().st_size == stat.st_size and shards[1].stat().st_mtime_ns == stat.st_mtime_ns
    again = run_task(task, rows, tmp_path / "out")
    assert (again.reused, again.parts - again.reused, again.computed_images) == (2, 1, 8)
    _, after = read_image_embeddings(tmp_path / "out")
    row = ids.index(changed)
    assert not np.allclose(after[row], before[row], atol=1e-3)  # the new bytes' embedding, not the old one's
    unchanged = [i for i in range(len(ids)) if i != row]
    np.testing.assert_allclose(after[unchanged], before[unchanged], atol=1e-6)
