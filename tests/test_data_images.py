"""data.images: broken and unusual image files decoded right, or an error naming the file."""

import numpy as np
import pytest
from image_cases import bad_cases, good_cases

from capsearch.data.images import ImageReadError, ImageSource


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


def test_the_content_digest_notices_a_rewrite_that_keeps_size_and_time(generated, tmp_path):
    import os
    import shutil
    import zipfile

    _, paths = generated
    zipped = tmp_path / "Flickr8k_Dataset.zip"
    shutil.copy(paths["images"], zipped)
    ids = ImageSource(zipped).ids()[:5]
    folder = tmp_path / "folder"
    folder.mkdir()
    with zipfile.ZipFile(zipped) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    for image_id in ids:
        (folder / image_id).write_bytes(members["Flicker8k_Dataset/" + image_id])
    folder_digest = ImageSource(folder).content_digest(ids)
    assert ImageSource(folder).content_digest(ids) == folder_digest != ImageSource(folder).content_digest(ids[:4])
    # one image's bytes changed in place: the same size, the same modification time
    target = folder / ids[2]
    stat = target.stat()
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert target.stat().st_size == stat.st_size and ImageSource(folder).content_digest(ids) != folder_digest
    # the same change inside a zip: told apart by the member's CRC-32, no image data read
    members["Flicker8k_Dataset/" + ids[2]] = bytes(data)
    rewritten = tmp_path / "again" / "Flickr8k_Dataset.zip"
    rewritten.parent.mkdir()
    with zipfile.ZipFile(rewritten, "w") as archive:
        for name, content in members.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=(2013, 1, 1, 0, 0, 0)), content)
    assert ImageSource(rewritten).content_digest(ids) != ImageSource(zipped).content_digest(ids)
    assert ImageSource(rewritten).content_digest(ids[:2]) == ImageSource(zipped).content_digest(ids[:2])
