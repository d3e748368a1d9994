"""data/webdataset.py and the shard side of ImageSource and build_subset: img2dataset's layout, read by offset."""

from __future__ import annotations

import io
import tarfile
from collections import Counter
from pathlib import Path

import pytest

from capsearch.data.images import ImageReadError, ImageSource
from capsearch.data.subset import build_subset
from capsearch.data.webdataset import (
    ShardError,
    ShardReader,
    describe_unread,
    index_shard,
    is_shard_spec,
    resolve_shards,
    sample_key,
    split_of,
    unread_files,
)
from capsearch.demo.shards import write_webdataset_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three shards of 24 generated samples; the 30th image (second shard) is not a decodable image."""
    return write_webdataset_shards(tmp_path_factory.mktemp("wds") / "shards", 72, 24, seed=4, corrupt=(29,))


def test_shards_have_img2dataset_layout_and_read_back_by_offset(shards):
    with tarfile.open(shards[1]) as tar:
        names = tar.getnames()
        assert names[:3] == ["000010000.jpg", "000010000.txt", "000010000.json"]
        caption = tar.extractfile("000010003.txt").read().decode()
        jpeg = tar.extractfile("000010003.jpg").read()
    reader = ShardReader(shards[1])
    assert reader.read("000010003.jpg") == jpeg
    assert reader.caption_of("000010003.jpg") == caption.strip()
    assert len(reader.images()) == 24
    assert write_webdataset_shards(shards[0].parent.parent / "again", 72, 24, seed=4, corrupt=(29,))[
        1
    ].read_bytes() == (shards[1].read_bytes())


def test_a_folder_a_list_file_a_glob_and_one_tar_name_the_same_shards(shards, tmp_path):
    folder = shards[0].parent
    listing = tmp_path / "shards.txt"
    listing.write_text(f"# the shards\n{shards[0]}\n\n{folder.name}/{shards[1].name}  # relative to the list\n")
    (tmp_path / folder.name).symlink_to(folder)
    assert resolve_shards(folder) == shards
    assert resolve_shards(listing) == [shards[0], tmp_path / folder.name / shards[1].name]
    assert resolve_shards(str(folder / "0000[12].tar")) == shards[1:]
    assert resolve_shards(shards[2]) == [shards[2]]
    assert all(is_shard_spec(spec) for spec in (folder, listing, str(folder / "*.tar"), shards[0]))
    assert not is_shard_spec(tmp_path / "nothing-here")


def test_a_list_file_naming_a_missing_shard_names_the_line(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("a.tar\nb.tar\n")
    (tmp_path / "a.tar").write_bytes(b"")
    with pytest.raises(ShardError, match=r"list\.txt:2: shard 'b\.tar' not found"):
        resolve_shards(listing)
    with pytest.raises(ShardError, match=r"no \.tar files match"):
        resolve_shards(str(tmp_path / "*.nothing.tar"))


@pytest.mark.parametrize(("cut", "why"), [(0.5, "truncated inside member"), (-10240, "no end-of-archive")])
def test_a_truncated_shard_is_refused_naming_it(shards, tmp_path, cut, why):
    data = shards[0].read_bytes()
    end = int(len(data) * cut) if cut > 0 else len(data) + cut
    broken = tmp_path / "00007.tar"
    # cut where the tar's own reader would stop without complaint: between members (no end-of-archive blocks)
    if cut < 0:
        with tarfile.open(shards[0]) as tar:
            members = tar.getmembers()
        end = members[-3].offset
    broken.write_bytes(data[:end])
    with pytest.raises(ShardError, match=rf"00007\.tar: .*{why}"):
        index_shard(broken)
    with pytest.raises(ShardError, match=r"00007\.tar"):
        ImageSource(broken)


def test_keys_and_hash_splits(shards):
    assert sample_key("000010003.jpg") == "000010003"
    assert sample_key("dir/abc.def.jpg") == "dir/abc"
    keys = [f"{i:09d}" for i in range(5000)]
    counts = Counter(split_of(k) for k in keys)
    assert abs(counts["test"] / 5000 - 0.2) < 0.03 and abs(counts["dev"] / 5000 - 0.2) < 0.03
    assert [split_of(k) for k in keys[:50]] == [split_of(k) for k in keys[:50]]  # stable


def test_image_source_over_shards(shards):
    source = ImageSource(shards[0].parent)
    ids = source.ids()
    assert len(ids) == 72 and ids[0] == "000000000.jpg" and ids[24] == "000010000.jpg"
    assert source.shard_of("000010000.jpg") == shards[1]
    assert source.describe("000010000.jpg") == f"{shards[1]}:000010000.jpg"
    assert source.check("000010004.jpg")[0] > 0
    with pytest.raises(ImageReadError, match=r"00001\.tar:000010005\.jpg: cannot identify image format"):
        source.check("000010005.jpg")
    with pytest.raises(ImageReadError, match="in none of the 3 shards"):
        source.shard_of("nope.jpg")


def test_an_image_name_in_two_shards_is_refused(shards, tmp_path):
    (tmp_path / "s").mkdir()
    for name in ("00000.tar", "00001.tar"):
        (tmp_path / "s" / name).write_bytes(shards[0].read_bytes())
    with pytest.raises(ShardError, match=r"image '000000000\.jpg' is also in .*00000\.tar"):
        ImageSource(tmp_path / "s")


def test_subset_of_shards_has_one_caption_per_image_by_hash_split(shards, tmp_path):
    source = ImageSource(shards[0].parent)
    everything = build_subset(None, source, "all", "all", 0)
    assert len(everything.images) == 71  # the corrupt one excluded, with its reason
    assert everything.excluded == [("000010005.jpg", everything.excluded[0][1])]
    assert "cannot identify image format" in everything.excluded[0][1]
    assert [(i, n) for i, n, _ in everything.references] == [(row[0], 0) for row in everything.images]
    by_id = {i: text for i, _, text in everything.references}
    assert by_id["000020001.jpg"] == source.caption_of("000020001.jpg")
    assert [row[3] for row in everything.images] == sorted(row[3] for row in everything.images)  # shard order
    test = build_subset(None, source, "test", 5, seed=1)
    assert len(test.images) == 5
    assert all(split_of(sample_key(row[0])) == "test" for row in test.images)
    assert build_subset(None, source, "test", 5, seed=1).images == test.images
    with pytest.raises(ValueError, match=r"subset\.num_images: 60 is larger than the \d+ captioned images"):
        build_subset(None, source, "test", 60, seed=1)


def test_an_image_without_caption_is_excluded_with_the_reason(tmp_path):
    shard = tmp_path / "00000.tar"
    good = write_webdataset_shards(tmp_path / "g", 2, 2, seed=1)[0]
    with tarfile.open(good) as src, tarfile.open(shard, "w") as tar:
        for info in src.getmembers():
            if info.name != "000000001.txt":
                tar.addfile(info, io.BytesIO(src.extractfile(info).read()))
    subset = build_subset(None, ImageSource(shard), "all", "all", 0)
    assert [row[0] for row in subset.images] == ["000000000.jpg"]
    assert subset.excluded == [("000000001.jpg", "no caption (KEY.txt) beside it in its shard")]


def rewritten(good: Path, shard: Path, change) -> Path:
    """``good`` copied member by member into ``shard``, ``change(info, data)`` giving each member's new bytes (None:
    left out); returns ``shard``."""
    with tarfile.open(good) as src, tarfile.open(shard, "w") as tar:
        for info in src.getmembers():
            data = change(info, src.extractfile(info).read())
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return shard


def test_a_caption_that_is_not_utf8_excludes_its_image_with_the_reason(tmp_path):
    good = write_webdataset_shards(tmp_path / "g", 3, 3, seed=1)[0]
    latin1 = "un café au soleil".encode("latin-1")
    shard = rewritten(good, tmp_path / "00000.tar", lambda info, data: latin1 if info.name == "000000001.txt" else data)
    subset = build_subset(None, ImageSource(shard), "all", "all", 0)
    assert [row[0] for row in subset.images] == ["000000000.jpg", "000000002.jpg"]
    assert subset.excluded == [("000000001.jpg", "caption 000000001.txt is not UTF-8 text (byte 0xe9 at 6)")]
    assert all("\ufffd" not in text for _, _, text in subset.references)


def test_a_member_name_twice_in_one_shard_is_refused(tmp_path):
    good = write_webdataset_shards(tmp_path / "g", 2, 2, seed=1)[0]
    shard = tmp_path / "00000.tar"
    with tarfile.open(good) as src, tarfile.open(shard, "w") as tar:
        members = src.getmembers()
        for info in [*members, members[0]]:
            tar.addfile(info, io.BytesIO(src.extractfile(info).read()))
    with pytest.raises(ShardError, match=r"00000\.tar: member '000000000\.jpg' appears twice"):
        index_shard(shard)


def test_files_of_a_shard_folder_that_are_not_read_are_named(shards, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "00000.tar").write_bytes(shards[0].read_bytes())
    (folder / "notes.md").write_text("about these shards")
    assert resolve_shards(folder) == [folder / "00000.tar"]
    assert unread_files(folder) == [folder / "notes.md"]
    assert describe_unread(unread_files(folder)) == "1 file in the shard folder not read: notes.md"
    (folder / "00001.tar.gz").write_bytes(b"compressed")  # a part of the collection: refused, not left out
    refused = r"mixed: 1 compressed shard \(00001.tar.gz\), which are not read .*: decompress them to .tar, or name"
    with pytest.raises(ShardError, match=refused):
        resolve_shards(folder)
    with pytest.raises(ShardError, match=r"matches compressed shards \(00001.tar.gz\)"):
        resolve_shards(str(folder / "*.tar*"))
    assert describe_unread(unread_files(folder)) == (
        "2 files in the shard folder not read: 00001.tar.gz, notes.md (compressed shards are not read: "
        "decompress them to .tar)"
    )
    assert unread_files(shards[0]) == [] and describe_unread([]) == ""
