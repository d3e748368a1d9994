"""The real Flickr8k annotation files (../shared/flickr8k), parsed with their quirks counted exactly."""

from capsearch.data.flickr8k import parse_token_file, read_splits, split_candidates


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
