"""data.kaggle: packing the Kaggle layout into release-shaped zips."""

import zipfile

import pytest
from helpers import kaggle_folder

from capsearch.data.flickr8k import (
    AnnotationError,
)
from capsearch.data.kaggle import pack_kaggle_folder


def test_pack_kaggle_folder_writes_release_shaped_zips(tmp_path):
    folder = kaggle_folder(tmp_path, splits=True)
    packed = pack_kaggle_folder(folder, tmp_path / "raw")
    assert (packed.images, packed.captioned_images) == (13, 13)
    with zipfile.ZipFile(tmp_path / "raw" / "Flickr8k_Dataset.zip") as archive:
        assert "Flicker8k_Dataset/img_03.jpg" in archive.namelist()
        assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())
    with zipfile.ZipFile(tmp_path / "raw" / "Flickr8k_text.zip") as archive:
        assert sorted(archive.namelist()) == sorted(
            ["captions.txt", "Flickr_8k.testImages.txt", "Flickr_8k.devImages.txt", "Flickr_8k.trainImages.txt"]
        )
    (folder / "captions.txt").write_text("image,caption\nimg_00.jpg,\n")
    with pytest.raises(AnnotationError, match=r"captions\.txt:2: empty caption"):
        pack_kaggle_folder(folder, tmp_path / "raw2")
    assert not (tmp_path / "raw2").exists() or not any((tmp_path / "raw2").iterdir())  # nothing written
    with pytest.raises(FileNotFoundError, match=r"fetch.kaggle_dir: .* must hold Images/ and captions.txt"):
        pack_kaggle_folder(tmp_path / "nowhere", tmp_path / "raw3")
