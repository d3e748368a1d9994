"""data.flickr8k: the caption and split files, with their quirks, errors naming file and line."""

import pytest

from capsearch.data.flickr8k import (
    AnnotationError,
    load_captions,
    parse_kaggle_captions,
    parse_token_file,
    read_splits,
    split_candidates,
)


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


def test_real_token_file_quirks(shared_flickr8k):
    parsed = parse_token_file(shared_flickr8k / "Flickr8k.token.txt")
    assert parsed.lines == 40460
    assert parsed.caption_groups == 8092  # the zip has 8,091 images: one group has no image
    assert parsed.stray_keys == ["2258277193_586949ec62.jpg.1#0"]
    assert parsed.captions["2258277193_586949ec62.jpg"][0] == "people waiting for the subway"
    assert all(len(captions) == 5 for captions in parsed.captions.values())


def test_real_splits(shared_flickr8k):
    parsed = parse_token_file(shared_flickr8k / "Flickr8k.token.txt")
    splits = read_splits(shared_flickr8k)
    assert {name: len(images) for name, images in splits.items()} == {"train": 6000, "dev": 1000, "test": 1000}
    test = split_candidates(parsed.captions, splits, "test")
    assert len(test.images) == 1000 and test.without_captions == []
    assert test.in_no_split == 92
    assert len(split_candidates(parsed.captions, splits, "all").images) == 8092
