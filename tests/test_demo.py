"""demo: generated scenes in the release layout, toy models that really learned them, the demo's metrics."""

import io
import json
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from capsearch.data.flickr8k import (
    parse_token_file,
)
from capsearch.demo.scenes import write_flickr8k_layout
from capsearch.models.embedder import DualEncoder


def test_generator_is_deterministic_and_release_shaped(tmp_path, generated):
    _, paths = generated
    again = write_flickr8k_layout(tmp_path, 64, seed=3)
    assert again["images"].read_bytes() == paths["images"].read_bytes()
    assert again["text"].read_bytes() == paths["text"].read_bytes()
    with zipfile.ZipFile(paths["images"]) as archive:
        names = archive.namelist()
        assert len(names) == 64 and all(n.startswith("Flicker8k_Dataset/") and n.endswith(".jpg") for n in names)
        sizes = [Image.open(io.BytesIO(archive.read(n))).size for n in names]
        modes = {Image.open(io.BytesIO(archive.read(n))).mode for n in names}
    assert any(w < h for w, h in sizes) and any(w > h for w, h in sizes)
    assert all(min(w, h) >= 300 and max(w, h) <= 560 for w, h in sizes)
    assert modes == {"RGB", "L"}
    root, _ = generated
    parsed = parse_token_file(root / "text" / "Flickr8k.token.txt")
    assert parsed.caption_groups == 64 and parsed.lines == 320
    for captions in parsed.captions.values():
        assert len(set(captions)) == 5
        shapes = {word for c in captions for word in c.lower().split() if word in ("circle", "square", "triangle")}
        assert len(shapes) == 1  # all five describe the one shape drawn


def test_toy_models_really_learned(toy_models):
    report = json.loads((toy_models / "toy-report.json").read_text())
    assert report["clip_text_to_image_r1"] > 10 * report["clip_chance_r1"]
    assert report["blip_colour_and_shape_accuracy"] > 0.5


def test_toy_clip_uses_clips_real_bpe_vocabulary(toy_models):
    embedder = DualEncoder(str(toy_models / "toy-clip"), precision="fp32", device="cpu")
    ids = embedder.tokenizer("a red circle")["input_ids"]
    assert ids == [49406, 320, 736, 7117, 49407]  # the ids openai/clip-vit-base-patch32 gives
    assert embedder.context_length == 77


SNAPSHOT = json.loads((Path(__file__).parent / "data" / "demo_metrics.json").read_text(encoding="utf-8"))


RECALL_POINTS = 12.0  # recall, in percentage points: toy weights differ from one training run to another


RELATIVE = 0.20  # every other number (BLEU-4 of the demo's captions: 67 and 74 from two trainings on one machine)


def test_demo_metrics_match_the_snapshot(demo_run):
    retrieval = json.loads((demo_run / "metrics/retrieval.json").read_text())
    assert retrieval["gallery_images"] == 60 and retrieval["query_captions"] == 300
    for direction, expected in SNAPSHOT["retrieval"].items():
        for key, value in expected.items():
            assert retrieval[direction][key] == pytest.approx(value, abs=RECALL_POINTS), (direction, key)
    quality = json.loads((demo_run / "metrics/caption_quality.json").read_text())
    for key, value in SNAPSHOT["caption_quality"].items():
        assert quality[key] == pytest.approx(value, rel=RELATIVE), key
    expert = json.loads((demo_run / "metrics/human_agreement.json").read_text())["flickr8k_expert"]
    for key, value in SNAPSHOT["human_agreement"].items():
        assert expert[key] == pytest.approx(value, rel=RELATIVE), key
