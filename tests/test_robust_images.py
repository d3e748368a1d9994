"""Broken and unusual image files: decoded right, or excluded with the reason, or an error naming the file."""

import shutil
import zipfile

import numpy as np
import pytest
from image_cases import bad_cases, good_cases

from capsearch.data.flickr8k import IMAGE_ZIP_NAME, IMAGES_DIR_IN_ZIP, SPLIT_FILES, TOKEN_FILE
from capsearch.data.images import ImageReadError, ImageSource
from capsearch.data.subset import build_subset
from capsearch.models.blip import BlipCaptioner, DecodingSettings
from capsearch.models.clip import ClipEmbedder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("cases")
    for name, data in good_cases().items():
        (out / name).write_bytes(data)
    for name, (data, _) in bad_cases().items():
        (out / name).write_bytes(data)
    return out


@pytest.mark.parametrize("name", sorted(bad_cases()))
def test_undecodable_files_raise_an_error_naming_the_file(folder, name):
    _, reason = bad_cases()[name]
    source = ImageSource(folder)
    for read in (source.check, source.open_rgb):
        with pytest.raises(ImageReadError) as caught:
            read(name)
        message = str(caught.value)
        assert str(folder / name) in message and reason in message
        assert "object at 0x" not in message and "\n" not in message


def test_odd_modes_become_the_rgb_a_viewer_shows(folder):
    source = ImageSource(folder)
    rgb = {name: np.asarray(source.open_rgb(name)) for name in good_cases()}
    assert all(a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3 for a in rgb.values())
    gray = rgb["gray.jpg"]
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    assert np.abs(rgb["cmyk.jpg"][5, 5].astype(int) - (230, 20, 20)).max() < 30  # red stays red
    assert (rgb["rgba.png"][:, 40:] == 255).all()  # transparent over white, not black
    assert tuple(rgb["rgba.png"][10, 10]) == (255, 0, 0)
    assert (rgb["palette.png"][:, 40:] == 255).all() and tuple(rgb["palette.png"][10, 10]) == (0, 200, 0)
    ramp = rgb["sixteen_bit.png"][0, :, 0]  # 0..65535 scaled to 0..255, not clipped to white
    assert ramp[0] == 0 and ramp[-1] == 255 and 100 < ramp[32] < 160 and (np.diff(ramp.astype(int)) >= 0).all()
    assert rgb["one_pixel.jpg"].shape == (1, 1, 3)
    assert np.array_equal(rgb["png_named.jpg"][0, 0], (230, 20, 20))  # decoded by content, not by name


def test_exif_rotation_is_applied_to_pixels_and_sizes(folder):
    source = ImageSource(folder)
    assert source.check("normal.jpg") == (120, 80)
    assert source.check("exif_rotated.jpg") == (80, 120)  # upright: portrait
    upright = np.asarray(source.open_rgb("exif_rotated.jpg")).astype(int)
    assert upright.shape == (120, 80, 3)
    assert upright[:50, :, 0].mean() > 200 and upright[70:, :, 2].mean() > 200  # left half is now on top
    drafted = np.asarray(source.open_rgb("exif_rotated.jpg", lambda w, h: (w // 4, h // 4)))
    assert drafted.shape[0] > drafted.shape[1]  # draft sizes follow the upright orientation too


def _zip_layout(out, members: dict[str, bytes]) -> tuple[ImageSource, object]:
    with zipfile.ZipFile(out / IMAGE_ZIP_NAME, "w") as archive:
        for name, data in members.items():
            archive.writestr(IMAGES_DIR_IN_ZIP + name, data)
    text = out / "text"
    text.mkdir()
    lines = [f"{name}#{i}\ta picture number {i} of {name}" for name in members for i in range(5)]
    (text / TOKEN_FILE).write_text("\n".join(lines) + "\n")
    (text / SPLIT_FILES["test"]).write_text("\n".join(members) + "\n")
    for split in ("dev", "train"):
        (text / SPLIT_FILES[split]).write_text("")
    return ImageSource(out / IMAGE_ZIP_NAME), text


def test_subset_excludes_bad_images_with_the_reason_and_keeps_the_rest(tmp_path):
    members = dict(good_cases()) | {name: data for name, (data, _) in bad_cases().items()}
    source, text = _zip_layout(tmp_path, members)
    subset = build_subset(text, source, "test", "all", seed=0)
    assert sorted(i for i, _, _ in subset.images) == sorted(good_cases())
    reasons = dict(subset.excluded)
    assert set(reasons) == set(bad_cases())
    for name, (_, word) in bad_cases().items():
        assert word in reasons[name], reasons[name]
    sizes = {i: (w, h) for i, w, h in subset.images}
    assert sizes["exif_rotated.jpg"] == (80, 120) and sizes["one_pixel.jpg"] == (1, 1)
    with pytest.raises(ValueError, match=r"subset.num_images: only 9 of the 13 images .* readable \(4 excluded\)"):
        build_subset(text, source, "test", 10, seed=0)


def test_models_embed_and_caption_every_readable_odd_image(toy_models, folder):
    source = ImageSource(folder)
    good = sorted(good_cases())
    vectors = ClipEmbedder(str(toy_models / "toy-clip"), precision="fp32", device="cpu").embed_images(
        source, good, batch_size=4, num_workers=2
    )
    assert np.isfinite(vectors).all() and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    captioner = BlipCaptioner(str(toy_models / "toy-blip"), precision="fp32", device="cpu")
    captions = captioner.caption_images(source, good, DecodingSettings(1, 10, 2), batch_size=4)
    assert len(captions) == len(good) and all(captions)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_file_vanishing_after_subset_fails_naming_it(toy_models, folder, tmp_path, workers):
    copy = tmp_path / "imgs"
    shutil.copytree(folder, copy)
    source = ImageSource(copy)
    ids = sorted(good_cases())
    (copy / "gray.jpg").unlink()
    embedder = ClipEmbedder(str(toy_models / "toy-clip"), precision="fp32", device="cpu")
    with pytest.raises(ImageReadError) as caught:
        embedder.embed_images(source, ids, batch_size=4, num_workers=workers)
    message = str(caught.value)
    assert message.startswith(f"cannot read image {copy / 'gray.jpg'}") and "\n" not in message
