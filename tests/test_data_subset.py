"""data.subset: a deterministic, seeded subset that excludes unreadable images with the reason."""

import zipfile

import pytest
from image_cases import bad_cases, good_cases

from capsearch.data.flickr8k import (
    IMAGE_ZIP_NAME,
    IMAGES_DIR_IN_ZIP,
    SPLIT_FILES,
    TOKEN_FILE,
)
from capsearch.data.images import ImageSource
from capsearch.data.subset import build_subset, check_workers, find_text_dir
from capsearch.io import write_csv


def test_subset_is_deterministic_and_seeded(tmp_path, generated):
    root, paths = generated
    source = ImageSource(paths["images"])
    text_dir = find_text_dir(root / "text")
    first = build_subset(text_dir, source, "train", 20, seed=0)
    second = build_subset(text_dir, source, "train", 20, seed=0)
    other = build_subset(text_dir, source, "train", 20, seed=1)
    assert first.images == second.images and first.references == second.references
    assert [i for i, *_ in first.images] != [i for i, *_ in other.images]
    assert len(first.images) == 20 and len(first.references) == 100
    assert [i for i, *_ in first.images] == sorted(i for i, *_ in first.images)
    for out in ("a", "b"):
        write_csv(tmp_path / out / "images.csv", ["image_id", "width", "height", "shard"], first.images)
    assert (tmp_path / "a/images.csv").read_bytes() == (tmp_path / "b/images.csv").read_bytes()
    assert {row[3] for row in first.images} == {str(paths["images"])}  # the zip every image is read from
    everything = build_subset(text_dir, source, "all", "all", seed=0)
    assert len(everything.images) == 64
    with pytest.raises(ValueError, match=r"subset.num_images: 9 is larger than the 8 captioned images of split 'test'"):
        build_subset(text_dir, source, "test", 9, seed=0)


def test_subset_excludes_undecodable_images_and_tops_up(tmp_path, generated):
    root, paths = generated
    with zipfile.ZipFile(paths["images"]) as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    names = sorted(members)
    broken = {names[0]: members[names[0]][: len(members[names[0]]) // 2], names[1]: b"not a jpeg at all", names[2]: b""}
    bad_zip = tmp_path / "Flickr8k_Dataset.zip"
    with zipfile.ZipFile(bad_zip, "w") as archive:
        for name in names[3:]:  # names[3] is removed below: missing from the archive
            if name != names[3]:
                archive.writestr(name, members[name])
        for name, data in broken.items():
            archive.writestr(name, data)
    result = build_subset(find_text_dir(root / "text"), ImageSource(bad_zip), "all", 60, seed=0)
    reasons = dict(result.excluded)
    assert len(result.images) == 60
    assert set(reasons) == {n.split("/", 1)[1] for n in names[:4]}
    assert reasons[names[3].split("/", 1)[1]] == "not in the image archive"
    assert "truncated" in reasons[names[0].split("/", 1)[1]]
    everything = build_subset(find_text_dir(root / "text"), ImageSource(bad_zip), "all", "all", seed=0)
    assert len(everything.images) == 60 and len(everything.excluded) == 4  # "all": every readable image
    with pytest.raises(ValueError, match="only 60 of the 64 images of split 'all' are readable"):
        build_subset(find_text_dir(root / "text"), ImageSource(bad_zip), "all", 61, seed=0)


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
    assert sorted(i for i, *_ in subset.images) == sorted(good_cases())
    reasons = dict(subset.excluded)
    assert set(reasons) == set(bad_cases())
    for name, (_, word) in bad_cases().items():
        assert word in reasons[name], reasons[name]
    sizes = {i: (w, h) for i, w, h, _ in subset.images}
    assert sizes["exif_rotated.jpg"] == (80, 120) and sizes["one_pixel.jpg"] == (1, 1)
    with pytest.raises(ValueError, match=r"subset.num_images: only 9 of the 13 images .* readable \(4 excluded\)"):
        build_subset(text, source, "test", 10, seed=0)


def test_checking_in_worker_processes_chooses_the_same_subset(tmp_path, generated):
    members = dict(good_cases()) | {name: data for name, (data, _) in bad_cases().items()}
    source, text = _zip_layout(tmp_path, members)
    for num_images in ("all", 5):
        alone = build_subset(text, source, "test", num_images, seed=3)
        forked = build_subset(text, source, "test", num_images, seed=3, workers=2)
        assert (forked.images, forked.references, forked.excluded) == (alone.images, alone.references, alone.excluded)
    root, paths = generated
    many = ImageSource(paths["images"])
    assert build_subset(find_text_dir(root / "text"), many, "all", 40, seed=1, workers=3).images == (
        build_subset(find_text_dir(root / "text"), many, "all", 40, seed=1).images
    )


def test_check_workers_from_the_runtime_knob():
    assert check_workers(0) == 1 and check_workers(3) == 3
    assert 1 <= check_workers("auto") <= 16
