"""models.families: SigLIP and GIT through the Auto classes with their own preprocessing, prompts, and the models
capsearch refuses (from config.json alone, before weights or images)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from fake_hub import FakeHub, folder_files
from transformers import SiglipProcessor

from capsearch.demo.toy_models import names_colour_and_shape
from capsearch.job import ImageTask
from capsearch.models import ModelLoadError
from capsearch.models.captioner import Captioner, DecodingSettings
from capsearch.models.embedder import DualEncoder
from capsearch.models.families import captioner_family, embedder_family


@pytest.fixture(scope="module")
def siglip(toy_families):
    return DualEncoder(str(toy_families / "toy-siglip"), precision="fp32", device="cpu")


def test_siglip_pixels_equal_its_processor_resize_no_crop_mean_half(siglip, toy_families, unseen):
    source, ids, _ = unseen
    assert siglip.family.model_type == "siglip"
    pipeline = siglip.pixels
    assert (pipeline.height, pipeline.width, pipeline.crop_height, pipeline.shortest_edge) == (64, 64, None, None)
    assert pipeline.mean == pipeline.std == (0.5, 0.5, 0.5)
    processor = SiglipProcessor.from_pretrained(toy_families / "toy-siglip", backend="pil")
    for image_id in ids[:9]:  # nine different sizes
        image = source.open_rgb(image_id)
        expected = processor(images=image, return_tensors="pt")["pixel_values"][0]
        ours = pipeline.normalise(siglip.preprocess(image)[None], torch.float32)[0]
        assert ours.shape == expected.shape and torch.allclose(ours, expected, atol=1e-5)


def test_siglip_text_is_lower_cased_padded_to_64_without_a_mask(siglip, toy_families):
    tokens = siglip.tokenize(["A Red CIRCLE", "a small blue square on a black background"])
    assert set(tokens) == {"input_ids"} and tokens["input_ids"].shape == (2, 64)
    processor = SiglipProcessor.from_pretrained(toy_families / "toy-siglip", backend="pil")
    expected = processor(text=["a red circle"], padding="max_length", max_length=64, return_tensors="pt")
    assert torch.equal(tokens["input_ids"][0], expected["input_ids"][0])
    ours = siglip.embed_texts(["a red circle"]).vectors[0]
    with torch.no_grad():  # what padding to the longest text (CLIP's way) would give instead: another vector
        short = processor.tokenizer(["a red circle"], return_tensors="pt")["input_ids"]
        wrong = torch.nn.functional.normalize(siglip.model.get_text_features(input_ids=short).pooler_output, dim=-1)
    assert float(ours @ wrong[0].numpy()) < 0.99
    assert siglip.context_length == 64 and siglip.dim == 96


def test_toy_siglip_retrieves_unseen_scenes_by_cosine(siglip, unseen):
    source, ids, scenes = unseen
    images = siglip.embed_images(source, ids, batch_size=16)
    texts = siglip.embed_texts([captions[0] for _, _, captions in scenes]).vectors
    ranks = (-(texts @ images.T)).argsort(axis=1)
    top5 = np.mean([i in ranks[i, :5] for i in range(len(ids))])
    assert top5 >= 0.3, top5  # chance: 5/60


def test_git_captions_unseen_scenes_and_a_prompt_is_continued_then_removed(toy_families, unseen):
    source, ids, scenes = unseen
    git = Captioner(str(toy_families / "toy-git"), precision="fp32", device="cpu")
    assert git.family.model_type == "git"
    greedy = DecodingSettings(num_beams=1, max_new_tokens=15, min_new_tokens=2)
    captions = git.caption_images(source, ids[:40], greedy, batch_size=8)
    assert git.caption_images(source, ids[:8], greedy, batch_size=1) == captions[:8]
    right = sum(names_colour_and_shape(c, s.colour, s.shape) for c, (s, _, _) in zip(captions, scenes, strict=False))
    assert right >= 8, captions  # colour and shape by chance: about 1 in 15
    asked = git.asked("a")
    ids_, mask = asked.inputs["input_ids"], asked.inputs["attention_mask"]
    assert int(ids_[0, 0]) == git.tokenizer.cls_token_id and int(ids_[0, -1]) != git.tokenizer.sep_token_id
    assert asked.shown == "a" and mask.shape == ids_.shape
    prompted = git.caption_images(source, ids[:8], DecodingSettings(1, 14, 1, prompt="a"), batch_size=8)
    for plain, continued in zip(captions[:8], prompted, strict=True):
        if plain.startswith("a "):  # greedy: a prompt equal to the first word changes nothing after it
            assert continued == plain[2:]


def test_blip_prompt_is_removed_from_its_captions(toy_models, unseen):
    source, ids, _ = unseen
    blip = Captioner(str(toy_models / "toy-blip"), precision="fp32", device="cpu")
    plain = blip.caption_images(source, ids[:6], DecodingSettings(1, 15, 2), batch_size=6)
    prompted = blip.caption_images(source, ids[:6], DecodingSettings(1, 14, 1, prompt="a"), batch_size=6)
    assert any(p.startswith("a ") for p in plain)
    for p, q in zip(plain, prompted, strict=True):
        if p.startswith("a "):
            assert q == p[2:]


def _config(tmp_path, name, **config):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize(
    ("config", "finder", "message"),
    [
        ({"model_type": "vit", "architectures": ["ViTForImageClassification"]}, embedder_family, "image classifier"),
        ({"model_type": "clip", "auto_map": {"AutoModel": "x.MyModel"}}, embedder_family, "remote code"),
        ({"model_type": "my-own-vlm"}, captioner_family, "unknown to transformers"),
        ({"model_type": "siglip2", "architectures": ["Siglip2Model"]}, embedder_family, "NaFlex"),
        ({"model_type": "clip", "architectures": ["CLIPModel"]}, captioner_family, "set it as clip.model"),
        ({"model_type": "blip", "architectures": ["BlipForConditionalGeneration"]}, embedder_family, "caption.model"),
        ({"model_type": "fuyu", "architectures": ["FuyuForCausalLM"]}, captioner_family, "does not"),
    ],
    ids=["classifier", "remote-code", "unknown", "naflex", "encoder-as-captioner", "captioner-as-encoder", "chat"],
)
def test_models_that_cannot_work_are_refused_from_their_config(config, finder, message):
    param = "clip.model" if finder is embedder_family else "caption.model"
    with pytest.raises(ModelLoadError, match=message) as error:
        finder(config, param)
    assert str(error.value).startswith(param + ":") and "\n" not in str(error.value)


def test_refused_before_any_weights_or_images_are_read(tmp_path, toy_models):
    classifier = _config(tmp_path, "classifier", model_type="vit", architectures=["ViTForImageClassification"])
    task = ImageTask(DualEncoder, str(classifier), "main", "fp32", "cpu")
    with pytest.raises(ModelLoadError, match=r"^clip\.model: .*image classifier"):
        task.identity()  # the stages call it first; the folder has no weights at all
    with pytest.raises(ModelLoadError, match=r"^caption\.model: .*dual encoder"):
        Captioner(str(toy_models / "toy-clip"), device="cpu")
    ved = _config(tmp_path, "ved", model_type="vision-encoder-decoder", architectures=["VisionEncoderDecoderModel"])
    prompted = ImageTask(Captioner, str(ved), "main", "fp32", "cpu", DecodingSettings(prompt="a photo of"))
    with pytest.raises(ModelLoadError, match=r"^caption\.prompt: vision-encoder-decoder captioners take no prompt"):
        prompted.identity()


LOADER = """
import json, sys
from capsearch.models.embedder import DualEncoder
model = DualEncoder(sys.argv[1], "main", "fp32", "cpu")
print(json.dumps({"commit": model.source.commit, "family": model.family.model_type,
                  "text": model.embed_texts(["a red circle"]).vectors[0].tolist()}))
"""


def test_toy_siglip_loads_by_hub_id_from_the_fake_hub(siglip, toy_families, tmp_path):
    with FakeHub() as hub:
        commit = hub.repo("google/siglip-base-patch16-224").commit(folder_files(toy_families / "toy-siglip"), "main")
        env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HOME": str(tmp_path), "HF_HUB_DISABLE_TELEMETRY": "1"}
        env.pop("HF_HUB_OFFLINE", None)
        args = [sys.executable, "-c", LOADER, "google/siglip-base-patch16-224"]
        result = subprocess.run(args, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    row = json.loads(result.stdout.strip().splitlines()[-1])
    assert row["commit"] == commit and row["family"] == "siglip"
    assert np.allclose(row["text"], siglip.embed_texts(["a red circle"]).vectors[0], atol=1e-6)


def test_a_blank_probe_shows_the_pixel_check_catches_a_wrong_pipeline(siglip, toy_families):
    from dataclasses import replace

    from capsearch.models.pixels import processor_difference

    assert processor_difference(siglip.pixels, siglip.image_processor) < 1e-5
    clip_like = replace(siglip.pixels, mean=(0.48145466, 0.4578275, 0.40821073))
    assert processor_difference(clip_like, siglip.image_processor) > 1e-2


def test_loading_a_siglip_on_a_pipe_prints_nothing_but_a_real_config_problem_still_warns(toy_families, tmp_path):
    code = (
        "import sys; from capsearch.models.embedder import DualEncoder\n"
        "e = DualEncoder(sys.argv[1], precision='fp32', device='cpu'); e.embed_texts(['a red circle'])\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "CAPSEARCH_PROGRESS"}
    run = [sys.executable, "-c", code, str(toy_families / "toy-siglip")]
    quiet = subprocess.run(run, capture_output=True, text=True, env=env, check=True)
    assert quiet.stderr == "", quiet.stderr  # no token-id warnings, no weight-loading bar on a pipe
    broken = tmp_path / "siglip"
    broken.mkdir()
    for path in (toy_families / "toy-siglip").iterdir():
        (broken / path.name).write_bytes(path.read_bytes())
    config = json.loads((broken / "config.json").read_text())
    config["text_config"]["eos_token_id"] = 49407  # out of the toy's vocabulary: the model's own problem
    (broken / "config.json").write_text(json.dumps(config))
    warned = subprocess.run([*run[:3], str(broken)], capture_output=True, text=True, env=env, check=True)
    assert "eos_token_id must be `None` or an integer within the vocabulary" in warned.stderr
