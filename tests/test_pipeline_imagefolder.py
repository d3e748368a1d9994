"""Pipeline on a captioned image folder (source.kind: imagefolder) and on a Hugging Face dataset (source.kind:
hf_dataset): a generated radiology-like collection (grayscale films, synthetic finding captions, split subfolders, or
the same as a dataset repo's Parquet files) through `dvc repro evaluate`, and a bad metadata file or column stopping
its stage with one line naming the file and line, or the param. Nothing here is a claim about medical images."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from capsearch.artifacts import read_generated, read_references
from capsearch.demo.radiology import write_radiology_dataset_repo, write_radiology_imagefolder
from capsearch.demo.workspace import commit_run, create_demo_workspace, run_dvc

pytestmark = pytest.mark.slow


def _set_source(workspace, source: dict, num_images: int) -> dict:
    """Point the workspace's params at ``source`` with ``num_images`` test images, committed; the params."""
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["source"].update(source)
    params["subset"]["num_images"] = num_images
    params["fusion"]["num_images"] = 10
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    commit_run(workspace, f"a {source['kind']} source")
    return params


def test_a_radiology_like_imagefolder_runs_through_evaluate_as_a_queued_experiment(toy_models, tmp_path):
    workspace = create_demo_workspace(tmp_path / "ws", toy_models, images=80, num_images=8)
    films = write_radiology_imagefolder(workspace / "films", 160, seed=1)  # test and validation: 24 each
    run_dvc(workspace, "add", "films")  # as docs/data.md says: queued experiments get the folder from DVC's cache
    _set_source(workspace, {"kind": "imagefolder", "images": "films", "caption_column": "text"}, 20)  # commits

    run_dvc(workspace, "exp", "run", "--queue", "evaluate")  # a temporary copy of the git workspace, not this one
    ran = run_dvc(workspace, "exp", "run", "--run-all", "-j", "1", check=False)
    status = run_dvc(workspace, "queue", "status").stdout
    done = [line.split() for line in status.splitlines() if "Success" in line]
    assert ran.returncode == 0 and len(done) == 1 and "Failed" not in status, status + ran.stdout[-3000:]
    name = done[0][1]
    logged = run_dvc(workspace, "queue", "logs", name).stdout
    # the same run here: subset from DVC's run cache, the models' captions and embeddings from capsearch's cache
    restored = run_dvc(workspace, "repro", "evaluate").stdout
    assert "Stage 'subset' is cached - skipping run" in restored, restored
    assert "nothing to fetch for the imagefolder source (films)" in logged
    subset = next(line for line in logged.splitlines() if line.startswith("[subset]"))
    assert "imagefolder split=test num_images=20" in subset and ": 20 images, 60 captions" in subset, subset
    references = read_references(workspace / "data/subset/references.csv")
    assert all(image_id.startswith("test/") for image_id in references.image_ids)  # the test/ subfolder only
    ids, captions = read_generated(workspace / "data/captions")
    assert len(ids) == 20 and all(captions)
    quality = json.loads((workspace / "metrics/caption_quality.json").read_text())
    retrieval = json.loads((workspace / "metrics/retrieval.json").read_text())
    assert quality["images"] == 20 and retrieval["gallery_images"] == 20 and retrieval["query_captions"] == 60
    assert 0 <= quality["METEOR"] <= 100 and 0 <= retrieval["text_to_image"]["R@10"] <= 100

    (films / "test" / "metadata.jsonl").write_text('{"file_name": "film_99999.png", "text": "x"}\n')
    broken = run_dvc(workspace, "repro", "subset", check=False)
    assert broken.returncode != 0
    line = next(line for line in (broken.stdout + broken.stderr).splitlines() if line.startswith("[subset] error"))
    assert re.search(r"films/test/metadata.jsonl:1: file_name 'film_99999.png': no such file", line), line


def test_a_hugging_face_dataset_runs_through_evaluate(toy_models, tmp_path):
    workspace = create_demo_workspace(tmp_path / "ws", toy_models, images=80, num_images=8)
    write_radiology_dataset_repo(workspace / "films", 120, seed=1)  # Parquet files + README, as on the Hub
    params = _set_source(workspace, {"kind": "hf_dataset", "dataset": "films", "caption_column": "findings"}, 12)

    result = run_dvc(workspace, "repro", "evaluate", check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    fetched = next(line for line in result.stdout.splitlines() if line.startswith("[fetch]"))
    assert "films: test 18, dev 18, train 84 images with their captions saved to data/raw/hf_dataset" in fetched
    references = read_references(workspace / "data/subset/references.csv")
    assert len(references.texts) == 36 and all(i.startswith("test/") for i in references.image_ids)
    quality = json.loads((workspace / "metrics/caption_quality.json").read_text())
    retrieval = json.loads((workspace / "metrics/retrieval.json").read_text())
    assert quality["images"] == 12 and retrieval["gallery_images"] == 12 and retrieval["query_captions"] == 36

    params["source"]["caption_column"] = "text"
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    broken = run_dvc(workspace, "repro", "fetch", check=False)
    assert broken.returncode != 0
    line = next(line for line in (broken.stdout + broken.stderr).splitlines() if line.startswith("[fetch] error"))
    assert "source.caption_column: films split 'test' has no column 'text' (it has image, findings)" in line, line
