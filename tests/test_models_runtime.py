"""models.runtime: safe loading (safetensors only, no remote code), clear load errors, device and precision,
and hub revisions resolved to one commit (on a fake hub over loopback)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from fake_hub import FakeHub, folder_files
from stage_runner import run_stage

from capsearch.models.captioner import Captioner
from capsearch.models.embedder import DualEncoder
from capsearch.models.registry import load_dual_encoder
from capsearch.models.runtime import ModelLoadError, resolve_device, resolve_precision


def test_pickle_only_model_folder_is_refused(toy_models, tmp_path):
    folder = tmp_path / "pickled"
    shutil.copytree(toy_models / "toy-clip", folder)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ModelLoadError, match=r"clip\.model: .*only a pickle checkpoint"):
        DualEncoder(str(folder), precision="fp32", device="cpu", param="clip.model")


def test_an_open_clip_checkpoint_is_no_transformers_model_and_its_bad_weights_fail_in_one_line(tmp_path):
    folder = tmp_path / "BiomedCLIP-like"  # open_clip's layout: its own config and weights, no config.json
    folder.mkdir()
    (folder / "open_clip_config.json").write_text('{"model_cfg": {"embed_dim": 512}}')
    (folder / "open_clip_model.safetensors").write_bytes(b"not loaded")
    with pytest.raises(
        ModelLoadError, match=r"^caption\.model: .* is an open_clip checkpoint .* which clip\.model loads"
    ):
        Captioner(str(folder), device="cpu")
    with pytest.raises(ModelLoadError, match=r"^clip\.model: open_clip could not build") as refused:
        load_dual_encoder(str(folder), None, "fp32", "cpu")  # the open_clip family's loader: the file is no safetensors
    assert "\n" not in str(refused.value)


def test_remote_code_in_a_model_folder_is_never_run(toy_models, tmp_path, monkeypatch):
    folder = tmp_path / "with-remote-code"
    shutil.copytree(toy_models / "toy-clip", folder)
    marker = tmp_path / "remote-code-ran"
    (folder / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel", "AutoConfig": "modeling_evil.EvilConfig"}
    (folder / "config.json").write_text(json.dumps(config))
    monkeypatch.syspath_prepend(str(folder))
    with pytest.raises(ModelLoadError, match=r"^clip\.model: the model needs its own code .*never runs remote code"):
        DualEncoder(str(folder), precision="fp32", device="cpu")  # refused from config.json, before any loading
    assert not marker.exists()

    from transformers import CLIPModel

    from capsearch.models import runtime

    seen = {}
    monkeypatch.setattr(CLIPModel, "from_pretrained", lambda *args, **kwargs: seen.update(kwargs))
    runtime.load_pretrained(CLIPModel, str(folder), "main", "clip.model")
    assert seen["use_safetensors"] is True and not seen.get("trust_remote_code")


def test_missing_local_folder_names_the_param(tmp_path):
    with pytest.raises(ModelLoadError, match=r"caption\.model: local model folder .* does not exist"):
        Captioner(str(tmp_path / "nope"), device="cpu")


def test_unreachable_hub_id_gives_one_clear_line():
    code = (
        "from transformers import CLIPModel\n"
        "from capsearch.models.runtime import load_pretrained\n"
        "load_pretrained(CLIPModel, 'capsearch-test/no-such-model', 'main', 'clip.model')\n"
    )
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode != 0
    assert "ModelLoadError: clip.model: could not load 'capsearch-test/no-such-model'" in result.stderr
    assert "save_pretrained" in result.stderr


def test_a_hub_that_cannot_be_reached_fails_in_one_line_within_seconds_naming_hf_hub_offline(tmp_path):
    code = (
        "from capsearch.models.captioner import Captioner\n"
        "Captioner('Salesforce/blip-image-captioning-base', 'main', 'fp32', 'cpu')\n"
    )
    # nothing listens on port 9 here: without the probe huggingface_hub retries five times, 25 s and ten lines
    env = {"PATH": "/usr/bin:/bin", "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf")}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    took = time.monotonic() - started
    assert result.returncode != 0 and took < 15, took
    assert "Retry" not in result.stderr, result.stderr[-2000:]
    assert "could not load 'Salesforce/blip-image-captioning-base'" in result.stderr
    assert "HF_HUB_OFFLINE" in result.stderr


def test_device_and_precision_params():
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match=r"runtime\.device: unknown device 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="'cuda' requested but torch sees no CUDA GPU"):
            resolve_device("cuda")
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) is torch.float32
    assert resolve_precision("auto", cpu) in (torch.float32, torch.bfloat16)
    with pytest.raises(ValueError, match=r"clip\.precision: unknown precision 'fp8'"):
        resolve_precision("fp8", cpu, "clip.precision")


def test_bf16_is_native_only_with_the_cpu_flags_for_it():
    from capsearch.models.runtime import cpu_supports_bf16

    avx512_only = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512bw\n"
    assert not cpu_supports_bf16(avx512_only)  # oneDNN would emulate bf16 here: slower than fp32
    assert cpu_supports_bf16(avx512_only.replace("avx512bw", "avx512bw avx512_bf16"))
    assert cpu_supports_bf16("flags\t\t: fpu avx2 amx_tile amx_bf16 amx_int8\n")
    assert cpu_supports_bf16("Features\t: fp asimd bf16 i8mm\n")  # Arm
    assert not cpu_supports_bf16("flags\t\t: fpu avx2 xavx512_bf16x\n")  # whole flags only


CLIP = "capsearch-toy/clip"
BIN_ONLY = "capsearch-toy/clip-bin-only"
PR_REF = "refs/pr/66"

# Runs in a fresh interpreter (huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE when imported): loads each
# "repo@revision" given, prints one JSON line per load: the commit, the fingerprint and one embedding, or the error.
LOADER = """
import json, sys
import numpy as np
from capsearch.cache import ResultCache
from capsearch.data.images import ImageSource
from capsearch.models.embedder import DualEncoder
from capsearch.models.registry import load_dual_encoder
from capsearch.models.runtime import ModelLoadError
images, cache_dir = sys.argv[1], sys.argv[2]
for spec in sys.argv[3:]:
    repo, revision = spec.split("@", 1)
    try:
        model = DualEncoder(repo, revision, "fp32", "cpu")
    except ModelLoadError as exc:
        print(json.dumps({"spec": spec, "error": str(exc)}))
        continue
    names = sorted(p.name for p in __import__("pathlib").Path(images).iterdir())
    vectors = model.embed_images(ImageSource(images), names, 4, cache=ResultCache(cache_dir))
    print(json.dumps({"spec": spec, "commit": model.source.commit, "fingerprint": model.fingerprint(),
                      "text": model.embed_texts(["a red circle"]).vectors[0].tolist(),
                      "image": vectors[0].tolist(), "computed": model.last_run.computed}))
"""


@pytest.fixture(scope="module")
def hub(toy_models):
    with FakeHub() as server:
        repo = server.repo(CLIP)
        early = repo.commit(folder_files(toy_models / "toy-clip-early"), "main")
        latest = repo.commit(folder_files(toy_models / "toy-clip"), "main", parent=early)
        bin_only = server.repo(BIN_ONLY)
        pickled = {k: v for k, v in folder_files(toy_models / "toy-clip").items() if k != "model.safetensors"}
        pickled["pytorch_model.bin"] = b"a pickle capsearch must never load"
        main = bin_only.commit(pickled, "main")
        converted = bin_only.commit(folder_files(toy_models / "toy-clip"), PR_REF, parent=main)
        server.commits = {"early": early, "latest": latest, "bin_main": main, "converted": converted}
        yield server


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from PIL import Image

    folder = tmp_path_factory.mktemp("hub-images")
    for i, colour in enumerate([(220, 30, 30), (30, 200, 40), (40, 40, 220)]):
        Image.new("RGB", (64, 64), colour).save(folder / f"{i}.png")
    return folder


def load(hub: FakeHub, home: Path, images: Path, specs: list[str], offline: bool = False) -> dict[str, dict]:
    env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HOME": str(home), "HF_HUB_DISABLE_TELEMETRY": "1"}
    env.pop("HF_HUB_OFFLINE", None)
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    cache = home / "results"
    result = subprocess.run(
        [sys.executable, "-c", LOADER, str(images), str(cache), *specs], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return {row["spec"]: row for row in rows}


@pytest.fixture(scope="module")
def online(hub, images, tmp_path_factory):
    """Every kind of revision loaded once online, in one interpreter, into a fresh HF cache."""
    home = tmp_path_factory.mktemp("hf-home")
    c = hub.commits
    specs = [
        f"{CLIP}@main",
        f"{CLIP}@{c['latest']}",
        f"{CLIP}@{c['early']}",
        f"{BIN_ONLY}@{c['converted']}",
        f"{BIN_ONLY}@{PR_REF}",
        f"{BIN_ONLY}@main",
        f"{CLIP}@no-such-branch",
        "capsearch-toy/no-such-repo@main",
    ]
    return home, load(hub, home, images, specs)


def test_main_resolves_to_its_commit_and_the_fingerprint_names_it(hub, online):
    _, rows = online
    main = rows[f"{CLIP}@main"]
    assert main["commit"] == hub.commits["latest"]
    assert main["fingerprint"] == f"{CLIP}@{hub.commits['latest']}"


def test_a_pinned_older_commit_loads_its_own_weights(hub, online):
    _, rows = online
    early, main = rows[f"{CLIP}@{hub.commits['early']}"], rows[f"{CLIP}@main"]
    assert early["commit"] == hub.commits["early"] and early["text"] != main["text"]


def test_the_conversion_pr_commit_and_ref_load_the_safetensors_weights(hub, online):
    _, rows = online
    by_commit, by_ref = rows[f"{BIN_ONLY}@{hub.commits['converted']}"], rows[f"{BIN_ONLY}@{PR_REF}"]
    assert by_commit["commit"] == by_ref["commit"] == hub.commits["converted"]
    assert by_commit["text"] == rows[f"{CLIP}@main"]["text"]  # the same toy weights


def test_main_without_safetensors_is_refused_naming_the_commit_to_pin(hub, online):
    _, rows = online
    error = rows[f"{BIN_ONLY}@main"]["error"]
    assert "\n" not in error
    assert error.startswith(f"clip.model: '{BIN_ONLY}' at revision 'main' (commit {hub.commits['bin_main']})")
    assert f"{PR_REF} (commit {hub.commits['converted']}): pin that commit, in clip.revision" in error
    assert not any("pytorch_model.bin" in request for request in hub.requests)  # never even downloaded


def test_unknown_revision_and_repo_get_one_clear_line(online):
    _, rows = online
    revision = rows[f"{CLIP}@no-such-branch"]["error"]
    assert revision.startswith(f"clip.model: could not load '{CLIP}' (revision 'no-such-branch'): the repo has no")
    assert "Set clip.revision to one it has" in revision and "\n" not in revision
    assert "no such repo on the Hugging Face Hub" in rows["capsearch-toy/no-such-repo@main"]["error"]


def test_the_result_cache_is_keyed_by_the_weights_commit(hub, online):
    _, rows = online
    # main and its commit are one set of weights: the second load found all three images in the cache
    assert rows[f"{CLIP}@main"]["computed"] == 3 and rows[f"{CLIP}@{hub.commits['latest']}"]["computed"] == 0
    assert rows[f"{CLIP}@{hub.commits['early']}"]["computed"] == 3  # other weights: nothing reused
    assert rows[f"{BIN_ONLY}@{PR_REF}"]["computed"] == 0  # same repo and commit as the line before it


def test_an_offline_rerun_loads_from_the_cache_without_asking_the_hub(hub, online, images):
    home, rows = online
    asked = len(hub.requests)
    specs = [f"{CLIP}@main", f"{CLIP}@{hub.commits['early']}", f"{BIN_ONLY}@{hub.commits['converted']}"]
    again = load(hub, home, images, [*specs, f"{BIN_ONLY}@main"], offline=True)
    assert len(hub.requests) == asked
    assert again[f"{CLIP}@main"]["text"] == rows[f"{CLIP}@main"]["text"]
    assert again[f"{CLIP}@main"]["fingerprint"] == rows[f"{CLIP}@main"]["fingerprint"]
    assert again[f"{CLIP}@{hub.commits['early']}"]["text"] == rows[f"{CLIP}@{hub.commits['early']}"]["text"]
    assert again[f"{BIN_ONLY}@{hub.commits['converted']}"]["computed"] == 0
    assert "HF_HUB_OFFLINE=1" in again[f"{BIN_ONLY}@main"]["error"]


def test_offline_with_an_unpinned_revision_names_the_cached_commit_to_pin(hub, images, tmp_path):
    early = hub.commits["early"]
    assert load(hub, tmp_path, images, [f"{CLIP}@{early}"])[f"{CLIP}@{early}"]["commit"] == early
    error = load(hub, tmp_path, images, [f"{CLIP}@main"], offline=True)[f"{CLIP}@main"]["error"]
    assert "\n" not in error and error.startswith(f"clip.model: could not load '{CLIP}' (revision 'main')")
    assert f"its cache has no revision 'main' of it, but it holds commit {early}" in error
    assert error.endswith(f"Pin clip.revision: {early} to load that one offline.")


def test_the_embed_images_stage_names_the_revision_param(hub, tmp_path):
    (tmp_path / "data/subset").mkdir(parents=True)
    (tmp_path / "data/subset/images.csv").write_text("image_id,width,height,shard\n")
    params = {"clip": {"model": CLIP, "revision": "v9", "precision": "fp32"}, "runtime": {"device": "cpu"}}
    result = run_stage(tmp_path, "embed_images", params, HF_ENDPOINT=hub.endpoint, HF_HOME=str(tmp_path / "hf"))
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"[embed_images] error: clip.model: could not load '{CLIP}' (revision 'v9')")
    assert "Set clip.revision to one it has" in lines[0]
