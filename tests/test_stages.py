"""Stage contract: each stage checks its params before loading a model, fails with one line naming the
param or file, and accepts every documented input layout."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from helpers import kaggle_folder, write_typed_params
from stage_runner import run_stage, write_params

from capsearch.params import CaptionParams, ClipParams, FusionParams, SubsetParams, default_params

PROJECT = Path(__file__).resolve().parents[1]


def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def test_fetch_without_network_says_how_to_place_the_zips(tmp_path):
    real = yaml.safe_load((PROJECT / "params.yaml").read_text())
    assert real["fetch"]["images_url"].startswith("https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/")
    port = closed_port()
    real["fetch"]["images_url"] = f"http://127.0.0.1:{port}/Flickr8k_Dataset.zip"
    write_params(tmp_path, real)
    result = run_stage(tmp_path, "fetch")
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("[fetch] error:") and "cannot connect" in last
    assert "place it at data/raw/Flickr8k_Dataset.zip (md5 f18a1e2920de5bd84dae7cf08ec78978)" in last
    assert "Traceback" not in result.stderr


def test_fetch_uses_zips_placed_by_hand(tmp_path):
    from capsearch.data.fetch import md5_of
    from capsearch.demo.scenes import write_flickr8k_layout

    paths = write_flickr8k_layout(tmp_path / "data" / "raw", 16, seed=1)
    port = closed_port()  # any download attempt would fail
    write_params(
        tmp_path,
        {
            "fetch": {
                "images_url": f"http://127.0.0.1:{port}/a.zip",
                "images_md5": md5_of(paths["images"]),
                "text_url": f"http://127.0.0.1:{port}/b.zip",
                "text_md5": md5_of(paths["text"]),
            }
        },
    )
    result = run_stage(tmp_path, "fetch")
    assert result.returncode == 0, result.stderr
    assert "Flickr8k_Dataset.zip present" in result.stdout and "16 members checked" in result.stdout
    assert (tmp_path / "data" / "text" / "Flickr8k.token.txt").exists()


MISSING_MODEL = "/nonexistent/capsearch-model"  # loading it would fail: a param error must come first


@pytest.fixture
def dev_data(tmp_path):
    """Generated Flickr8k data as fetch leaves it (16 images: 2 per test and dev split)."""
    from capsearch.demo.scenes import write_flickr8k_layout

    paths = write_flickr8k_layout(tmp_path / "data" / "raw", 16, seed=1)
    shutil.unpack_archive(paths["text"], tmp_path / "data" / "text")
    return tmp_path


def test_subset_seed_that_is_no_number_names_the_param(dev_data):
    (dev_data / "params.yaml").write_text(yaml.safe_dump({"subset": {"split": "test", "num_images": 1, "seed": "abc"}}))
    line = one_error_line(run_stage(dev_data, "subset"), "subset")
    assert "subset.seed: expected an integer, got 'abc'" in line


def test_fusion_alphas_out_of_range_are_refused_before_any_model_loads(tmp_path):
    models = {"model": MISSING_MODEL, "revision": "main"}
    write_typed_params(
        tmp_path,
        caption=CaptionParams(**models),
        fusion=FusionParams(alphas=(0.5, 0.0)),
    )
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["fusion"]["alphas"] = [0.5, 1.5]
    params["clip"].update(models)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    line = one_error_line(run_stage(tmp_path, "tune_fusion"), "tune_fusion")
    assert "fusion.alphas: every alpha must be a number within 0..1, got 1.5" in line


def test_too_large_a_fusion_sample_names_fusion_num_images(dev_data):
    write_typed_params(
        dev_data,
        caption=CaptionParams(model=MISSING_MODEL, revision="main"),
        fusion=FusionParams(num_images=999),
    )
    line = one_error_line(run_stage(dev_data, "tune_fusion"), "tune_fusion")
    assert "fusion.num_images: 999 is larger than the" in line and "of split 'dev'" in line


def test_finetune_clip_checks_its_params_and_its_train_sample_before_training(dev_data, toy_models):
    clip = ClipParams(model=str(toy_models / "toy-clip"), revision="main")
    for finetune, split, message in (
        ({"learning_rate": 0}, "test", "finetune.clip.learning_rate: expected > 0, got 0"),
        ({}, "dev", "finetune.clip.epochs: fine-tuning trains on the train split"),
        # train_images is at most the split's 12 (a larger number takes them all): the batch is what is too large
        ({"train_images": 999}, "test", "finetune.clip.batch_size: 64 is more than the 12 train images; lower it"),
    ):
        raw = default_params(subset=SubsetParams(split=split), clip=clip)
        raw["finetune"]["clip"].update(epochs=1, **finetune)
        (dev_data / "params.yaml").write_text(yaml.safe_dump(raw))
        line = one_error_line(run_stage(dev_data, "finetune_clip"), "finetune_clip")
        assert message in line and "raise finetune.clip.train_images" not in line, line
    assert not (dev_data / "data/models/clip").exists()  # nothing written by a refused run


def one_error_line(result: subprocess.CompletedProcess, stage: str) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith(f"[{stage}] error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def caption_workspace(tmp_path):
    (tmp_path / "data" / "subset").mkdir(parents=True)
    (tmp_path / "data" / "subset" / "images.csv").write_text("image_id,width,height,shard\n")
    return tmp_path


def caption_params(**changes) -> dict:
    params = {
        "caption": {
            "model": MISSING_MODEL,
            "revision": "main",
            "num_beams": 3,
            "max_new_tokens": 20,
            "min_new_tokens": 5,
            "precision": "auto",
        },
        "runtime": {"device": "cpu", "num_workers": 0, "batch_size": {"caption": 4}, "cache": False},
    }
    for key, value in changes.items():
        section, name = key.split("__")
        params[section][name] = value
    return params


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"caption__precision": "fp8"}, "caption.precision: unknown precision 'fp8'; choose one of auto, fp32"),
        ({"caption__num_beams": 0}, "caption.num_beams: expected >= 1, got 0"),
        ({"caption__min_new_tokens": 40}, "caption.min_new_tokens: expected 0..max_new_tokens (20), got 40"),
        ({"runtime__batch_size": {"caption": 0}}, "runtime.batch_size.caption: expected a positive integer or 'auto'"),
        ({"runtime__batch_size": {"caption": "lots"}}, "runtime.batch_size.caption: expected a positive integer"),
        ({"runtime__num_workers": -2}, "runtime.num_workers: expected 0 or more, or 'auto', got -2"),
        ({"runtime__device": "tpu"}, "runtime.device: unknown device 'tpu'; choose one of auto, cpu, cuda"),
        ({"runtime__cache": "yes"}, "runtime.cache: expected true or false, got 'yes'"),
        ({"runtime__cache": True, "runtime__cache_dir": "/proc/capsearch-cache"}, "runtime.cache_dir: cannot use"),
    ],
)
def test_caption_params_are_checked_before_the_model_loads(caption_workspace, changes, message):
    line = one_error_line(run_stage(caption_workspace, "caption", caption_params(**changes)), "caption")
    assert message in line, line


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_refused(caption_workspace):
    line = one_error_line(run_stage(caption_workspace, "caption", caption_params(runtime__device="cuda")), "caption")
    assert "runtime.device: 'cuda' requested but torch sees no CUDA GPU; use 'auto' or 'cpu'" in line


def test_unreachable_model_id_says_which_param_what_was_tried_and_how_to_fix(caption_workspace):
    params = caption_params(caption__model="capsearch-test/no-such-blip")
    line = one_error_line(run_stage(caption_workspace, "caption", params, HF_HUB_OFFLINE="1"), "caption")
    assert "caption.model: could not load 'capsearch-test/no-such-blip' (revision 'main')" in line
    assert "not a local folder and not available from the Hugging Face Hub or its cache" in line
    assert "Set caption.model to a folder saved with save_pretrained" in line


def test_clip_precision_is_checked_before_the_model_loads(caption_workspace):
    params = {
        "clip": {"model": MISSING_MODEL, "revision": "main", "precision": "half"},
        "runtime": {"device": "cpu"},
    }
    line = one_error_line(run_stage(caption_workspace, "embed_images", params), "embed_images")
    assert "clip.precision: unknown precision 'half'" in line


@pytest.mark.parametrize(
    ("subset", "message"),
    [
        (
            {"split": "test", "num_images": -5, "seed": 0},
            "subset.num_images: expected a positive integer or 'all', got -5",
        ),
        ({"split": "test", "num_images": "many", "seed": 0}, "subset.num_images: expected a positive integer or 'all'"),
        (
            {"split": "test", "num_images": 999, "seed": 0},
            "subset.num_images: 999 is larger than the 2 captioned images",
        ),
        ({"split": "validation", "num_images": 1, "seed": 0}, "subset.split: unknown split 'validation'"),
    ],
)
def test_subset_params(tmp_path, subset, message):
    import shutil

    from capsearch.demo.scenes import write_flickr8k_layout

    paths = write_flickr8k_layout(tmp_path / "data" / "raw", 16, seed=1)
    shutil.unpack_archive(paths["text"], tmp_path / "data" / "text")
    line = one_error_line(run_stage(tmp_path, "subset", {"subset": subset}), "subset")
    assert message in line, line
    assert not (tmp_path / "data" / "subset").exists()


@pytest.mark.parametrize(
    ("subset", "message"),
    [
        ({"split": "test", "num_images": 0, "seed": 0}, "subset.num_images: expected a positive integer or 'all'"),
        ({"split": "val", "num_images": 2, "seed": 0}, "subset.split: unknown split 'val'"),
        ({"split": "test", "num_images": 3, "seed": 0}, "subset.num_images: 3 is larger than the 2 captioned"),
        ({"split": "test", "seed": 0}, "subset.num_images missing"),
    ],
)
def test_subset_param_errors(tmp_path, subset, message):
    from capsearch.demo.scenes import write_flickr8k_layout

    paths = write_flickr8k_layout(tmp_path / "data" / "raw", 16, seed=1)
    shutil.unpack_archive(paths["text"], tmp_path / "data" / "text")
    write_params(tmp_path, {"subset": subset})
    result = run_stage(tmp_path, "subset")
    assert result.returncode != 0 and message in result.stderr, result.stderr
    assert not (tmp_path / "data" / "subset").exists()  # nothing half-written


def test_caption_with_missing_model_names_the_param(tmp_path):
    (tmp_path / "data" / "subset").mkdir(parents=True)
    (tmp_path / "data" / "subset" / "images.csv").write_text("image_id,width,height,shard\n")
    params = {
        "caption": {
            "model": str(tmp_path / "no-model"),
            "revision": "main",
            "num_beams": 1,
            "max_new_tokens": 5,
            "min_new_tokens": 1,
            "precision": "fp32",
        },
        "runtime": {"device": "cpu"},
    }
    write_params(tmp_path, params)
    result = run_stage(tmp_path, "caption")
    assert result.returncode != 0
    assert "[caption] error: caption.model: local model folder" in result.stderr
    params["caption"]["precision"] = "fp64"
    write_params(tmp_path, params)
    assert "caption.precision: unknown precision 'fp64'" in run_stage(tmp_path, "caption").stderr


def test_fusion_alpha_is_never_chosen_on_the_reported_split(tmp_path):
    params = {
        "fusion": {"split": "test", "num_images": 5, "seed": 0, "alphas": [0.5]},
        "subset": {"split": "test"},
        "caption": {
            "model": "x",
            "revision": "main",
            "num_beams": 1,
            "max_new_tokens": 5,
            "min_new_tokens": 1,
            "precision": "fp32",
        },
        "clip": {"model": "x", "revision": "main", "precision": "fp32"},
    }
    write_params(tmp_path, params)
    result = run_stage(tmp_path, "tune_fusion")
    assert result.returncode != 0
    assert "fusion.split: alpha must be chosen on another split than the reported one" in result.stderr


def test_fetch_and_subset_stages_accept_the_kaggle_layout(tmp_path):
    folder = kaggle_folder(tmp_path)
    workspace = tmp_path / "ws"
    workspace.mkdir()
    params = {
        "fetch": {"images_url": "unused", "images_md5": "0", "text_url": "unused", "text_md5": "0"},
        "subset": {"split": "all", "num_images": "all", "seed": 0},
    }
    params["fetch"]["kaggle_dir"] = str(folder)
    fetched = run_stage(workspace, "fetch", params)
    assert fetched.returncode == 0, fetched.stderr
    assert "13 images packed" in fetched.stdout
    subset = run_stage(workspace, "subset")
    assert subset.returncode == 0, subset.stderr
    assert "12 images, 60 captions, 1 excluded" in subset.stdout
    captions = (workspace / "data/subset/references.csv").read_text()
    assert '"A box, number 3, caption 4 ."' in captions  # commas survive into the CSV, quoted
    excluded = (workspace / "data/subset/excluded.csv").read_text()
    assert "broken.jpg" in excluded
    params["subset"]["split"] = "test"
    refused = run_stage(workspace, "subset", params)
    assert refused.returncode != 0
    assert "[subset] error: subset.split: 'test' needs Flickr_8k.testImages.txt" in refused.stderr


def test_embed_texts_stage_truncates_and_counts_overlong_captions(toy_models, tmp_path):
    import json

    from capsearch.artifacts import PartStore, PlannedPart
    from capsearch.io import write_csv

    long_caption = "a dog , " * 120  # ~240 tokens, over CLIP's 77
    write_csv(tmp_path / "data/subset/references.csv", ["image_id", "caption_index", "caption"],
              [("a.jpg", 0, "a red circle"), ("a.jpg", 1, long_caption), ("b.jpg", 0, "a blue square")])  # fmt: skip
    captions = PartStore(tmp_path / "data/captions", "captions", {})
    part = PlannedPart("part-00000", "x.zip", ("a.jpg", "b.jpg"), content="digest of the two images")
    captions.write(part, ["a.jpg", "b.jpg"], ["a red", "x"], [])
    captions.finish([part])
    params = {
        "clip": {"model": str(toy_models / "toy-clip"), "revision": "main", "precision": "fp32"},
        "runtime": {"device": "cpu", "cache": False},
    }
    result = run_stage(tmp_path, "embed_texts", params)
    assert result.returncode == 0, result.stderr
    assert "1 truncated to 77 tokens" in result.stdout  # the plain and the prefixed copy: the summary counts plain
    counts = json.loads((tmp_path / "data/embeddings/texts.json").read_text())
    assert counts["reference_truncated"] == 1 and counts["reference_captions"] == 3


@pytest.mark.parametrize(
    ("index", "message"),
    [
        ({"kind": "annoy"}, "index.kind: unknown index kind 'annoy'; choose one of auto, exact, hnsw, ivf_sq8, ivf_pq"),
        ({"candidates": 0}, "index.candidates: expected >= 1, got 0"),
        ({"ivf_nlist": "many"}, "index.ivf_nlist: expected a positive integer, or 'auto', got 'many'"),
    ],
)
def test_index_params_are_checked_before_any_embedding_is_read(tmp_path, index, message):
    params = default_params()
    params["index"].update(index)
    line = one_error_line(run_stage(tmp_path, "index", params), "index")
    assert message in line
