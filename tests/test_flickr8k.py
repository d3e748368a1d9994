"""Parsing the token and split files, and choosing subsets, on generated and hand-written data."""

import io
import zipfile

import pytest
from PIL import Image

from capsearch.data.flickr8k import (
    AnnotationError,
    parse_token_file,
    split_candidates,
)
from capsearch.data.images import ImageSource
from capsearch.data.subset import build_subset, find_text_dir
from capsearch.demo.scenes import write_flickr8k_layout
from capsearch.io import write_csv


def _write(tmp_path, text, name="Flickr8k.token.txt", newline="\n"):
    path = tmp_path / name
    path.write_bytes(text.replace("\n", newline).encode("utf-8"))
    return path


def test_parse_folds_stray_key_and_handles_crlf(tmp_path):
    lines = ["a.jpg.1#0\tfirst", "a.jpg#1\tsecond", "b.jpg#0\tone", "b.jpg#1\ttwo", ""]
    parsed = parse_token_file(_write(tmp_path, "\n".join(lines), newline="\r\n"))
    assert parsed.captions == {"a.jpg": ["first", "second"], "b.jpg": ["one", "two"]}
    assert parsed.stray_keys_folded == 1 and parsed.stray_keys == ["a.jpg.1#0"]
    assert parsed.lines == 4 and parsed.caption_groups == 2


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("a.jpg#0 no tab here", "expected '<image>.jpg#<0-4><TAB><caption>'"),
        ("a.jpg\tno hash", "expected"),
        ("a.jpg#7\tbad index", "caption index 7 outside 0-4"),
        ("a.jpg#1\t   ", "empty caption"),
        ("a.jpg#0\tdup", "duplicate caption id a.jpg#0"),
    ],
)
def test_parse_errors_name_file_and_line(tmp_path, line, message):
    path = _write(tmp_path, f"a.jpg#0\tok\n{line}\n")
    with pytest.raises(AnnotationError, match=message) as error:
        parse_token_file(path)
    assert f"{path}:2:" in str(error.value)


def test_parse_rejects_non_utf8_with_line(tmp_path):
    path = tmp_path / "Flickr8k.token.txt"
    path.write_bytes(b"a.jpg#0\tok\na.jpg#1\tcaf\xe9\n")
    with pytest.raises(AnnotationError, match=r":2: not valid UTF-8"):
        parse_token_file(path)


def test_split_candidates_and_size():
    captions = {"a.jpg": ["x"], "b.jpg": ["y"], "c.jpg": ["z"]}
    splits = {"train": ["a.jpg"], "dev": ["b.jpg", "missing.jpg"], "test": []}
    dev = split_candidates(captions, splits, "dev")
    assert dev.images == ["b.jpg"] and dev.without_captions == ["missing.jpg"] and dev.in_no_split == 1
    assert split_candidates(captions, splits, "all").images == ["a.jpg", "b.jpg", "c.jpg"]
    with pytest.raises(ValueError, match=r"subset\.split: unknown split 'val'"):
        split_candidates(captions, splits, "val")
    for section in ("subset", "fusion"):  # the section named in errors is the caller's
        with pytest.raises(ValueError, match=rf"{section}\.split: unknown split 'val'"):
            split_candidates(captions, splits, "val", section)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    paths = write_flickr8k_layout(root / "zips", 64, seed=3)
    with zipfile.ZipFile(paths["text"]) as archive:
        archive.extractall(root / "text")
    return root, paths


def test_generator_is_deterministic_and_release_shaped(tmp_path, generated):
    _, paths = generated
    again = write_flickr8k_layout(tmp_path, 64, seed=3)
    assert again["images"].read_bytes() == paths["images"].read_bytes()
    assert again["text"].read_bytes() == paths["text"].read_bytes()
    with zipfile.ZipFile(paths["images"]) as archive:
        names = archive.namelist()
        assert len(names) == 64 and all(n.startswith("Flicker8k_Dataset/") and n.endswith(".jpg") for n in names)
        sizes = [Image.open(io.BytesIO(archive.read(n))).size for n in names]
        modes = {Image.open(io.BytesIO(archive.read(n))).mode for n in names}
    assert any(w < h for w, h in sizes) and any(w > h for w, h in sizes)
    assert all(min(w, h) >= 300 and max(w, h) <= 560 for w, h in sizes)
    assert modes == {"RGB", "L"}
    root, _ = generated
    parsed = parse_token_file(root / "text" / "Flickr8k.token.txt")
    assert parsed.caption_groups == 64 and parsed.lines == 320
    for captions in parsed.captions.values():
        assert len(set(captions)) == 5
        shapes = {word for c in captions for word in c.lower().split() if word in ("circle", "square", "triangle")}
        assert len(shapes) == 1  # all five describe the one shape drawn


def test_subset_is_deterministic_and_seeded(tmp_path, generated):
    root, paths = generated
    source = ImageSource(paths["images"])
    text_dir = find_text_dir(root / "text")
    first = build_subset(text_dir, source, "train", 20, seed=0)
    second = build_subset(text_dir, source, "train", 20, seed=0)
    other = build_subset(text_dir, source, "train", 20, seed=1)
    assert first.images == second.images and first.references == second.references
    assert [i for i, _, _ in first.images] != [i for i, _, _ in other.images]
    assert len(first.images) == 20 and len(first.references) == 100
    assert [i for i, _, _ in first.images] == sorted(i for i, _, _ in first.images)
    for out in ("a", "b"):
        write_csv(tmp_path / out / "images.csv", ["image_id", "width", "height"], first.images)
    assert (tmp_path / "a/images.csv").read_bytes() == (tmp_path / "b/images.csv").read_bytes()
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
