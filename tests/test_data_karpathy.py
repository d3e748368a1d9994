"""data.karpathy: Flickr30k and COCO with Karpathy's splits, fetched from a generated copy of each download
layout (file:// URLs, real MD5s), then subset."""

import io
import json
import tarfile

import pytest

from capsearch.data.fetch import FetchError, md5_of, safe_extract_tar
from capsearch.data.flickr8k import AnnotationError
from capsearch.data.images import source_images
from capsearch.data.karpathy import fetch_karpathy, parse_karpathy_json
from capsearch.data.subset import build_subset, find_text_dir
from capsearch.demo.karpathy_layout import write_karpathy_layout

COUNT = 48  # test: images 0, 8, ..., 40; val: 1, 9, ...; COCO restval: 2, 10, ...


def fetched(kind, root):
    files = write_karpathy_layout(kind, root / "downloads", COUNT, seed=5)
    raw, text = root / "data/raw", root / "data/text"
    splits, images = files["splits"], files["images"]
    got = fetch_karpathy(kind, splits.as_uri(), md5_of(splits), images.as_uri(), md5_of(images), raw, text)
    return got, raw, text


@pytest.mark.parametrize("kind", ["flickr30k", "coco"])
def test_fetch_then_subset_gives_the_karpathy_test_split_with_five_captions(kind, tmp_path):
    got, raw, text = fetched(kind, tmp_path)
    assert got.annotations.name == f"dataset_{kind}.json"
    truth = json.loads(got.annotations.read_text())["images"]
    test_names = sorted(item["filename"] for item in truth if item["split"] == "test")
    subset = build_subset(find_text_dir(text, kind), source_images(kind, raw), "test", "all", 0, kind=kind)
    assert [row[0] for row in subset.images] == test_names and len(test_names) == COUNT // 8
    assert len(subset.references) == 5 * len(test_names) and not subset.excluded
    first = next(item for item in truth if item["filename"] == test_names[0])
    assert [t for i, _, t in subset.references if i == test_names[0]] == [s["raw"] for s in first["sentences"]]
    dev = build_subset(find_text_dir(text, kind), source_images(kind, raw), "dev", 3, 0, kind=kind)
    assert {row[0] for row in dev.images} <= {item["filename"] for item in truth if item["split"] == "val"}
    again = fetched(kind, tmp_path)[0]  # a second fetch verifies what is there and downloads nothing
    assert all("present" in action for action in again.actions)


def test_coco_reads_val2014_in_place_and_its_train_split_is_restval(tmp_path):
    got, raw, text = fetched("coco", tmp_path)
    assert got.images == raw / "val2014.zip" and got.image_count == COUNT - 5 * COUNT // 8
    train = build_subset(find_text_dir(text, "coco"), source_images("coco", raw), "train", "all", 0, kind="coco")
    truth = json.loads(got.annotations.read_text())["images"]
    restval = sorted(item["filename"] for item in truth if item["split"] == "restval")
    assert [row[0] for row in train.images] == restval
    assert {reason for _, reason in train.excluded} == {"not in the image archive"}  # train2014 is not read
    assert all(name.startswith("COCO_train2014_") for name, _ in train.excluded)


def test_flickr30k_archive_is_extracted_and_deleted_and_a_bad_md5_downloads_nothing(tmp_path):
    got, raw, _ = fetched("flickr30k", tmp_path)
    assert got.images == raw / "flickr30k-images" and not (raw / "flickr30k-images.tar.gz").exists()
    files = write_karpathy_layout("flickr30k", tmp_path / "again", COUNT, seed=5)
    with pytest.raises(FetchError, match=r"md5 .*expected 0{32}.*deleted"):
        fetch_karpathy(
            "flickr30k", files["splits"].as_uri(), "0" * 32, "", "0" * 32, tmp_path / "raw2", tmp_path / "text2"
        )


def test_a_tar_member_escaping_the_folder_is_refused(tmp_path):
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("flickr30k-images/../../escaped.jpg")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(FetchError, match=r"evil\.tar\.gz: refusing member 'flickr30k-images/\.\./\.\./escaped"):
        safe_extract_tar(archive, tmp_path / "out")
    assert not (tmp_path / "escaped.jpg").exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (
            {"filename": "a.jpg", "split": "testing", "sentences": [{"raw": "x"}]},
            r"images\[1\] \(a\.jpg\): unknown split",
        ),
        ({"filename": "a.jpg", "split": "test", "sentences": []}, r"images\[1\] \(a\.jpg\): no sentences"),
        ({"split": "test", "sentences": [{"raw": "x"}]}, r"images\[1\]: missing filename"),
        (
            {"filename": "b.jpg", "split": "val", "sentences": [{"raw": " "}]},
            r"images\[1\] \(b\.jpg\): sentences\[0\] has no raw caption",
        ),
    ],
)
def test_a_malformed_split_file_names_the_file_and_the_entry(tmp_path, item, message):
    path = tmp_path / "dataset_coco.json"
    good = {"filename": "z.jpg", "split": "test", "sentences": [{"raw": "a dog"}]}
    path.write_text(json.dumps({"images": [good, item]}))
    with pytest.raises(AnnotationError, match=r"dataset_coco\.json: " + message):
        parse_karpathy_json(path)


@pytest.mark.parametrize("kind", ["flickr30k", "coco"])
def test_the_generated_downloads_are_byte_identical_whenever_they_are_written(kind, tmp_path, monkeypatch):
    """Tests take an MD5 of one call's files and fetch another's: zip member times and the gzip header must not
    follow the clock (a second crossed between two calls failed a fetch with a wrong MD5)."""
    import time

    first = write_karpathy_layout(kind, tmp_path / "a", 8, seed=5)
    later = time.time() + 3600
    monkeypatch.setattr(time, "time", lambda: later)
    second = write_karpathy_layout(kind, tmp_path / "b", 8, seed=5)
    assert all(first[key].read_bytes() == second[key].read_bytes() for key in first)
