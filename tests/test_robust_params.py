"""Bad params: one line naming the param, given at stage start before any model is loaded or image read."""

import subprocess

import pytest
import torch
from stage_runner import run_stage

MISSING_MODEL = "/nonexistent/capsearch-model"  # loading it would fail: a param error must come first


def one_error_line(result: subprocess.CompletedProcess, stage: str) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith(f"[{stage}] error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def caption_workspace(tmp_path):
    (tmp_path / "data" / "subset").mkdir(parents=True)
    (tmp_path / "data" / "subset" / "images.csv").write_text("image_id,width,height\n")
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
