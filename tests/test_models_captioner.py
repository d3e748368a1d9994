"""models.captioner: batch-invariant captions, the same captions after an out-of-memory back-off."""

import pytest
import torch
from helpers import GREEDY

from capsearch.models.captioner import Captioner, DecodingSettings


def test_captioner_is_batch_invariant(toy_models, images):
    source, ids = images
    captioner = Captioner(str(toy_models / "toy-blip"), precision="fp32", device="cpu")
    settings = DecodingSettings(num_beams=1, max_new_tokens=15, min_new_tokens=2)
    one = captioner.caption_images(source, ids[:6], settings, batch_size=1)
    batched = captioner.caption_images(source, ids[:6], settings, batch_size=6)
    assert one == batched and all(len(c.split()) >= 2 for c in one)
    with pytest.raises(ValueError, match=r"caption\.num_beams"):
        captioner.caption_images(source, ids[:1], DecodingSettings(num_beams=0))


def test_captioner_backs_off_on_oom_and_finishes_with_the_same_captions(toy_models, scenes):
    source, ids, _ = scenes
    captioner = Captioner(str(toy_models / "toy-blip"), precision="fp32", device="cpu")
    expected = captioner.caption_images(source, ids[:10], GREEDY, batch_size=8)
    real_generate = captioner.model.generate

    def generate(pixel_values, **kwargs):
        if len(pixel_values) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
        return real_generate(pixel_values=pixel_values, **kwargs)

    captioner.model.generate = generate
    assert captioner.caption_images(source, ids[:10], GREEDY, batch_size=8) == expected
    assert captioner.last_run.batch_size == 2 and captioner.last_run.backoffs == 2


def test_captions_through_the_loader_equal_the_processors_own_path(toy_models, scenes):
    """The loader changes nothing: captions equal transformers' processor + generate on the same decoded images,
    for any worker count (one batch both ways)."""
    from transformers import BlipForConditionalGeneration, BlipProcessor

    source, ids, _ = scenes
    folder = str(toy_models / "toy-blip")
    settings = DecodingSettings(num_beams=3, max_new_tokens=20, min_new_tokens=3)
    processor = BlipProcessor.from_pretrained(folder, backend="pil")
    model = BlipForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
    captioner = Captioner(folder, precision="fp32", device="cpu")
    draft = captioner.pixels.draft_size  # large JPEGs are decoded at a reduced scale first, as the loader does
    pictures = [source.open_rgb(image_id, draft) for image_id in ids[:12]]
    with torch.inference_mode():
        output = model.generate(
            **processor(images=pictures, return_tensors="pt"), num_beams=3, max_new_tokens=20, min_new_tokens=3
        )
    expected = [text.strip() for text in processor.batch_decode(output, skip_special_tokens=True)]
    for workers in (0, 2):
        assert captioner.caption_images(source, ids[:12], settings, batch_size=12, num_workers=workers) == expected
