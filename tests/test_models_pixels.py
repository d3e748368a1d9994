"""models.pixels: the tensor preprocessing equals each model's processor."""

import numpy as np
import pytest
import torch
from helpers import cosines
from PIL import Image
from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from capsearch.data.images import ImageSource
from capsearch.models.embedder import DualEncoder
from capsearch.models.pixels import PixelPipeline


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


def test_draft_decoding_of_large_jpegs_keeps_the_embedding(toy_models, tmp_path):
    from capsearch.demo.scenes import generate_scenes

    folder = tmp_path / "big"
    folder.mkdir()
    for i, (_, image, _) in enumerate(generate_scenes(6, seed=3)):
        image.convert("RGB").resize((2000, 1500), Image.Resampling.BICUBIC).save(folder / f"{i}.jpg", quality=92)
    source = ImageSource(folder)
    ids = source.ids()
    embedder = DualEncoder(str(toy_models / "toy-clip"), precision="fp32", device="cpu")
    assert embedder.pixels.draft_size(2000, 1500)[1] < 1500 / 2  # a 64-pixel model lets JPEG decode at 1/8
    drafted = embedder.embed_images(source, ids, batch_size=3)
    full = np.stack([embedder.embed_pixels(embedder.preprocess(source.open_rgb(i))[None])[0] for i in ids])
    assert cosines(drafted, full).min() > 0.99
