"""cache: the per-image result cache, keyed by content, weights and code."""

import io

import numpy as np
import pytest
from helpers import GREEDY
from PIL import Image

from capsearch.cache import ResultCache, model_fingerprint
from capsearch.data.images import ImageSource
from capsearch.models.captioner import Captioner, DecodingSettings
from capsearch.models.embedder import DualEncoder


def test_cache_computes_only_new_images_and_gives_the_same_results(toy_models, scenes, tmp_path):
    source, ids, _ = scenes
    cache = ResultCache(tmp_path / "cache")
    embedder = DualEncoder(str(toy_models / "toy-clip"), precision="fp32", device="cpu")
    fresh = embedder.embed_images(source, ids[:20], 8)
    embedder.embed_images(source, ids[:10], 8, cache=cache)
    assert (embedder.last_run.computed, embedder.last_run.cached) == (10, 0)
    grown = embedder.embed_images(source, ids[:20], 8, cache=cache)
    assert (embedder.last_run.computed, embedder.last_run.cached) == (10, 10)
    assert np.allclose(grown, fresh, atol=1e-5)

    captioner = Captioner(str(toy_models / "toy-blip"), precision="fp32", device="cpu")
    plain = captioner.caption_images(source, ids[:12], GREEDY, 4)
    captioner.caption_images(source, ids[:6], GREEDY, 4, cache=cache)
    assert captioner.caption_images(source, ids[:12], GREEDY, 4, cache=cache) == plain
    assert (captioner.last_run.computed, captioner.last_run.cached) == (6, 6)
    other = DecodingSettings(num_beams=2, max_new_tokens=12, min_new_tokens=2)
    captioner.caption_images(source, ids[:12], other, 4, cache=cache)
    assert captioner.last_run.computed == 12  # other decoding settings are another namespace

    early = Captioner(str(toy_models / "toy-blip-early"), precision="fp32", device="cpu")
    early.caption_images(source, ids[:3], GREEDY, 4, cache=cache)
    assert early.last_run.computed == 3  # other weights, nothing reused
    bf16 = Captioner(str(toy_models / "toy-blip"), precision="bf16", device="cpu")
    bf16.caption_images(source, ids[:3], GREEDY, 4, cache=cache)
    assert bf16.last_run.computed == 3  # other precision, nothing reused


def test_cache_keys_on_image_content_not_name(toy_models, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    red, blue = (Image.new("RGB", (80, 60), colour) for colour in ((220, 20, 20), (20, 20, 220)))
    red.save(folder / "a.jpg")
    cache = ResultCache(tmp_path / "cache")
    embedder = DualEncoder(str(toy_models / "toy-clip"), precision="fp32", device="cpu")
    first = embedder.embed_images(ImageSource(folder), ["a.jpg"], 4, cache=cache)
    blue.save(folder / "a.jpg")  # same name, new content
    second = embedder.embed_images(ImageSource(folder), ["a.jpg"], 4, cache=cache)
    assert embedder.last_run.computed == 1 and not np.allclose(first, second)
    buffer = io.BytesIO()
    red.save(buffer, format="JPEG")
    (folder / "b.jpg").write_bytes(buffer.getvalue())  # other name, first content
    third = embedder.embed_images(ImageSource(folder), ["b.jpg"], 4, cache=cache)
    assert embedder.last_run.cached == 1 and np.allclose(third, first)


def test_model_fingerprint_follows_weights_and_hub_commits(toy_models, tmp_path, monkeypatch):
    assert model_fingerprint(str(toy_models / "toy-clip")) != model_fingerprint(str(toy_models / "toy-clip-early"))
    hub = tmp_path / "hub"
    repo = hub / "models--org--model"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text("{}")
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    assert model_fingerprint("org/model", "main") == "org/model@abc123"
    with pytest.raises(ValueError, match="cannot fingerprint model 'org/other'"):
        model_fingerprint("org/other", "main")


def test_a_corrupt_cache_file_says_it_is_safe_to_delete(tmp_path):
    (tmp_path / "results.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(OSError, match=r"results.sqlite is unusable .* delete it, it is safe to"):
        ResultCache(tmp_path)
    cache = ResultCache(tmp_path / "fresh")
    cache.put_many("space", {"abc": b"value"})
    assert cache.get_many("space", ["abc", "missing"]) == {"abc": b"value"}
    assert cache.get_many("other space", ["abc"]) == {}
