"""The BLIP/CLIP wrappers on the toy models: the same from_pretrained path as hub ids, loaded safely."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from capsearch.data.images import ImageSource
from capsearch.demo.scenes import write_flickr8k_layout
from capsearch.models.blip import BlipCaptioner, DecodingSettings
from capsearch.models.clip import ClipEmbedder
from capsearch.models.runtime import ModelLoadError, resolve_device, resolve_precision


def test_toy_models_really_learned(toy_models):
    report = json.loads((toy_models / "toy-report.json").read_text())
    assert report["clip_text_to_image_r1"] > 10 * report["clip_chance_r1"]
    assert report["blip_colour_and_shape_accuracy"] > 0.5


def test_toy_clip_uses_clips_real_bpe_vocabulary(toy_models):
    embedder = ClipEmbedder(str(toy_models / "toy-clip"), precision="fp32", device="cpu")
    ids = embedder.processor.tokenizer("a red circle")["input_ids"]
    assert ids == [49406, 320, 736, 7117, 49407]  # the ids openai/clip-vit-base-patch32 gives
    assert embedder.context_length == 77


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    paths = write_flickr8k_layout(tmp_path_factory.mktemp("imgs"), 16, seed=5)
    source = ImageSource(paths["images"])
    return source, source.ids()


def test_embeddings_are_normalised_and_worker_processes_agree(toy_models, images):
    source, ids = images
    embedder = ClipEmbedder(str(toy_models / "toy-clip"), precision="fp32", device="cpu")
    serial = embedder.embed_images(source, ids, batch_size=5, num_workers=0)
    parallel = embedder.embed_images(source, ids, batch_size=4, num_workers=2)
    assert serial.shape == (16, 64) and serial.dtype == np.float32
    assert np.allclose(np.linalg.norm(serial, axis=1), 1.0, atol=1e-5)
    assert np.allclose(serial, parallel, atol=1e-5)  # same order, same values across batchings and workers


def test_long_captions_are_truncated_and_counted(toy_models):
    embedder = ClipEmbedder(str(toy_models / "toy-clip"), precision="fp32", device="cpu")
    long = "a red circle " * 60
    out = embedder.embed_texts(["a red circle", long, "a blue square"], batch_size=2)
    assert out.truncated == 1 and out.vectors.shape == (3, 64)
    assert np.allclose(np.linalg.norm(out.vectors, axis=1), 1.0, atol=1e-5)


def test_captioner_is_batch_invariant(toy_models, images):
    source, ids = images
    captioner = BlipCaptioner(str(toy_models / "toy-blip"), precision="fp32", device="cpu")
    settings = DecodingSettings(num_beams=1, max_new_tokens=15, min_new_tokens=2)
    one = captioner.caption_images(source, ids[:6], settings, batch_size=1)
    batched = captioner.caption_images(source, ids[:6], settings, batch_size=6)
    assert one == batched and all(len(c.split()) >= 2 for c in one)
    with pytest.raises(ValueError, match=r"caption\.num_beams"):
        captioner.caption_images(source, ids[:1], DecodingSettings(num_beams=0))


def test_pickle_only_model_folder_is_refused(toy_models, tmp_path):
    folder = tmp_path / "pickled"
    shutil.copytree(toy_models / "toy-clip", folder)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ModelLoadError, match=r"clip\.model: .*only a pickle checkpoint"):
        ClipEmbedder(str(folder), precision="fp32", device="cpu", param="clip.model")


def test_remote_code_in_a_model_folder_is_never_run(toy_models, tmp_path, monkeypatch):
    folder = tmp_path / "with-remote-code"
    shutil.copytree(toy_models / "toy-clip", folder)
    marker = tmp_path / "remote-code-ran"
    (folder / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel", "AutoConfig": "modeling_evil.EvilConfig"}
    (folder / "config.json").write_text(json.dumps(config))
    monkeypatch.syspath_prepend(str(folder))
    embedder = ClipEmbedder(str(folder), precision="fp32", device="cpu")
    assert type(embedder.model).__name__ == "CLIPModel" and not marker.exists()

    from transformers import CLIPModel

    from capsearch.models import runtime

    seen = {}
    monkeypatch.setattr(CLIPModel, "from_pretrained", lambda *args, **kwargs: seen.update(kwargs))
    runtime.load_pretrained(CLIPModel, str(folder), "main", "clip.model")
    assert seen["use_safetensors"] is True and not seen.get("trust_remote_code")


def test_missing_local_folder_names_the_param(tmp_path):
    with pytest.raises(ModelLoadError, match=r"caption\.model: local model folder .* does not exist"):
        BlipCaptioner(str(tmp_path / "nope"), device="cpu")


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
