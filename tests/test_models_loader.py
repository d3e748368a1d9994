"""models.loader and models.gpu_decode: chunks decoded in workers, batches assembled in order; the decode switch.

The GPU decoder itself (nvJPEG) needs a CUDA GPU and torchvision; here it is stood in for by a PIL decoder on the
CPU, which exercises everything around it: which images go to it, the fallbacks, the order, the tensor resize.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from image_cases import bad_cases, good_cases
from PIL import Image

from capsearch.data.images import ImageReadError, ImageSource
from capsearch.models import gpu_decode
from capsearch.models.gpu_decode import resolve_decode
from capsearch.models.loader import ImageLoader
from capsearch.models.pixels import PixelPipeline

CPU = torch.device("cpu")
CLIP_LIKE = PixelPipeline(32, None, None, 32, 32, 3, 1 / 255, (0.5,) * 3, (0.5,) * 3)


def reference(source: ImageSource, ids: list[str], pipeline: PixelPipeline) -> list[torch.Tensor]:
    """The one-process way: each image decoded and resized in turn."""
    return [pipeline(source.open_rgb(image_id, pipeline.draft_size)) for image_id in ids]


def drained(loader: ImageLoader) -> tuple[list[int], list[torch.Tensor], list[int]]:
    positions, rows, sizes = [], [], []
    for batch in loader:
        positions += batch.positions
        rows += list(batch.pixels.unbind(0))
        sizes.append(len(batch.positions))
    return positions, rows, sizes


@pytest.mark.parametrize(("workers", "chunk", "batch"), [(0, 16, 5), (1, 1, 7), (2, 3, 4), (3, 16, 64), (2, 100, 1)])
def test_the_loader_yields_the_images_and_order_of_a_one_process_run(images, workers, chunk, batch):
    source, ids = images
    expected = reference(source, ids, CLIP_LIKE)
    loader = ImageLoader(source, ids, CLIP_LIKE, batch_size=batch, num_workers=workers, device=CPU, chunk=chunk)
    positions, rows, sizes = drained(loader)
    assert positions == list(range(len(ids)))
    assert all(torch.equal(row, want) for row, want in zip(rows, expected, strict=True))
    assert sizes == [batch] * (len(ids) // batch) + ([len(ids) % batch] if len(ids) % batch else [])
    assert loader.stats.cpu_decoded == len(ids) and loader.stats.gpu_decoded == 0


def test_prefetch_keeps_two_model_batches_in_flight_across_the_workers(images):
    source, ids = images
    loader = ImageLoader(source, ids, CLIP_LIKE, batch_size=1024, num_workers=15, device=CPU)
    assert loader.prefetch_factor() * 15 * loader.dataset.chunk >= 2 * 1024
    assert ImageLoader(source, ids, CLIP_LIKE, batch_size=8, num_workers=2, device=CPU).prefetch_factor() == 2
    assert ImageLoader(source, ids, CLIP_LIKE, batch_size=8, num_workers=0, device=CPU).prefetch_factor() == 0


@pytest.mark.parametrize("workers", [0, 2])
def test_unreadable_images_fail_naming_them_or_are_skipped_with_their_reason(folder, workers):
    source = ImageSource(folder)
    ids = sorted([*good_cases(), *bad_cases()])
    with pytest.raises(ImageReadError) as caught:
        list(ImageLoader(source, ids, CLIP_LIKE, batch_size=4, num_workers=workers, device=CPU, chunk=3))
    assert str(caught.value).startswith(f"cannot decode image {folder / 'bomb.png'}") and "\n" not in str(caught.value)
    loader = ImageLoader(
        source, ids, CLIP_LIKE, batch_size=4, num_workers=workers, device=CPU, chunk=3, skip_unreadable=True
    )
    positions, rows, _ = drained(loader)
    skipped = {ids[p]: reason for p, reason in loader.stats.skipped}
    assert set(skipped) == set(bad_cases())
    for name, (_, word) in bad_cases().items():
        assert word in skipped[name] and name in skipped[name]
    assert [ids[p] for p in positions] == [i for i in ids if i not in skipped]
    expected = reference(source, [ids[p] for p in positions], CLIP_LIKE)
    assert all(torch.equal(r, w) for r, w in zip(rows, expected, strict=True))


def pil_stand_in(refuse: set[bytes] = frozenset()):
    """A stand-in for nvJPEG on the CPU: PIL decodes each file to an RGB tensor; files in ``refuse`` fail."""
    seen: list[int] = []

    def decode(files: list[torch.Tensor]) -> list[torch.Tensor | None]:
        seen.append(len(files))
        out = []
        for data in files:
            raw = bytes(data.numpy())
            if raw in refuse:
                out.append(None)
                continue
            image = Image.open(io.BytesIO(raw)).convert("RGB")
            out.append(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1))
        return out

    decode.seen = seen  # type: ignore[attr-defined]
    return decode


def test_the_gpu_path_sends_plain_jpegs_to_the_decoder_and_the_rest_through_pil(folder):
    source = ImageSource(folder)
    ids = sorted(good_cases())
    plain = {"gray.jpg", "normal.jpg", "one_pixel.jpg"}  # not CMYK, not EXIF-rotated, not PNG
    refused = source.read_bytes("one_pixel.jpg")
    decoder = pil_stand_in({refused})
    loader = ImageLoader(
        source, ids, CLIP_LIKE, batch_size=4, num_workers=2, device=CPU, decode="gpu", jpeg_decoder=decoder, chunk=2
    )
    positions, rows, _ = drained(loader)
    assert positions == list(range(len(ids)))
    assert sum(decoder.seen) == len(plain)  # only the plain JPEGs reached the decoder
    assert loader.stats.gpu_decoded == len(plain) - 1  # one was refused by it ...
    assert loader.stats.cpu_fallbacks == len(ids) - len(plain) + 1  # ... and went through PIL, counted
    expected = reference(source, ids, CLIP_LIKE)
    for image_id, row, want in zip(ids, rows, expected, strict=True):
        if image_id in plain - {"one_pixel.jpg"}:  # the tensor resize: within a level or two of PIL's full decode
            full = CLIP_LIKE(source.open_rgb(image_id))  # (the CPU path's draft decoding of large JPEGs aside)
            assert (row.int() - full.int()).abs().max() <= 2, image_id
        else:
            assert torch.equal(row, want), image_id  # the CPU path, bit for bit


def test_the_tensor_resize_stays_within_a_few_levels_of_pil_on_photo_sizes():
    rng = np.random.default_rng(0)
    blip_like = PixelPipeline(None, 48, 48, None, None, 3, 1 / 255, (0.5,) * 3, (0.5,) * 3)
    for width, height in ((500, 375), (375, 500), (640, 90), (20, 30)):
        coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
        tensor = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
        for pipeline in (CLIP_LIKE, blip_like):
            ours, theirs = pipeline.resize_tensors([tensor])[0], pipeline(image)
            assert ours.shape == theirs.shape and ours.dtype == torch.uint8
            difference = (ours.int() - theirs.int()).abs()
            assert difference.max() <= 3 and difference.float().mean() < 0.5, (width, height)


def test_gpu_decoding_without_cuda_or_torchvision_is_one_error_naming_the_param(monkeypatch):
    assert resolve_decode("auto", CPU) == "cpu" and resolve_decode("cpu", torch.device("cuda")) == "cpu"
    with pytest.raises(ValueError, match=r"^runtime\.decode: 'gpu' needs a CUDA GPU .* the model runs on cpu"):
        resolve_decode("gpu", CPU)
    missing = (None, "torchvision cannot be imported (No module named 'torchvision')")
    monkeypatch.setattr(gpu_decode, "torchvision_decoder", lambda: missing)
    with pytest.raises(ValueError, match=r"^runtime\.decode: 'gpu' needs .* torchvision cannot be imported"):
        resolve_decode("gpu", torch.device("cuda"))
    assert resolve_decode("auto", torch.device("cuda")) == "cpu"  # auto falls back, saying nothing
    lanczos = PixelPipeline(32, None, None, 32, 32, 1, 1 / 255, (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(ValueError, match=r"resize filter \(1\) has no GPU equivalent"):
        resolve_decode("gpu", torch.device("cuda"), lanczos)
    with pytest.raises(ValueError, match=r"runtime\.decode: unknown decode path 'nvjpeg'"):
        resolve_decode("nvjpeg", CPU)
