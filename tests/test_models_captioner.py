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
