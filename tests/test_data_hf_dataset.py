"""data.hf_dataset: a Hugging Face dataset as a caption source, loaded with `datasets` from a local repo folder, a
save_to_disk folder, or by id and commit from the loopback fake Hub (and then offline from its cache); the images
kept as the dataset's encoded bytes; every bad column, split and row refused in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from io import BytesIO
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fake_hub import FakeHub
from PIL import Image

from capsearch.data.hf_dataset import HfDatasetError, fetch_hf_dataset, read_saved_captions
from capsearch.data.subset import build_subset, open_source
from capsearch.data.webdataset import split_of
from capsearch.demo.radiology import write_radiology_dataset_repo
from capsearch.params import ParamError, SourceParams

SPLITS = {"test": "test", "dev": "validation", "train": "train"}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A generated dataset repo: 40 films in train/validation/test Parquet files, a list of findings per image."""
    return write_radiology_dataset_repo(tmp_path_factory.mktemp("hf") / "films", 40, seed=2)


def _rows(repo: Path, split: str) -> list[dict]:
    return pq.read_table(repo / f"data/{split}-00000-of-00001.parquet").to_pylist()


def test_a_local_repo_folder_keeps_the_encoded_images_and_every_caption(repo, tmp_path):
    raw = tmp_path / "raw"
    got = fetch_hf_dataset(str(repo), None, None, "image", "findings", SPLITS, raw / "hf_dataset")
    assert got.commit is None and got.rows == {split: len(_rows(repo, theirs)) for split, theirs in SPLITS.items()}
    source, text_dir = open_source("hf_dataset", raw, tmp_path / "unused")
    captions, splits = read_saved_captions(text_dir)
    for ours, theirs in SPLITS.items():
        rows = _rows(repo, theirs)
        assert splits[ours] == [f"{ours}/{row:06d}.png" for row in range(len(rows))]
        for image_id, row in zip(splits[ours], rows, strict=True):
            assert captions[image_id] == row["findings"]
            assert source.read_bytes(image_id) == row["image"]["bytes"]  # the same PNG, not re-encoded
    subset = build_subset(text_dir, source, "test", "all", 0, kind="hf_dataset")
    assert [row[0] for row in subset.images] == splits["test"] and subset.images[0][1:3] == (96, 96)
    assert len(subset.references) == 3 * len(splits["test"])
    described = json.loads((raw / "hf_dataset/SOURCE.json").read_text())
    assert described["dataset"] == str(repo) and described["caption_column"] == "findings"


def test_one_split_divided_by_hash_and_a_save_to_disk_folder(repo, tmp_path):
    first = fetch_hf_dataset(str(repo), None, None, "image", "findings", "train", tmp_path / "a")
    captions, splits = read_saved_captions(tmp_path / "a")
    train = _rows(repo, "train")
    assert sum(first.rows.values()) == len(train) and all(first.rows.values())
    for ours, ids in splits.items():  # each row of the one split where its hash puts it, under its row number
        for image_id in ids:
            row = int(image_id.split("/")[1].split(".")[0])
            assert split_of(image_id.split("/", 1)[1]) == ours and captions[image_id] == train[row]["findings"]
    again = fetch_hf_dataset(
        str(tmp_path / "a"), None, None, "image", "captions", SPLITS | {"dev": None}, tmp_path / "b"
    )
    assert again.rows == {"test": first.rows["test"], "train": first.rows["train"]}
    assert read_saved_captions(tmp_path / "b")[1]["dev"] == []


def _broken_repo(tmp_path: Path, findings: list) -> Path:
    import datasets

    features = datasets.Features({"image": datasets.Image(), "findings": datasets.Value("string")})
    if findings and isinstance(findings[0], list):
        features["findings"] = datasets.List(datasets.Value("string"))
    buffer = BytesIO()
    Image.new("L", (8, 8), 90).save(buffer, "PNG")
    image = {"bytes": buffer.getvalue(), "path": None}
    folder = tmp_path / "broken"
    (folder / "data").mkdir(parents=True)
    table = {"image": [image] * len(findings), "findings": findings}
    datasets.Dataset.from_dict(table, features=features).to_parquet(str(folder / "data/test-00000-of-00001.parquet"))
    return folder


@pytest.mark.parametrize(
    ("findings", "change", "message"),
    [
        (["clear", "  "], {}, r"split 'test' row 1: empty caption in column 'findings'"),
        ([["clear"], []], {}, r"split 'test' row 1: no caption in column 'findings'"),
        (["clear"], {"image_column": "img"}, r"source.image_column: .* has no column 'img' \(it has image, findings\)"),
        (["clear"], {"caption_column": "text"}, r"source.caption_column: .* has no column 'text'"),
        (["clear"], {"image_column": "findings"}, r"source.image_column: .*'findings' holds .*, not images"),
        (["clear"], {"splits": {"test": "validation"}}, r"source.splits.test: .* has no split 'validation' \(it has"),
        (["clear"], {"splits": {"test": None}}, r"source.splits: no split mapped"),
        (["clear"], {"splits": {"test": "test", "train": "test"}}, r"source.splits.test: 'test' is mapped to train"),
        (["clear"], {"splits": "test"}, r"source.splits: dividing .* split 'test' \(1 rows\) by hash leaves \w+ with"),
        ([], {}, r"source.dataset: .*: Instruction \"test\" corresponds to no data"),  # an empty Parquet file
    ],
)
def test_a_bad_dataset_is_one_line_naming_the_param_or_the_row(tmp_path, findings, change, message):
    args = {"image_column": "image", "caption_column": "findings", "splits": {"test": "test"}} | change
    folder = _broken_repo(tmp_path, findings or [])
    with pytest.raises(HfDatasetError, match=message) as caught:
        fetch_hf_dataset(str(folder), None, None, out=tmp_path / "out", **args)
    assert "\n" not in str(caught.value) and not (tmp_path / "out").exists()


def test_params_of_an_hf_dataset_source():
    with pytest.raises(ParamError, match=r"source.dataset: source.kind hf_dataset needs"):
        SourceParams(kind="hf_dataset")
    with pytest.raises(ParamError, match=r"source.splits: expected test/dev/train mapped"):
        SourceParams(kind="hf_dataset", dataset="org/x", splits={"eval": "test"})
    with pytest.raises(ParamError, match=r"source.images: the hf_dataset source reads fetch's download"):
        SourceParams(kind="hf_dataset", dataset="org/x", images="films")
    assert SourceParams(kind="hf_dataset", dataset="org/x", splits="train").splits == "train"


FETCH = """
import json, sys
from capsearch.data.hf_dataset import HfDatasetError, fetch_hf_dataset
answers = []
for revision, out in json.loads(sys.argv[1]):
    try:
        got = fetch_hf_dataset("org/films", revision, None, "image", "findings", {"test": "test"}, out)
        answers.append({"commit": got.commit, "rows": got.rows})
    except HfDatasetError as exc:
        answers.append({"error": str(exc)})
print(json.dumps(answers))
"""


def _fetch_in_a_fresh_process(calls, env):  # huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE when imported
    result = subprocess.run(
        [sys.executable, "-c", FETCH, json.dumps(calls)], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_by_id_and_commit_from_the_hub_then_offline_from_its_cache(repo, tmp_path):
    files = {path.relative_to(repo).as_posix(): path.read_bytes() for path in repo.rglob("*") if path.is_file()}
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_TELEMETRY": "1"}
    env.pop("HF_HUB_OFFLINE", None)
    with FakeHub() as hub:
        commit = hub.dataset("org/films").commit(files, "main")
        online = _fetch_in_a_fresh_process(
            [[commit, str(tmp_path / "a")], ["main", str(tmp_path / "b")], ["v9", str(tmp_path / "c")]],
            {**env, "HF_ENDPOINT": hub.endpoint},
        )
        assert any(request.startswith("GET /datasets/org/films/resolve/") for request in hub.requests)
    rows = {"test": len(_rows(repo, "test"))}
    assert online[0] == {"commit": commit, "rows": rows} and online[1] == {"commit": commit, "rows": rows}
    assert online[2]["error"] == "source.revision: 'org/films' has no branch, tag or commit 'v9'"
    offline = _fetch_in_a_fresh_process(
        [[commit, str(tmp_path / "d")], ["0" * 40, str(tmp_path / "e")]], {**env, "HF_HUB_OFFLINE": "1"}
    )
    assert offline[0] == {"commit": commit, "rows": rows}
    assert "is not in the Hugging Face cache and the Hub cannot be reached" in offline[1]["error"]
    assert read_saved_captions(tmp_path / "d") == read_saved_captions(tmp_path / "a")


def test_a_damaged_or_misnamed_local_dataset_is_one_line(repo, tmp_path, monkeypatch):
    saved = tmp_path / "saved"
    fetch_hf_dataset(str(repo), None, None, "image", "findings", SPLITS, saved)
    fetch = lambda dataset, **kw: fetch_hf_dataset(  # noqa: E731
        dataset, kw.get("revision"), kw.get("config"), "image", "captions", {"test": "test"}, tmp_path / "out"
    )
    for change, message in (
        ({"revision": "main"}, r"^source.revision: 'main' is set, but .* is a local folder, which has no revisions"),
        ({"config": "default"}, r"^source.config: 'default' is set, but .* is a save_to_disk folder"),
    ):
        with pytest.raises(HfDatasetError, match=message):
            fetch(str(saved), **change)
    damaged = tmp_path / "damaged"
    import shutil

    shutil.copytree(saved, damaged)
    arrow = next((damaged / "test").glob("*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[: arrow.stat().st_size // 2])  # truncated
    with pytest.raises(HfDatasetError, match=rf"^source.dataset: {damaged} is not a readable saved dataset \("):
        fetch(str(damaged))
    (damaged / "dataset_dict.json").write_text("{not json")
    with pytest.raises(HfDatasetError, match=rf"^source.dataset: {damaged} is not a readable saved dataset \("):
        fetch(str(damaged))
    with pytest.raises(HfDatasetError, match=rf"^source.images: {damaged} is not a readable saved dataset"):
        read_saved_captions(damaged)  # what subset reads: fetch's folder, damaged after fetch
    import datasets

    empty = datasets.load_from_disk(str(saved))
    empty["test"] = empty["test"].select([])
    empty.save_to_disk(str(tmp_path / "empty"))
    with pytest.raises(HfDatasetError, match=r"^source.dataset: .*empty is not a readable saved dataset \("):
        fetch(str(tmp_path / "empty"))  # datasets itself cannot load a saved 0-row split
    monkeypatch.chdir(tmp_path)  # tmp_path/saved is a folder here: "saved/no-such" names a folder, not a hub id
    with pytest.raises(HfDatasetError, match=r"^source.dataset: local dataset folder 'saved/no-such' does not exist "
                                             r"\(saved/ is a folder here, so this is no hub id\)$"):  # fmt: skip
        fetch("saved/no-such")
    assert not (tmp_path / "out").exists()
