"""Pipeline: a run killed mid-stage re-runs cleanly."""

import sqlite3
from pathlib import Path

import yaml
from helpers import dvc_in_background, wait_for

from capsearch.artifacts import read_generated
from capsearch.data.images import ImageSource
from capsearch.demo.workspace import commit_run, create_demo_workspace, run_dvc
from capsearch.io import read_csv
from capsearch.models.captioner import Captioner, DecodingSettings


def _cached_results(cache_file: Path) -> int:
    """Rows committed to the result cache; 0 while it is being created. Opened read-write, as the re-run opens it:
    after a SIGKILL mid-transaction SQLite must roll its journal back before anything can be read."""
    if not cache_file.exists():
        return 0
    try:
        with sqlite3.connect(cache_file, timeout=10) as db:
            return int(db.execute("SELECT COUNT(*) FROM results").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def test_sigkill_mid_caption_then_rerun_matches_a_clean_run(toy_models, tmp_path):
    workspace = create_demo_workspace(tmp_path / "ws", toy_models, images=1200, num_images=150)
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["runtime"].update(batch_size={"caption": 1, "embed_images": 64, "embed_texts": 256})
    params["runtime"]["cache_dir"] = str(tmp_path / "cache")  # a cache no other test has filled
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    commit_run(workspace, "slow captioning")
    cache_file = tmp_path / "cache" / "results.sqlite"

    with dvc_in_background(workspace, "repro", "caption"):
        wait_for(lambda: _cached_results(cache_file) > 0, 240, "the first captions")
        second = run_dvc(workspace, "repro", "caption", check=False)
        assert second.returncode != 0
        refusal = second.stdout + second.stderr
        # DVC's repo lock ("Unable to acquire lock") or its per-output read/write lock ("is busy") refuses it
        assert "Unable to acquire lock" in refusal or "it is being blocked by" in refusal, refusal
    # the block's end SIGKILLed dvc and its stage
    done_before_kill = _cached_results(cache_file)
    assert 0 < done_before_kill < 150, "the kill must land mid-caption"
    assert not (workspace / "data/captions/manifest.json").exists()  # nothing half-written: its one part unfinished
    assert "caption" in run_dvc(workspace, "status", "caption").stdout  # DVC does not accept the stage as done

    rerun = run_dvc(workspace, "repro", "caption", check=False)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    resumed = next(line for line in rerun.stdout.splitlines() if line.startswith("[caption]"))
    assert "150 images in 1 part" in resumed and " from the result cache" in resumed and "batch 1" in resumed
    cached = int(resumed.split(" from the result cache")[0].rsplit(" ", 1)[-1])
    assert cached >= done_before_kill
    assert "up to date" in run_dvc(workspace, "status", "caption").stdout

    ids = [row["image_id"] for row in read_csv(workspace / "data/subset/images.csv", ["image_id", "width", "height"])]
    c = params["caption"]
    clean = Captioner(c["model"], precision=c["precision"], device="cpu").caption_images(
        ImageSource(workspace / "data/raw/Flickr8k_Dataset.zip"),
        ids,
        DecodingSettings(c["num_beams"], c["max_new_tokens"], c["min_new_tokens"]),
        batch_size=16,
    )
    assert read_generated(workspace / "data/captions") == (ids, clean)
