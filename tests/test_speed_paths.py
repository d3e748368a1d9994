"""The fast paths give the same answers: tensor preprocessing, bf16, OOM back-off, the result cache."""

import io
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image
from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from capsearch.cache import ResultCache, model_fingerprint
from capsearch.data.images import ImageSource
from capsearch.demo.scenes import write_flickr8k_layout
from capsearch.models.batching import OomBackoff, resolve_batch_size, resolve_num_workers
from capsearch.models.blip import BlipCaptioner, DecodingSettings
from capsearch.models.clip import ClipEmbedder
from capsearch.models.pixels import PixelPipeline

CPU = torch.device("cpu")
GREEDY = DecodingSettings(num_beams=1, max_new_tokens=12, min_new_tokens=2)


@pytest.mark.parametrize("processor", [CLIPImageProcessorPil(), BlipImageProcessorPil()], ids=["clip", "blip"])
@pytest.mark.parametrize("size", [(500, 375), (375, 500), (224, 224), (100, 50), (1, 1), (2000, 1500), (383, 385)])
def test_tensor_preprocessing_matches_the_models_processor(processor, size):
    rng = np.random.default_rng(sum(size))
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    expected = processor(images=image, return_tensors="pt")["pixel_values"][0]
    pipeline = PixelPipeline.from_image_processor(processor)
    uint8 = pipeline(image)
    assert uint8.dtype == torch.uint8
    ours = pipeline.normalise(uint8[None], torch.float32)[0]
    assert ours.shape == expected.shape
    assert torch.allclose(ours, expected, atol=1e-5)


def test_extreme_aspect_ratio_stays_small_and_close():
    processor = CLIPImageProcessorPil()
    pipeline = PixelPipeline.from_image_processor(processor)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 37, 3), dtype=np.uint8))
    expected = processor(images=image, return_tensors="pt")["pixel_values"][0]
    ours = pipeline.normalise(pipeline(image)[None], torch.float32)[0]
    assert ours.shape == expected.shape and (ours - expected).abs().mean() < 0.01


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_draft_decoding_of_large_jpegs_keeps_the_embedding(toy_models, tmp_path):
    from capsearch.demo.scenes import generate_scenes

    folder = tmp_path / "big"
    folder.mkdir()
    for i, (_, image, _) in enumerate(generate_scenes(6, seed=3)):
        image.convert("RGB").resize((2000, 1500), Image.Resampling.BICUBIC).save(folder / f"{i}.jpg", quality=92)
    source = ImageSource(folder)
    ids = source.ids()
    embedder = ClipEmbedder(str(toy_models / "toy-clip"), precision="fp32", device="cpu")
    assert embedder.pixels.draft_size(2000, 1500)[1] < 1500 / 2  # a 64-pixel model lets JPEG decode at 1/8
    drafted = embedder.embed_images(source, ids, batch_size=3)
    full = np.stack([embedder.embed_pixels(embedder.preprocess(source.open_rgb(i))[None])[0] for i in ids])
    assert _cosines(drafted, full).min() > 0.99


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    paths = write_flickr8k_layout(tmp_path_factory.mktemp("scenes"), 64, seed=11)
    source = ImageSource(paths["images"])
    return source, source.ids(), paths


def _first_captions(paths, ids):
    lines = zipfile.ZipFile(paths["text"]).read("Flickr8k.token.txt").decode().splitlines()
    first = dict(line.split("#0\t") for line in lines if "#0\t" in line)
    return [first[i] for i in ids]


def _recall(similarity: np.ndarray, k: int) -> float:
    """Percent of queries (rows) whose own image (same index) ranks in the top k, ties counted against."""
    own = np.diag(similarity)[:, None]
    ranks = 1 + (similarity >= own).sum(axis=1) - 1
    return 100.0 * float(np.mean(ranks <= k))


def test_bf16_agrees_with_fp32_and_retrieval_barely_moves(toy_models, scenes):
    source, ids, paths = scenes
    clip = str(toy_models / "toy-clip")
    full, half = (ClipEmbedder(clip, precision=p, device="cpu") for p in ("fp32", "bf16"))
    assert half.dtype is torch.bfloat16
    images_full, images_half = full.embed_images(source, ids, 16), half.embed_images(source, ids, 16)
    assert _cosines(images_full, images_half).min() > 0.99
    queries = _first_captions(paths, ids)
    texts_full, texts_half = full.embed_texts(queries).vectors, half.embed_texts(queries).vectors
    assert _cosines(texts_full, texts_half).min() > 0.99
    full_sim, half_sim = texts_full @ images_full.T, texts_half @ images_half.T
    assert _recall(full_sim, 5) > 30  # far above chance (5 of 64 = 7.8)
    assert abs(_recall(full_sim, 1) - _recall(half_sim, 1)) <= 5
    assert abs(_recall(full_sim, 5) - _recall(half_sim, 5)) <= 5
    blip = str(toy_models / "toy-blip")
    recalls = []
    for precision in ("fp32", "bf16"):
        captions = BlipCaptioner(blip, precision=precision, device="cpu").caption_images(source, ids, GREEDY, 16)
        recalls.append(_recall(texts_full @ full.embed_texts(captions).vectors.T, 5))  # text -> generated caption
    assert recalls[0] > 25  # chance: 7.8
    assert abs(recalls[0] - recalls[1]) <= 6  # captions may change words, not what retrieval finds


def test_backoff_halves_on_out_of_memory_and_keeps_order():
    calls = []

    def fn(chunk):
        calls.append(len(chunk))
        if len(chunk) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [int(x) * 10 for x in chunk]

    backoff = OomBackoff(8)
    assert backoff(fn, torch.arange(10)) == [x * 10 for x in range(10)]
    assert backoff.limit == 2 and backoff.backoffs == 2
    assert calls[:3] == [8, 4, 2]
    assert backoff(fn, torch.arange(3)) == [0, 10, 20]  # later batches start at the reduced size
    with pytest.raises(ValueError, match="not memory"):
        OomBackoff(4)(lambda chunk: (_ for _ in ()).throw(ValueError("not memory")), torch.arange(4))
    with pytest.raises(torch.OutOfMemoryError):
        OomBackoff(1)(lambda chunk: (_ for _ in ()).throw(torch.OutOfMemoryError("oom")), torch.arange(2))


def test_captioner_backs_off_on_oom_and_finishes_with_the_same_captions(toy_models, scenes):
    source, ids, _ = scenes
    captioner = BlipCaptioner(str(toy_models / "toy-blip"), precision="fp32", device="cpu")
    expected = captioner.caption_images(source, ids[:10], GREEDY, batch_size=8)
    real_generate = captioner.model.generate

    def generate(pixel_values, **kwargs):
        if len(pixel_values) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
        return real_generate(pixel_values=pixel_values, **kwargs)

    captioner.model.generate = generate
    assert captioner.caption_images(source, ids[:10], GREEDY, batch_size=8) == expected
    assert captioner.last_run.batch_size == 2 and captioner.last_run.backoffs == 2


def test_cache_computes_only_new_images_and_gives_the_same_results(toy_models, scenes, tmp_path):
    source, ids, _ = scenes
    cache = ResultCache(tmp_path / "cache")
    embedder = ClipEmbedder(str(toy_models / "toy-clip"), precision="fp32", device="cpu")
    fresh = embedder.embed_images(source, ids[:20], 8)
    embedder.embed_images(source, ids[:10], 8, cache=cache)
    assert (embedder.last_run.computed, embedder.last_run.cached) == (10, 0)
    grown = embedder.embed_images(source, ids[:20], 8, cache=cache)
    assert (embedder.last_run.computed, embedder.last_run.cached) == (10, 10)
    assert np.allclose(grown, fresh, atol=1e-5)

    captioner = BlipCaptioner(str(toy_models / "toy-blip"), precision="fp32", device="cpu")
    plain = captioner.caption_images(source, ids[:12], GREEDY, 4)
    captioner.caption_images(source, ids[:6], GREEDY, 4, cache=cache)
    assert captioner.caption_images(source, ids[:12], GREEDY, 4, cache=cache) == plain
    assert (captioner.last_run.computed, captioner.last_run.cached) == (6, 6)
    other = DecodingSettings(num_beams=2, max_new_tokens=12, min_new_tokens=2)
    captioner.caption_images(source, ids[:12], other, 4, cache=cache)
    assert captioner.last_run.computed == 12  # other decoding settings are another namespace

    early = BlipCaptioner(str(toy_models / "toy-blip-early"), precision="fp32", device="cpu")
    early.caption_images(source, ids[:3], GREEDY, 4, cache=cache)
    assert early.last_run.computed == 3  # other weights, nothing reused
    bf16 = BlipCaptioner(str(toy_models / "toy-blip"), precision="bf16", device="cpu")
    bf16.caption_images(source, ids[:3], GREEDY, 4, cache=cache)
    assert bf16.last_run.computed == 3  # other precision, nothing reused


def test_cache_keys_on_image_content_not_name(toy_models, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    red, blue = (Image.new("RGB", (80, 60), colour) for colour in ((220, 20, 20), (20, 20, 220)))
    red.save(folder / "a.jpg")
    cache = ResultCache(tmp_path / "cache")
    embedder = ClipEmbedder(str(toy_models / "toy-clip"), precision="fp32", device="cpu")
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


def test_batch_size_and_worker_knobs():
    assert resolve_batch_size("auto", "caption", CPU, "runtime.batch_size.caption") == 8
    assert resolve_batch_size("auto", "embed_images", torch.device("cuda"), "x") == 1024
    assert resolve_batch_size(12, "caption", CPU, "x") == 12
    for bad in (0, -3, "many", 2.5):
        with pytest.raises(ValueError, match=r"runtime\.batch_size\.caption: expected a positive integer or 'auto'"):
            resolve_batch_size(bad, "caption", CPU, "runtime.batch_size.caption")
    assert resolve_num_workers("auto", CPU) == 0 and resolve_num_workers(3, CPU) == 3
    assert resolve_num_workers("auto", torch.device("cuda")) >= 0
    with pytest.raises(ValueError, match=r"runtime\.num_workers"):
        resolve_num_workers(-1, CPU)
