"""Choosing a deterministic subset of Flickr8k and proving every chosen image decodes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from capsearch.data.flickr8k import (
    KAGGLE_CAPTIONS,
    TOKEN_FILE,
    load_captions,
    read_splits,
    sampling_order,
    split_candidates,
)
from capsearch.data.images import ImageReadError, ImageSource
from capsearch.progress import progress


@dataclass
class Subset:
    """The chosen images (sorted by id) with their reference captions, and every image left out with the reason."""

    images: list[tuple[str, int, int]]  # (image_id, width, height)
    references: list[tuple[str, int, str]]  # (image_id, caption_index, caption)
    excluded: list[tuple[str, str]] = field(default_factory=list)  # (image_id, reason)
    stray_keys_folded: int = 0
    in_no_split: int = 0


def find_text_dir(extracted: str | Path) -> Path:
    """The folder holding ``Flickr8k.token.txt`` (or Kaggle's ``captions.txt``) in an extracted text zip."""
    found = sorted(Path(extracted).rglob(TOKEN_FILE)) or sorted(Path(extracted).rglob(KAGGLE_CAPTIONS))
    if not found:
        raise FileNotFoundError(f"neither {TOKEN_FILE} nor {KAGGLE_CAPTIONS} found under {extracted}; re-run fetch")
    return found[0].parent


def build_subset(
    text_dir: str | Path, images: ImageSource, split: str, num_images: int | str, seed: int, section: str = "subset"
) -> Subset:
    """Pick ``num_images`` decodable images of ``split`` in a seeded order; ``all`` takes every one.

    ``section`` names the params section in errors (``subset``, or ``fusion`` for the tuning sample).

    Images are tried in a seeded permutation of the split; an image missing from the archive or failing to
    decode is excluded with its reason and the next one is tried, so the subset has exactly ``num_images`` good
    images (or an error says the split is too small). Output order is sorted by image id.
    """
    wanted = None if num_images == "all" else int(num_images)
    text_dir = Path(text_dir)
    caption_file = load_captions(text_dir)
    candidates = split_candidates(caption_file.captions, read_splits(text_dir), split, section)
    if wanted is not None and wanted > len(candidates.images):
        raise ValueError(
            f"{section}.num_images: {wanted} is larger than the {len(candidates.images)} captioned images of split "
            f"{split!r}; use a smaller num_images or 'all'"
        )
    available = set(images.ids())
    chosen: list[tuple[str, int, int]] = []
    excluded: list[tuple[str, str]] = [
        (image, "in split file but has no captions") for image in candidates.without_captions
    ]
    order = sampling_order(candidates.images, seed)
    target = len(order) if wanted is None else wanted
    with progress(total=target, desc="check images", unit="img") as bar:  # "all": every readable image
        for image_id in order:
            if len(chosen) == target:
                break
            if image_id not in available:
                excluded.append((image_id, "not in the image archive"))
                continue
            try:
                width, height = images.check(image_id)
            except ImageReadError as exc:
                excluded.append((image_id, str(exc).split(": ", 1)[-1]))
                continue
            chosen.append((image_id, width, height))
            bar.update()
    if wanted is not None and len(chosen) < target:
        raise ValueError(
            f"{section}.num_images: only {len(chosen)} of the {len(order)} images of split {split!r} are readable "
            f"({len(excluded)} excluded); use a smaller num_images"
        )
    chosen.sort()
    references = [
        (image_id, i, text) for image_id, _, _ in chosen for i, text in enumerate(caption_file.captions[image_id])
    ]
    return Subset(
        images=chosen,
        references=references,
        excluded=sorted(excluded),
        stray_keys_folded=caption_file.stray_keys_folded,
        in_no_split=candidates.in_no_split,
    )
