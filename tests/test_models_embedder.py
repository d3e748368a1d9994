"""models.embedder: normalised embeddings, worker-invariant, truncation counted, precision-stable."""

import shutil
import zipfile

import numpy as np
import pytest
import torch
from helpers import GREEDY, cosines
from image_cases import good_cases

from capsearch.data.images import ImageReadError, ImageSource
from capsearch.models.captioner import Captioner, DecodingSettings
from capsearch.models.embedder import DualEncoder


def test_embeddings_are_normalised_and_worker_processes_agree(toy_models, images):
    source, ids = images
    embedder = DualEncoder(str(toy_models / "toy-clip"), precision="fp32", device="cpu")
    serial = embedder.embed_images(source, ids, batch_size=5, num_workers=0)
    parallel = embedder.embed_images(source, ids, batch_size=4, num_workers=2)
    assert serial.shape == (16, 64) and serial.dtype == np.float32
    assert np.allclose(np.linalg.norm(serial, axis=1), 1.0, atol=1e-5)
    assert np.allclose(serial, parallel, atol=1e-5)  # same order, same values across batchings and workers


def test_long_captions_are_truncated_and_counted(toy_models):
    embedder = DualEncoder(str(toy_models / "toy-clip"), precision="fp32", device="cpu")
    long = "a red circle " * 60
    out = embedder.embed_texts(["a red circle", long, "a blue square"], batch_size=2)
    assert out.truncated == 1 and out.vectors.shape == (3, 64)
    assert np.allclose(np.linalg.norm(out.vectors, axis=1), 1.0, atol=1e-5)


def test_models_embed_and_caption_every_readable_odd_image(toy_models, folder):
    source = ImageSource(folder)
    good = sorted(good_cases())
    vectors = DualEncoder(str(toy_models / "toy-clip"), precision="fp32", device="cpu").embed_images(
        source, good, batch_size=4, num_workers=2
    )
    assert np.isfinite(vectors).all() and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    captioner = Captioner(str(toy_models / "toy-blip"), precision="fp32", device="cpu")
    captions = captioner.caption_images(source, good, DecodingSettings(1, 10, 2), batch_size=4)
    assert len(captions) == len(good) and all(captions)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_file_vanishing_after_subset_fails_naming_it(toy_models, folder, tmp_path, workers):
    copy = tmp_path / "imgs"
    shutil.copytree(folder, copy)
    source = ImageSource(copy)
    ids = sorted(good_cases())
    (copy / "gray.jpg").unlink()
    embedder = DualEncoder(str(toy_models / "toy-clip"), precision="fp32", device="cpu")
    with pytest.raises(ImageReadError) as caught:
        embedder.embed_images(source, ids, batch_size=4, num_workers=workers)
    message = str(caught.value)
    assert message.startswith(f"cannot read image {copy / 'gray.jpg'}") and "\n" not in message


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
    full, half = (DualEncoder(clip, precision=p, device="cpu") for p in ("fp32", "bf16"))
    assert half.dtype is torch.bfloat16
    images_full, images_half = full.embed_images(source, ids, 16), half.embed_images(source, ids, 16)
    assert cosines(images_full, images_half).min() > 0.99
    queries = _first_captions(paths, ids)
    texts_full, texts_half = full.embed_texts(queries).vectors, half.embed_texts(queries).vectors
    assert cosines(texts_full, texts_half).min() > 0.99
    full_sim, half_sim = texts_full @ images_full.T, texts_half @ images_half.T
    assert _recall(full_sim, 5) > 30  # far above chance (5 of 64 = 7.8)
    assert abs(_recall(full_sim, 1) - _recall(half_sim, 1)) <= 5
    assert abs(_recall(full_sim, 5) - _recall(half_sim, 5)) <= 5
    blip = str(toy_models / "toy-blip")
    recalls = []
    for precision in ("fp32", "bf16"):
        captions = Captioner(blip, precision=precision, device="cpu").caption_images(source, ids, GREEDY, 16)
        recalls.append(_recall(texts_full @ full.embed_texts(captions).vectors.T, 5))  # text -> generated caption
    assert recalls[0] > 25  # chance: 7.8
    assert abs(recalls[0] - recalls[1]) <= 6  # captions may change words, not what retrieval finds
