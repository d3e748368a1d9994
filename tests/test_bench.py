"""bench/stages.py: the prepared GPU benchmark runs end to end in its quick mode (on the toy models), so the one
call a GPU session makes does not fail on a stale line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
ROW_KEYS = {"work", "way", "decode", "images", "seconds", "images_per_s", "machine"}


def test_the_stage_benchmark_runs_in_quick_mode_and_writes_every_row(toy_models, tmp_path):
    out = tmp_path / "stages.json"
    result = subprocess.run(
        [sys.executable, "bench/stages.py", "--quick", "--device", "cpu", "--models", "toy", "--toy-models",
         str(toy_models), "--images-dir", str(tmp_path / "photos"), "--models-dir", str(tmp_path / "models"),
         "--out", str(out)],
        cwd=PROJECT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert all(set(row) >= ROW_KEYS and row["images"] > 0 and row["seconds"] > 0 for row in rows)
    works = {row["work"] for row in rows}
    assert {"decode + resize", "embed_images: loader only", "embed_images: model only", "embed_images",
            "embed_texts", "caption (greedy, 20 tokens)", "caption (default params: 3 beams, <=30 tokens)",
            "Flickr8k: all model work", "caption: VLM vs BLIP (greedy, 20 tokens)"} <= works  # fmt: skip
    vlm = [row for row in rows if row["work"].startswith("caption: VLM")]
    assert [row["way"].split(" (")[1].split(")")[0] for row in vlm] == ["blip", "idefics3"]
    assert all(row["peak_mb"] > 100 and row["tokens_per_image"] > 0 for row in vlm)
    assert {row["decode"] for row in rows} <= {"cpu", "gpu", "none"} and report["decode_auto"] == "cpu"
    pixels, recall = report["deviation"]
    assert 0 < pixels["max_pixel_difference"] <= 8 and pixels["min_cosine"] > 0.99
    assert abs(recall["cpu_path"]["R@5"] - recall["other_path"]["R@5"]) <= 5


def test_the_content_key_benchmark_runs_in_quick_mode_and_times_every_layout(tmp_path):
    out = tmp_path / "content_keys.json"
    result = subprocess.run(
        [sys.executable, "bench/content_keys.py", "--quick", "--distinct", "16", "--dir", str(tmp_path / "data"),
         "--out", str(out)],
        cwd=PROJECT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert {(row["layout"], row["work"]) for row in rows} == {
        (layout, work) for layout in ("shards", "zip", "folder") for work in ("open", "content digest")
    }
    assert all(row["images"] == 500 and row["seconds"] > 0 and row["machine"] for row in rows)


def test_the_training_benchmark_runs_and_reports_pairs_per_second(toy_models, tmp_path):
    out = tmp_path / "finetune.json"
    result = subprocess.run(
        [sys.executable, "bench/finetune.py", "--device", "cpu", "--batches", "4", "--steps", "1", "--clip-model",
         str(toy_models / "toy-clip"), "--blip-model", str(toy_models / "toy-blip"), "--out", str(out)],
        cwd=PROJECT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(row["task"], row["checkpointing"], row["batch"]) for row in rows] == [
        (task, checkpointing, 4) for task in ("clip", "captioner") for checkpointing in (False, True)
    ]
    assert all(row["pairs_per_s"] > 0 and row["machine"] for row in rows)


def test_the_open_clip_benchmark_runs_both_families_on_the_same_photos(toy_models, toy_open_clip, tmp_path):
    out = tmp_path / "families.json"
    result = subprocess.run(
        [sys.executable, "bench/families.py", "--models", "toy", "--toy-models", str(toy_models), "--toy-open-clip",
         str(toy_open_clip), "--images", "8", "--batch", "4", "--workers", "0", "--rounds", "1",
         "--images-dir", str(tmp_path / "photos"), "--out", str(out)],
        cwd=PROJECT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert {(row["family"], row["work"]) for row in report["rows"]} == {
        (family, work) for family in ("transformers CLIP", "open_clip")
        for work in ("embed_images", "model only", "embed_texts")
    }  # fmt: skip
    assert all(row["per_second"] > 0 for row in report["rows"]) and report["machine"]
    assert set(report["open_clip_over_transformers"]) == {"embed_images", "model only", "embed_texts"}
