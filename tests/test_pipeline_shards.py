"""Pipeline on webdataset shards: `dvc repro` end to end through evaluate, the engine switch re-running nothing,
and a Ray run killed with SIGKILL resuming shard by shard to the same outputs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import ray_core_warning

from capsearch.artifacts import read_generated, read_image_embeddings
from capsearch.demo.workspace import run_dvc, tool_env

pytestmark = pytest.mark.xdist_group("ray")  # the Ray test below shares the module's workspace


def lines(result: subprocess.CompletedProcess[str], stage: str) -> str:
    return next(line for line in (result.stdout + result.stderr).splitlines() if line.startswith(f"[{stage}]"))


def set_runtime(workspace: Path, **values: object) -> None:
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["runtime"].update(values)
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_shards_run_through_evaluate_with_one_caption_per_image(shard_run):
    retrieval = json.loads((shard_run / "metrics/retrieval.json").read_text())
    assert retrieval["gallery_images"] == 60 and retrieval["query_captions"] == 60
    assert retrieval["text_to_image"]["R@10"] > 80  # the toy models learned the scenes: ids line up
    ids, vectors = read_image_embeddings(shard_run / "data/embeddings/images")
    assert read_generated(shard_run / "data/captions")[0] == ids and vectors.shape == (60, 64)
    shards = {row.split(",")[3] for row in (shard_run / "data/subset/images.csv").read_text().splitlines()[1:]}
    assert shards == {f"source/shards/{i:05d}.tar" for i in range(3)}
    manifest = json.loads((shard_run / "data/embeddings/images/manifest.json").read_text())
    assert [p["shard"] for p in manifest["parts"]] == sorted(shards)
    subset_deps = yaml.safe_load((shard_run / "dvc.lock").read_text())["stages"]["subset"]["deps"]
    assert "source/shards" in [dep["path"] for dep in subset_deps]  # the shard folder is the DVC dependency


def test_switching_the_engine_reruns_nothing(shard_run, tmp_path):
    workspace = tmp_path / "ws"
    shutil.copytree(shard_run, workspace, symlinks=True)
    set_runtime(workspace, engine="ray", ray_address="auto", ray_actors=4)
    status = run_dvc(workspace, "status", "--with-deps", "evaluate")
    assert "up to date" in status.stdout, status.stdout
    # while a shard added to the source folder re-runs subset
    extra = workspace / "source/shards/00003.tar"
    shutil.copy(workspace / "source/shards/00000.tar", extra)
    assert "subset" in run_dvc(workspace, "status", "--with-deps", "evaluate").stdout


def test_sigkill_mid_ray_caption_then_repro_computes_only_missing_shards(shard_run, ray_cluster, tmp_path):
    workspace = tmp_path / "ws"
    shutil.copytree(shard_run, workspace, symlinks=True)
    clean_ids, clean_captions = read_generated(shard_run / "data/captions")  # by the local engine
    shutil.rmtree(workspace / "data/captions")
    set_runtime(workspace, engine="ray", ray_address=ray_cluster.address, ray_actors=1, batch_size={"caption": 2})
    manifest = workspace / "data/captions/manifest.json"

    def parts_done() -> int:
        try:
            return len(json.loads(manifest.read_text())["parts"])
        except (OSError, ValueError):
            return 0

    log = tmp_path / "stage.log"
    with log.open("w") as output:
        stage = subprocess.Popen(
            [sys.executable, "stages/caption.py"], cwd=workspace, env=tool_env(), start_new_session=True,
            stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while parts_done() == 0 and stage.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert stage.poll() is None, log.read_text()[-3000:]
        os.killpg(stage.pid, signal.SIGKILL)
    finally:
        if stage.poll() is None:
            os.killpg(stage.pid, signal.SIGKILL)
        stage.wait()
    done = parts_done()
    assert 1 <= done < 3, f"the kill must land mid-run ({done} of 3 parts done)"
    assert json.loads(manifest.read_text())["complete"] is False
    assert "caption" in run_dvc(workspace, "status", "caption").stdout  # DVC does not accept it as done

    rerun = run_dvc(workspace, "repro", "caption", check=False)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    summary = lines(rerun, "caption")
    assert f"3 parts ({done} reused from an earlier run, {3 - done} computed" in summary, summary
    assert "engine ray" in summary
    ours = ("[caption]", "Running", "Use")  # the stage's own lines and DVC's
    noise = [line for line in rerun.stderr.splitlines() if line.strip() and not line.startswith(ours)]
    noise = [line for line in noise if not ray_core_warning(line)]  # the one Ray line left (test_ray_engine.py)
    assert not noise, "\n".join(noise)  # only the stage's own lines: no Ray log lines, no warnings
    assert read_generated(workspace / "data/captions") == (clean_ids, clean_captions)
    assert sorted(p.name for p in (workspace / "data/captions").iterdir()) == [
        "manifest.json",
        "part-00000.csv",
        "part-00001.csv",
        "part-00002.csv",
    ]
