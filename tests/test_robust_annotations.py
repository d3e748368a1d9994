"""Annotation edge cases beyond test_flickr8k.py: Kaggle's layout, BOMs, split files, the fetch stage on them."""

import zipfile
from pathlib import Path

import pytest
from PIL import Image
from stage_runner import run_stage

from capsearch.data.flickr8k import (
    AnnotationError,
    load_captions,
    parse_kaggle_captions,
    parse_token_file,
    read_splits,
    split_candidates,
)
from capsearch.data.kaggle import pack_kaggle_folder

KAGGLE_TEXT = (
    "image,caption\r\n"
    "a.jpg,A child in a pink dress is climbing up a set of stairs .\r\n"
    'a.jpg,"A girl, small and happy, climbs stairs ."\r\n'
    "a.jpg,A dog, a cat and a bird .\r\n"
    'b.png,"He said ""hi"" to the dog"\r\n'
    "\r\n"
    "b.png,two\r\n"
)


def test_kaggle_captions_keep_commas_quotes_and_order(tmp_path):
    path = tmp_path / "captions.txt"
    path.write_bytes(KAGGLE_TEXT.encode())
    parsed = parse_kaggle_captions(path)
    assert parsed.captions == {
        "a.jpg": [
            "A child in a pink dress is climbing up a set of stairs .",
            "A girl, small and happy, climbs stairs .",
            "A dog, a cat and a bird .",
        ],
        "b.png": ['He said "hi" to the dog', "two"],
    }
    assert parsed.lines == 5
    assert load_captions(tmp_path).captions == parsed.captions


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("img,text\na.jpg,x\n", ":1: expected the header 'image,caption'"),
        ("image,caption\na.jpg\n", ":2: expected '<image file>,<caption>'"),
        ("image,caption\na.jpg,ok\nnotes.txt,hello\n", ":3: expected '<image file>,<caption>'"),
        ("image,caption\na.jpg,ok\na.jpg,  \n", ":3: empty caption for 'a.jpg'"),
        ("image,caption\n../x.jpg,ok\n", ":2: expected"),
    ],
)
def test_kaggle_caption_errors_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "captions.txt"
    path.write_text(text)
    with pytest.raises(AnnotationError, match=message) as error:
        parse_kaggle_captions(path)
    assert str(path) in str(error.value)


def test_kaggle_non_utf8_names_the_line(tmp_path):
    path = tmp_path / "captions.txt"
    path.write_bytes(b"image,caption\na.jpg,ok\na.jpg,caf\xe9\n")
    with pytest.raises(AnnotationError, match=r"captions.txt:3: not valid UTF-8"):
        parse_kaggle_captions(path)


def test_byte_order_mark_and_windows_line_endings(tmp_path):
    path = tmp_path / "Flickr8k.token.txt"
    path.write_bytes(b"\xef\xbb\xbfa.jpg#0\tone\r\na.jpg#1\ttwo\r\n")
    assert parse_token_file(path).captions == {"a.jpg": ["one", "two"]}


def test_split_file_with_byte_order_mark_keeps_its_first_image(tmp_path):
    (tmp_path / "Flickr8k.token.txt").write_text("a.jpg#0\tone\nb.jpg#0\ttwo\n", encoding="utf-8")
    (tmp_path / "Flickr_8k.testImages.txt").write_bytes(b"\xef\xbb\xbfa.jpg\r\nb.jpg\r\n")
    splits = read_splits(tmp_path)
    assert splits == {"test": ["a.jpg", "b.jpg"]}
    candidates = split_candidates(load_captions(tmp_path).captions, splits, "test")
    assert candidates.images == ["a.jpg", "b.jpg"] and candidates.without_captions == []


def test_judgment_files_with_byte_order_mark(tmp_path):
    from capsearch.evaluation.human_agreement import read_crowdflower_judgments, read_expert_judgments

    expert = tmp_path / "ExpertAnnotations.txt"
    expert.write_bytes(b"\xef\xbb\xbfa.jpg\tb.jpg#2\t1\t2\t3\n")
    crowd = tmp_path / "CrowdFlowerAnnotations.txt"
    crowd.write_bytes(b"\xef\xbb\xbfa.jpg\tb.jpg#2\t0.5\t2\t1\n")
    assert read_expert_judgments(expert)[0].image == "a.jpg"
    assert read_crowdflower_judgments(crowd)[0].image == "a.jpg"


def test_missing_split_file_is_an_error_only_when_asked_for(tmp_path):
    (tmp_path / "captions.txt").write_text("image,caption\na.jpg,x\n")
    splits = read_splits(tmp_path)
    assert splits == {}
    assert split_candidates({"a.jpg": ["x"]}, splits, "all").images == ["a.jpg"]
    with pytest.raises(ValueError, match=r"subset.split: 'test' needs Flickr_8k.testImages.txt.* use split: all"):
        split_candidates({"a.jpg": ["x"]}, splits, "test")


def test_image_in_split_file_without_captions_is_excluded_with_reason():
    candidates = split_candidates({"a.jpg": ["x"]}, {"test": ["a.jpg", "ghost.jpg"]}, "test")
    assert candidates.images == ["a.jpg"] and candidates.without_captions == ["ghost.jpg"]


def _kaggle_folder(root: Path, count: int = 12, splits: bool = False) -> Path:
    folder = root / "kaggle"
    (folder / "Images").mkdir(parents=True)
    lines = ["image,caption"]
    for i in range(count):
        name = f"img_{i:02d}.jpg"
        Image.new("RGB", (40 + i, 30), (20 * i, 100, 200)).save(folder / "Images" / name)
        lines += [f'{name},"A box, number {i}, caption {k} ."' for k in range(5)]
    (folder / "Images" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    lines += ['broken.jpg,"a, b"'] * 5
    (folder / "captions.txt").write_text("\n".join(lines) + "\n")
    if splits:
        names = [f"img_{i:02d}.jpg" for i in range(count)]
        (folder / "Flickr_8k.testImages.txt").write_text("\n".join([*names[:4], "broken.jpg"]) + "\n")
        (folder / "Flickr_8k.devImages.txt").write_text("\n".join(names[4:8]) + "\n")
        (folder / "Flickr_8k.trainImages.txt").write_text("\n".join(names[8:]) + "\n")
    return folder


def test_pack_kaggle_folder_writes_release_shaped_zips(tmp_path):
    folder = _kaggle_folder(tmp_path, splits=True)
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


def test_fetch_and_subset_stages_accept_the_kaggle_layout(tmp_path):
    folder = _kaggle_folder(tmp_path)
    workspace = tmp_path / "ws"
    workspace.mkdir()
    params = {
        "fetch": {"images_url": "unused", "images_md5": "0", "text_url": "unused", "text_md5": "0"},
        "subset": {"split": "all", "num_images": "all", "seed": 0},
    }
    params["fetch"]["kaggle_dir"] = str(folder)
    fetched = run_stage(workspace, "fetch", params)
    assert fetched.returncode == 0, fetched.stderr
    assert "13 images packed" in fetched.stdout
    subset = run_stage(workspace, "subset")
    assert subset.returncode == 0, subset.stderr
    assert "12 images, 60 captions, 1 excluded" in subset.stdout
    captions = (workspace / "data/subset/references.csv").read_text()
    assert '"A box, number 3, caption 4 ."' in captions  # commas survive into the CSV, quoted
    excluded = (workspace / "data/subset/excluded.csv").read_text()
    assert "broken.jpg" in excluded
    params["subset"]["split"] = "test"
    refused = run_stage(workspace, "subset", params)
    assert refused.returncode != 0
    assert "[subset] error: subset.split: 'test' needs Flickr_8k.testImages.txt" in refused.stderr


def test_embed_texts_stage_truncates_and_counts_overlong_captions(toy_models, tmp_path):
    import json

    from capsearch.io import write_csv

    long_caption = "a dog , " * 120  # ~240 tokens, over CLIP's 77
    write_csv(tmp_path / "data/subset/references.csv", ["image_id", "caption_index", "caption"],
              [("a.jpg", 0, "a red circle"), ("a.jpg", 1, long_caption), ("b.jpg", 0, "a blue square")])  # fmt: skip
    write_csv(tmp_path / "data/captions/generated.csv", ["image_id", "caption"], [("a.jpg", "a red"), ("b.jpg", "x")])
    params = {
        "clip": {"model": str(toy_models / "toy-clip"), "revision": "main", "precision": "fp32"},
        "runtime": {"device": "cpu", "cache": False},
    }
    result = run_stage(tmp_path, "embed_texts", params)
    assert result.returncode == 0, result.stderr
    assert "1 truncated to 77 tokens" in result.stdout  # the plain and the prefixed copy: the summary counts plain
    counts = json.loads((tmp_path / "data/embeddings/texts.json").read_text())
    assert counts["reference_truncated"] == 1 and counts["reference_captions"] == 3
