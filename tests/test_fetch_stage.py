"""The fetch stage run as DVC runs it: no network gives one line saying where to put the zips; placed ones are used."""

import socket
from pathlib import Path

import yaml
from stage_runner import run_stage, write_params

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
