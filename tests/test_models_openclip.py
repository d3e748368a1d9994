"""models.openclip and models.registry: open_clip checkpoints as a family of clip.model. Embeddings equal open_clip's
own code's, loading by hub id and pinned commit (then offline), a pickle only through the weights-only loader, and
the names, tags and remote code refused in one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_hub import FakeHub, folder_files
from PIL import Image

from capsearch.data.images import ImageSource
from capsearch.demo.scenes import generate_scenes
from capsearch.job import ImageTask
from capsearch.models import ModelLoadError
from capsearch.models.base import PIXEL_TOLERANCE
from capsearch.models.open_clip_names import names_open_clip
from capsearch.models.openclip import OpenClipEncoder, transform_difference
from capsearch.models.registry import dual_encoder_class, load_dual_encoder

SIZES = [(131, 97), (97, 140), (125, 87), (64, 64), (201, 120), (88, 133)]  # odd margins: half-pixel centre crops


@pytest.fixture(scope="module")
def encoder(toy_open_clip: Path) -> OpenClipEncoder:
    return load_dual_encoder(str(toy_open_clip / "toy-open-clip"), None, "fp32", "cpu")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> tuple[ImageSource, list[str], list[str]]:
    """Unseen scenes as PNG files of several sizes, and the first caption of each."""
    folder = tmp_path_factory.mktemp("scenes")
    rows = generate_scenes(24, seed=31)
    for i, (_, image, _) in enumerate(rows):
        image.resize(SIZES[i % len(SIZES)], Image.Resampling.BICUBIC).save(folder / f"{i:02d}.png")
    return ImageSource(folder), sorted(p.name for p in folder.iterdir()), [captions[0] for _, _, captions in rows]


@pytest.mark.parametrize("toy", ["toy-open-clip", "toy-biomedclip"])
def test_embeddings_equal_open_clips_own_code_and_the_toy_learned_the_scenes(toy, toy_open_clip, scenes):
    import open_clip
    from open_clip.tokenizer import HFTokenizer

    source, ids, texts = scenes
    folder = toy_open_clip / toy
    model, _, preprocess = open_clip.create_model_and_transforms("local-dir:" + str(folder))
    text_cfg = json.loads((folder / "open_clip_config.json").read_text())["model_cfg"]["text_cfg"]
    if "hf_tokenizer_name" in text_cfg:  # BiomedCLIP's shape: the text tower's own tokenizer, as open_clip loads it
        tokenizer = HFTokenizer(text_cfg["hf_tokenizer_name"], context_length=32)
    else:
        tokenizer = open_clip.get_tokenizer("local-dir:" + str(folder))
    model.eval()
    with torch.no_grad():
        pixels = torch.stack([preprocess(Image.open(source.location / image_id)) for image_id in ids])
        images = model.encode_image(pixels, normalize=True).numpy()
        captions = model.encode_text(tokenizer(texts), normalize=True).numpy()
    encoder = load_dual_encoder(str(folder), None, "fp32", "cpu")
    ours = encoder.embed_images(source, ids, batch_size=8, num_workers=2)  # decoded in worker processes
    assert np.abs(ours - images).max() < 1e-5  # float rounding only (measured here: 1.2e-7)
    assert np.abs(encoder.embed_texts(texts, batch_size=8).vectors - captions).max() < 1e-5
    similarity = encoder.embed_texts(texts).vectors @ ours.T
    ranks = (similarity > similarity[np.arange(len(ids)), np.arange(len(ids))][:, None]).sum(axis=1) + 1
    assert np.median(ranks) <= 5  # learned: the right scene ranks near the top (chance: 12.5 of 24)
    assert encoder.context_length == 32 and encoder.dim == 64 and encoder.family.model_type == "open_clip"


def test_the_probe_check_catches_a_centre_crop_that_rounds_the_other_way(encoder):
    from open_clip.transform import image_transform

    transform = image_transform(64, is_train=False, mean=encoder.pixels.mean, std=encoder.pixels.std)
    assert encoder.pixels.centre == "round" and transform_difference(encoder.pixels, transform) <= PIXEL_TOLERANCE
    assert transform_difference(replace(encoder.pixels, centre="floor"), transform) > 0.1  # transformers' rule


def test_the_registry_tells_the_families_apart_by_name(toy_open_clip, toy_models):
    assert names_open_clip("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K")
    assert names_open_clip("ViT-B-32/laion2b_s34b_b79k") and names_open_clip("ViT-Q-99/laion2b")
    assert not names_open_clip("openai/clip-vit-base-patch32") and not names_open_clip("google/siglip-base-patch16-224")
    assert not names_open_clip("evanarlian/vit-base") and not names_open_clip("timm/ViT-B-16-SigLIP")  # Hub orgs
    assert dual_encoder_class(str(toy_open_clip / "toy-open-clip")) is OpenClipEncoder
    assert dual_encoder_class(str(toy_models / "toy-clip")).__name__ == "DualEncoder"


@pytest.mark.parametrize(
    ("model_id", "message"),
    [
        ("ViT-Q-99/laion2b", r"^clip\.model: 'ViT-Q-99' is not an open_clip architecture \(close: .*ViT-"),
        ("ViT-B-32/no_such_tag", r"^clip\.model: open_clip has no pretrained tag 'no_such_tag' for ViT-B-32; its "
         r"tags: .*laion2b_s34b_b79k"),
        ("ViT-B-32/", r"^clip\.model: 'ViT-B-32/' names no pretrained tag"),
    ],
)  # fmt: skip
def test_an_unknown_architecture_or_tag_is_refused_in_one_line(model_id, message):
    with pytest.raises(ModelLoadError, match=message) as refused:
        load_dual_encoder(model_id, None, "fp32", "cpu")
    assert "\n" not in str(refused.value)


HUB_LOADER = """
import json, sys
from capsearch.models.registry import load_dual_encoder
model = load_dual_encoder(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None, "fp32", "cpu")
print(json.dumps({"commit": model.source.commit, "family": model.family.model_type,
                  "text": model.embed_texts(["a red circle"]).vectors[0].tolist()}))
"""


def _load_in_a_process(env: dict[str, str], *args: str, **extra: str) -> dict:
    """What :data:`HUB_LOADER` prints for ``args``, run with ``env`` and ``extra``."""
    result = subprocess.run([sys.executable, "-c", HUB_LOADER, *args], capture_output=True, text=True,
                            env={**env, **extra}, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_loads_by_hub_id_and_commit_through_the_hub_then_offline(encoder, toy_open_clip, tmp_path):
    env = {**os.environ, "HF_HOME": str(tmp_path), "HF_HUB_DISABLE_TELEMETRY": "1"}
    env.pop("HF_HUB_OFFLINE", None)

    def load(*args: str, **extra: str) -> dict:
        return _load_in_a_process(env, *args, **extra)

    with FakeHub() as hub:
        commit = hub.repo("laion/toy-open-clip").commit(folder_files(toy_open_clip / "toy-open-clip"), "main")
        online = load("hf-hub:laion/toy-open-clip", HF_ENDPOINT=hub.endpoint)
    assert online["commit"] == commit and online["family"] == "open_clip"
    assert np.allclose(online["text"], encoder.embed_texts(["a red circle"]).vectors[0], atol=1e-6)
    offline = load("hf-hub:laion/toy-open-clip", commit, HF_HUB_OFFLINE="1")  # the hub is gone: the pinned commit
    assert offline == online


def test_a_text_tower_named_by_hub_id_loads_through_the_hub_then_offline(toy_open_clip, tmp_path):
    env = {**os.environ, "HF_HOME": str(tmp_path), "HF_HUB_DISABLE_TELEMETRY": "1"}
    env.pop("HF_HUB_OFFLINE", None)
    files = folder_files(toy_open_clip / "toy-biomedclip")
    config = json.loads(files["open_clip_config.json"])
    config["model_cfg"]["text_cfg"].update(
        hf_model_name="toy-org/toy-pubmedbert", hf_tokenizer_name="toy-org/toy-pubmedbert"
    )
    files["open_clip_config.json"] = json.dumps(config).encode()  # as BiomedCLIP's names PubMedBERT's repo
    local = load_dual_encoder(str(toy_open_clip / "toy-biomedclip"), None, "fp32", "cpu")
    with FakeHub() as hub:
        commit = hub.repo("toy-org/toy-biomedclip").commit(files, "main")
        hub.repo("toy-org/toy-pubmedbert").commit(folder_files(toy_open_clip / "toy-pubmedbert"), "main")
        online = _load_in_a_process(env, "hf-hub:toy-org/toy-biomedclip", HF_ENDPOINT=hub.endpoint)
    assert online["commit"] == commit and online["family"] == "open_clip"
    assert np.allclose(online["text"], local.embed_texts(["a red circle"]).vectors[0], atol=1e-6)
    assert _load_in_a_process(env, "hf-hub:toy-org/toy-biomedclip", commit, HF_HUB_OFFLINE="1") == online


def test_a_pickle_only_checkpoint_loads_through_the_weights_only_loader_and_says_so(encoder, toy_open_clip, tmp_path):
    from safetensors.torch import load_file

    folder = tmp_path / "pickled"
    shutil.copytree(toy_open_clip / "toy-open-clip", folder)
    weights = load_file(folder / "open_clip_model.safetensors")
    (folder / "open_clip_model.safetensors").unlink()
    torch.save(weights, folder / "open_clip_pytorch_model.bin")
    pickled = load_dual_encoder(str(folder), None, "fp32", "cpu")
    assert np.array_equal(pickled.embed_texts(["a red circle"]).vectors, encoder.embed_texts(["a red circle"]).vectors)
    task = ImageTask(OpenClipEncoder, str(folder), None, "fp32", "cpu")
    assert task.load_note == "open_clip_pytorch_model.bin: a pickle, read with torch's weights-only loader"
    assert ImageTask(OpenClipEncoder, str(toy_open_clip / "toy-open-clip"), None, "fp32", "cpu").load_note == ""

    marker = tmp_path / "pickle-code-ran"
    torch.save({**weights, "payload": _Payload(str(marker))}, folder / "open_clip_pytorch_model.bin")
    with pytest.raises(ModelLoadError, match=r"^clip\.model: open_clip could not build .*Weights only load failed"):
        load_dual_encoder(str(folder), None, "fp32", "cpu")
    assert not marker.exists()


class _Payload:
    """A pickle that runs code when loaded by the unsafe loader (it writes ``marker``)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "ran"))


def test_a_text_tower_needing_remote_code_is_refused_and_never_run(toy_open_clip, tmp_path):
    tower = tmp_path / "custom-text-tower"
    tower.mkdir()
    marker = tmp_path / "remote-code-ran"
    (tower / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    (tower / "configuration_evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    (tower / "config.json").write_text(json.dumps({
        "model_type": "evil-bert", "auto_map": {"AutoConfig": "configuration_evil.EvilConfig",
                                                "AutoModel": "modeling_evil.EvilModel"},
    }))  # fmt: skip
    folder = tmp_path / "biomedclip-like"
    folder.mkdir()
    config = json.loads((toy_open_clip / "toy-open-clip" / "open_clip_config.json").read_text())
    config["model_cfg"]["text_cfg"] = {
        "hf_model_name": str(tower), "hf_tokenizer_name": str(tower), "hf_proj_type": "linear",
        "hf_pooler_type": "cls_pooler", "context_length": 32,
    }  # fmt: skip
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    shutil.copy(toy_open_clip / "toy-open-clip" / "open_clip_model.safetensors", folder)
    with pytest.raises(ModelLoadError, match=r"^clip\.model: the model needs its own code .*never runs remote code"):
        load_dual_encoder(str(folder), None, "fp32", "cpu")  # refused from the tower's config.json: never asked
    assert not marker.exists()
