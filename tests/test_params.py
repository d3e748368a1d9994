"""capsearch.params: one typed home for params, its checks naming the param, and the stages and CLI using it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from stage_runner import run_stage, write_params

from capsearch.params import (
    SECTIONS,
    CaptionParams,
    FusionParams,
    ParamError,
    RuntimeParams,
    SubsetParams,
    default_params,
    load_raw,
    read_key,
    read_section,
)

PROJECT = Path(__file__).resolve().parents[1]
MISSING_MODEL = "/nonexistent/capsearch-model"  # loading it would fail: a param error must come first


def test_params_yaml_is_the_typed_defaults():
    assert yaml.safe_load((PROJECT / "params.yaml").read_text(encoding="utf-8")) == default_params()


def test_every_section_of_params_yaml_reads_back():
    raw = load_raw(PROJECT / "params.yaml")
    for cls in SECTIONS.values():
        assert read_section(raw, cls) == cls()


@pytest.mark.parametrize(
    ("section", "values", "message"),
    [
        (
            SubsetParams,
            {"split": "test", "num_images": 5, "seed": "abc"},
            "subset.seed: expected an integer, got 'abc'",
        ),
        (SubsetParams, {"split": "test", "num_images": 2.5, "seed": 0}, "subset.num_images: expected a positive"),
        (SubsetParams, {"split": "test", "num_images": True, "seed": 0}, "subset.num_images: expected a positive"),
        (SubsetParams, {"split": "test", "seed": 0}, "params.yaml: subset.num_images missing"),
        (SubsetParams, {"split": "test", "num_images": 5, "seed": 0, "size": 3}, "subset.size: unknown param"),
        (FusionParams, {"split": "dev", "num_images": 5, "seed": 0, "alphas": [0.5, 1.5]}, "fusion.alphas: every"),
        (FusionParams, {"split": "dev", "num_images": 5, "seed": 0, "alphas": []}, "fusion.alphas: expected a non"),
        (FusionParams, {"split": "dev", "num_images": -3, "seed": 0, "alphas": [0.5]}, "fusion.num_images: expected"),
        (CaptionParams, {**CaptionParams().as_yaml(), "num_beams": "3"}, "caption.num_beams: expected an integer"),
        (RuntimeParams, {"batch_size": {"captions": 4}}, "runtime.batch_size.captions: unknown task"),
        (RuntimeParams, {"num_workers": "many"}, "runtime.num_workers: expected 0 or more, or 'auto', got 'many'"),
    ],
)
def test_bad_values_name_the_param(section, values, message):
    with pytest.raises(ParamError) as error:
        section.from_mapping(values)
    assert str(error.value).startswith(message), str(error.value)


def test_values_are_normalised():
    assert SubsetParams.from_mapping({"split": "all", "num_images": "ALL", "seed": 1}).count is None
    assert FusionParams(alphas=[1, 0]).alphas == (1.0, 0.0)
    assert RuntimeParams(batch_size={"caption": 4}).batch_size == {
        "caption": 4,
        "embed_images": "auto",
        "embed_texts": "auto",
    }
    assert read_section({}, RuntimeParams) == RuntimeParams()  # runtime may be left out entirely
    assert read_key({"subset": {"split": "dev"}}, "subset.split") == "dev"
    with pytest.raises(ParamError, match=r"subset\.split: unknown split 'val'"):
        read_key({"subset": {"split": "val"}}, "subset.split")


def write_typed_params(workspace: Path, **sections) -> None:
    (workspace / "params.yaml").write_text(yaml.safe_dump(default_params(**sections)), encoding="utf-8")


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


def test_capsearch_index_and_caption_honour_the_runtime_params(toy_models, tmp_path):
    from test_cli import capsearch

    from capsearch.demo.scenes import generate_scenes

    photos = tmp_path / "photos"
    photos.mkdir()
    for i, (_, image, _) in enumerate(generate_scenes(3, seed=5)):
        image.save(photos / f"scene {i}.png")
    models = ["--blip-model", str(toy_models / "toy-blip"), "--clip-model", str(toy_models / "toy-clip")]
    project = tmp_path / "project"
    project.mkdir()
    cache_dir = tmp_path / "my-cache"
    write_typed_params(project, runtime=RuntimeParams(device="cpu", num_workers=1, cache_dir=str(cache_dir)))
    indexed = capsearch("index", str(photos), *models, "--project", str(project), cwd=tmp_path)
    assert indexed.returncode == 0, indexed.stderr
    assert (cache_dir / "results.sqlite").exists()  # runtime.cache_dir, not the default cache
    captioned = capsearch("caption", str(photos), models[0], models[1], "--project", str(project), cwd=tmp_path)
    assert captioned.returncode == 0, captioned.stderr
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["runtime"]["num_workers"] = -1
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    for command in (["index", str(photos), *models], ["caption", str(photos), *models[:2]]):
        refused = capsearch(*command, "--project", str(project), cwd=tmp_path)
        assert refused.returncode == 1 and "runtime.num_workers: expected 0 or more" in refused.stderr


# Stage contract: each bad param gives one line naming it, before any image is read or model loaded.


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
    (tmp_path / "data" / "subset" / "images.csv").write_text("image_id,width,height\n")
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
