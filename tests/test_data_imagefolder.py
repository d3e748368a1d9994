"""data.imagefolder: captioned image folders in the Hugging Face ImageFolder layout (metadata.jsonl / .csv, split
subfolders, a split column, or the stable hash split), and every bad metadata file refused in one line naming the file
and the line."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from capsearch.data.imagefolder import MetadataError, read_imagefolder
from capsearch.data.images import source_images
from capsearch.data.subset import build_subset, open_source
from capsearch.data.webdataset import split_of
from capsearch.demo.radiology import write_radiology_imagefolder


def _images(folder, *names):
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 24), (200, 30, 30)).save(folder / name)


def test_split_subfolders_with_a_list_of_captions_per_image(tmp_path):
    root = write_radiology_imagefolder(tmp_path / "films", 40, seed=3)
    folder = read_imagefolder(root)
    assert folder.split_from == "folders" and len(folder.captions) == 40
    assert {folder.split_of[i] for i in folder.captions} == {"train", "dev", "test"}
    assert all(i.split("/")[0] in ("train", "validation", "test") for i in folder.captions)  # ids: relative paths
    assert all(len(texts) == 3 for texts in folder.captions.values())
    source, text_dir = open_source("imagefolder", root, tmp_path / "unused")
    assert text_dir == root and source.ids() == sorted(folder.captions)
    subset = build_subset(text_dir, source, "test", "all", 0, kind="imagefolder")
    test_ids = sorted(i for i, s in folder.split_of.items() if s == "test")
    assert [row[0] for row in subset.images] == test_ids and subset.images[0][1:3] == (96, 96)
    assert len(subset.references) == 3 * len(test_ids)


def test_csv_with_repeated_rows_a_split_column_or_the_hash_split(tmp_path):
    _images(tmp_path, "a.jpg", "b.jpg", "sub/c.png")
    (tmp_path / "metadata.csv").write_text(
        'file_name,caption,part\na.jpg,a red thing,train\na.jpg,"red, and square",train\nb.jpg,blue,VAL\n'
        "sub/c.png,green,test\n"
    )
    folder = read_imagefolder(tmp_path, "caption", "part")
    assert folder.captions == {"a.jpg": ["a red thing", "red, and square"], "b.jpg": ["blue"], "sub/c.png": ["green"]}
    assert folder.split_of == {"a.jpg": "train", "b.jpg": "dev", "sub/c.png": "test"}
    hashed = read_imagefolder(tmp_path, "caption")  # no split column, no split folders: the stable hash split
    assert hashed.split_from == "hash" and hashed.split_of == {i: split_of(i) for i in hashed.captions}
    subset = build_subset(tmp_path, source_images("imagefolder", tmp_path), "all", "all", 0, kind="imagefolder",
                          columns=("caption", "part"))  # fmt: skip
    assert [row[0] for row in subset.images] == ["a.jpg", "b.jpg", "sub/c.png"]


J, C = "metadata.jsonl", "metadata.csv"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "metadata.jsonl",
            '{"file_name": "a.jpg", "text": "ok"}\n{"file_name": "a.jpg", "text": \n',
            ":2: invalid JSON",
        ),
        (
            "metadata.jsonl",
            '{"file_name": "a.jpg", "caption": "x"}\n',
            ":1: no 'text' column (the row has file_name, caption)",
        ),
        (J, '{"file_name": "missing.jpg", "text": "x"}\n', ":1: file_name 'missing.jpg': no such file"),
        (J, '{"file_name": "../a.jpg", "text": "x"}\n', ":1: file_name '../a.jpg' leaves the folder"),
        (
            "metadata.jsonl",
            '{"file_name": "/etc/passwd", "text": "x"}\n',
            ":1: file_name '/etc/passwd' leaves the folder",
        ),
        (J, '{"file_name": "a.jpg", "text": ["fine", "  "]}\n', ":1: empty caption in column 'text'"),
        (J, '["a.jpg", "x"]\n', ":1: expected a JSON object, got list"),
        (C, "file_name,text\na.jpg,fine\na.jpg\n", ":3: expected 2 columns (file_name, text)"),
        (C, 'file_name,text\na.jpg,"open quote\n', ":2: invalid CSV"),
        (C, "file_name,text,split\na.jpg,x,holdout\n", ":2: split 'holdout' is no split"),
        (
            J,
            '{"file_name": "a.jpg", "text": "ok"}\n{"file_name": "a.jpg", "text": "\\ud800"}\n',
            ":2: text '\\ud800'",
        ),
        (J, '{"file_name": "a\\nb.jpg", "text": "x"}\n', ":1: file_name 'a\\nb.jpg' holds a control character (U+000A"),
        (J, '{"file_name": "a\\u0000.jpg", "text": "x"}\n', ":1: file_name 'a\\x00.jpg' holds a control character"),
        (J, '{"file_name": "a\\fb.jpg", "text": "x"}\n', ":1: file_name 'a\\x0cb.jpg' holds a control character"),
        (J, json.dumps({"file_name": "x" * 300 + ".jpg", "text": "x"}) + "\n", "(304 characters): File name too long"),
        (J, b'{"file_name": "a.jpg", "text": "caf\xe9"}\n', ":1: not UTF-8 (byte 0xe9); save the file as UTF-8"),
        (C, b"file_name,text\na.jpg,fine\na.jpg,caf\xe9\n", ":3: not UTF-8 (byte 0xe9)"),
    ],
)
def test_a_bad_metadata_file_is_one_error_naming_file_and_line(tmp_path, name, content, message):
    _images(tmp_path / "data", "a.jpg")
    if isinstance(content, bytes):
        (tmp_path / "data" / name).write_bytes(content)  # latin-1, as a spreadsheet may save it
    else:
        (tmp_path / "data" / name).write_text(content, encoding="utf-8")
    with pytest.raises(MetadataError) as refused:
        read_imagefolder(tmp_path / "data", split_column="split" if "holdout" in str(content) else None)
    text = str(refused.value)
    assert text.startswith(str(tmp_path / "data" / name)) and message in text and "\n" not in text, text


def test_no_metadata_file_says_what_an_imagefolder_needs(tmp_path):
    _images(tmp_path, "a.jpg")
    with pytest.raises(MetadataError, match=r"no metadata.jsonl or metadata.csv .* needs one with a file_name"):
        read_imagefolder(tmp_path)
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"file_name": "a.jpg", "text": "x"}) + "\n")
    (tmp_path / "metadata.csv").write_text("file_name,text\na.jpg,x\n")
    with pytest.raises(MetadataError, match=r"both metadata.jsonl and metadata.csv; keep one"):
        read_imagefolder(tmp_path)


def test_what_hugging_face_reads_capsearch_reads(tmp_path):
    """A raw U+2028 or U+0085 inside a JSON line is text (lines end at \\n); GIF, BMP and TIFF are images; val/ is
    the validation split; metadata both at the top and in a split folder is refused, not half read."""
    _images(tmp_path / "data", "a.jpg")
    for name in ("b.gif", "c.bmp", "d.tiff"):
        Image.new("RGB", (32, 24), (30, 200, 30)).save(tmp_path / "data" / name)
    rows = [{"file_name": "a.jpg", "text": "two\u2028lines\u0085here"}]
    rows += [{"file_name": name, "text": f"a {name}"} for name in ("b.gif", "c.bmp", "d.tiff")]
    lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    (tmp_path / "data" / "metadata.jsonl").write_text(lines, encoding="utf-8")
    folder = read_imagefolder(tmp_path / "data")
    assert folder.captions["a.jpg"] == ["two\u2028lines\u0085here"]
    source, _ = open_source("imagefolder", tmp_path / "data", tmp_path / "unused")
    assert source.ids() == ["a.jpg", "b.gif", "c.bmp", "d.tiff"]
    subset = build_subset(tmp_path / "data", source, "all", "all", 0, kind="imagefolder")
    assert sorted(row[0] for row in subset.images) == ["a.jpg", "b.gif", "c.bmp", "d.tiff"] and not subset.excluded

    split = tmp_path / "split"
    for folder_name in ("train", "val", "test"):
        _images(split / folder_name, "x.jpg")
        (split / folder_name / "metadata.jsonl").write_text(json.dumps({"file_name": "x.jpg", "text": "x"}) + "\n")
    assert read_imagefolder(split).split_of == {"train/x.jpg": "train", "val/x.jpg": "dev", "test/x.jpg": "test"}
    (split / "metadata.jsonl").write_text(json.dumps({"file_name": "train/x.jpg", "text": "x"}) + "\n")
    with pytest.raises(MetadataError, match=r"metadata both at the top \(metadata.jsonl\) and in split folders"):
        read_imagefolder(split)


def test_ids_with_unusual_characters_survive_the_id_files(tmp_path):
    from capsearch.artifacts import read_ids, write_ids

    ids = ["a b.jpg", "two\u2028lines.jpg", "feed\x0c.jpg", "next\u0085.jpg", "café.jpg"]
    write_ids(tmp_path / "ids.txt", ids)
    assert read_ids(tmp_path / "ids.txt") == ids  # one id per \\n, whatever else an id holds
    with pytest.raises(ValueError, match=r"holds a line break: rename the file"):
        write_ids(tmp_path / "ids.txt", ["a\nb.jpg"])
