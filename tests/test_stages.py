"""Stage scripts run as DVC runs them: clear one-line errors for bad params and no network; atomic writes."""

import shutil
import socket
from pathlib import Path

import pytest
import yaml
from stage_runner import run_stage, write_params

from capsearch.io import atomic_path, write_json

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


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out" / "metrics.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == '{\n  "a": 1\n}\n'
    assert sorted(p.name for p in target.parent.iterdir()) == ["metrics.json"]


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_atomic_outputs_get_the_mode_of_a_normal_file(tmp_path, umask):
    import os

    import numpy as np
    from PIL import Image

    from capsearch.contact_sheet import save_png
    from capsearch.io import save_npy, write_csv

    previous = os.umask(umask)
    try:
        write_json(tmp_path / "m.json", {"a": 1})
        write_csv(tmp_path / "t.csv", ["a"], [[1]])
        save_npy(tmp_path / "v.npy", np.zeros(3))
        save_png(Image.new("RGB", (4, 4)), tmp_path / "p.png")
        (tmp_path / "plain.txt").write_text("x")  # what open() gives, for comparison
    finally:
        os.umask(previous)
    modes = {path.name: path.stat().st_mode & 0o777 for path in tmp_path.iterdir()}
    assert modes == dict.fromkeys(("m.json", "t.csv", "v.npy", "p.png", "plain.txt"), 0o666 & ~umask)


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
