"""Choosing a deterministic subset of Flickr8k, Flickr30k, COCO, webdataset shards or a captioned image folder and
proving every chosen image decodes."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
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
from capsearch.data.hf_dataset import read_saved_captions
from capsearch.data.imagefolder import read_imagefolder
from capsearch.data.images import ImageReadError, ImageSource, source_images
from capsearch.data.karpathy import KARPATHY_FILES, parse_karpathy_json
from capsearch.data.webdataset import CaptionError, sample_key, split_of
from capsearch.progress import progress


@dataclass
class Subset:
    """The chosen images (sorted by id; shard sources: by shard, then id) with their reference captions, and every
    image left out with the reason."""

    images: list[tuple[str, int, int, str]]  # (image_id, width, height, shard it is read from)
    references: list[tuple[str, int, str]]  # (image_id, caption_index, caption)
    excluded: list[tuple[str, str]] = field(default_factory=list)  # (image_id, reason)
    stray_keys_folded: int = 0
    in_no_split: int = 0


def find_text_dir(extracted: str | Path, kind: str = "flickr8k") -> Path:
    """The folder holding the annotations of a ``kind`` source in fetch's text folder: ``Flickr8k.token.txt`` (or
    Kaggle's ``captions.txt``), or the Karpathy split file (``dataset_flickr30k.json``, ``dataset_coco.json``)."""
    if kind in KARPATHY_FILES:
        found = sorted(Path(extracted).rglob(KARPATHY_FILES[kind]))
        if not found:
            raise FileNotFoundError(f"{KARPATHY_FILES[kind]} not found under {extracted}; re-run fetch")
        return found[0].parent
    found = sorted(Path(extracted).rglob(TOKEN_FILE)) or sorted(Path(extracted).rglob(KAGGLE_CAPTIONS))
    if not found:
        raise FileNotFoundError(f"neither {TOKEN_FILE} nor {KAGGLE_CAPTIONS} found under {extracted}; re-run fetch")
    return found[0].parent


def open_source(kind: str, images: Path, extracted_text: Path) -> tuple[ImageSource, Path | None]:
    """The images of a source and the folder of its annotations: fetch's text folder (``extracted_text``) for the
    downloaded sources, the folder itself for an imagefolder, fetch's saved folder for a Hugging Face dataset, None
    for shards (their captions are inside)."""
    source = source_images(kind, images)
    if kind == "webdataset":
        return source, None
    if kind == "imagefolder":
        return source, Path(images)
    if kind == "hf_dataset":
        return source, source.location  # the saved dataset holds the captions beside the images
    return source, find_text_dir(extracted_text, kind)


def _too_many(param: str, wanted: int, available: int, split: str) -> ValueError:
    return ValueError(
        f"{param}: {wanted} is larger than the {available} captioned images of split {split!r}; "
        f"use a smaller {param.rsplit('.', 1)[-1]} or 'all'"
    )


CHECKS_PER_TASK = 64  # images one worker process checks per task
_SOURCE: ImageSource | None = None  # the source being checked, inherited by the forked worker processes


def _check(image_id: str) -> tuple[int, int] | str:
    """The upright size of a decodable image of :data:`_SOURCE`, else the reason it is not."""
    assert _SOURCE is not None
    try:
        return _SOURCE.check(image_id)
    except ImageReadError as exc:
        return str(exc).split(": ", 1)[-1]


def _check_many(image_ids: list[str]) -> list[tuple[int, int] | str]:
    return [_check(image_id) for image_id in image_ids]


def _checked(images: ImageSource, ids: list[str], workers: int) -> Iterator[tuple[int, int] | str]:
    """:func:`_check` of each of ``ids``, in order: here, or in ``workers`` forked processes a window at a time
    (so taking the first few of a long list checks only a little more than that)."""
    global _SOURCE
    _SOURCE = images
    try:
        if workers <= 1:
            yield from (_check(image_id) for image_id in ids)
            return
        window = workers * 4 * CHECKS_PER_TASK
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for start in range(0, len(ids), window):
                chunk = ids[start : start + window]
                tasks = [chunk[i : i + CHECKS_PER_TASK] for i in range(0, len(chunk), CHECKS_PER_TASK)]
                for results in pool.map(_check_many, tasks):
                    yield from results
    finally:
        _SOURCE = None


def check_workers(num_workers: int | str) -> int:
    """Processes for subset's decoding checks from ``runtime.num_workers``: ``auto`` is every core (at most 16;
    no model competes for them here), 0 or 1 checks in this process."""
    if num_workers == "auto":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return min(16, cores)
    return max(1, int(num_workers))


def _choose(
    images: ImageSource,
    order: list[str],
    wanted: int | None,
    excluded: list[tuple[str, str]],
    param: str,
    split: str,
    workers: int = 1,
) -> list[tuple[str, int, int, str]]:
    """The first ``wanted`` (None: all) decodable images of ``order``; the others go to ``excluded`` with a reason.
    The decoding checks run in ``workers`` processes; the result does not depend on how many."""
    available = set(images.ids())
    chosen: list[tuple[str, int, int, str]] = []
    target = len(order) if wanted is None else wanted
    checks = _checked(images, [image_id for image_id in order if image_id in available], workers)
    with progress(total=target, desc="check images", unit="img") as bar:  # "all": every readable image
        for image_id in order:
            if len(chosen) == target:
                break
            if image_id not in available:
                excluded.append((image_id, "not in the image archive"))
                continue
            result = next(checks)
            if isinstance(result, str):
                excluded.append((image_id, result))
                continue
            shard = str(images.shard_of(image_id)) if images.shards else str(images.location)
            chosen.append((image_id, *result, shard))
            bar.update()
    checks.close()
    if wanted is not None and len(chosen) < target:
        raise ValueError(
            f"{param}: only {len(chosen)} of the {len(order)} images of split {split!r} are readable "
            f"({len(excluded)} excluded); use a smaller {param.rsplit('.', 1)[-1]}"
        )
    return chosen


def build_subset(
    text_dir: str | Path | None,
    images: ImageSource,
    split: str,
    num_images: int | str,
    seed: int,
    section: str = "subset",
    workers: int = 1,
    kind: str = "flickr8k",
    count_param: str | None = None,
    columns: tuple[str, str | None] = ("text", None),
    at_most: bool = False,
) -> Subset:
    """Pick ``num_images`` decodable images of ``split`` in a seeded order; ``all`` takes every one.

    ``section`` names the params section in errors (``subset``, or ``fusion`` for the tuning sample), and
    ``count_param`` the param ``num_images`` comes from (default ``<section>.num_images``). Flickr8k
    reads its captions and splits from ``text_dir``, Flickr30k and COCO (``kind``) from the Karpathy split file
    there (:mod:`capsearch.data.karpathy`), an imagefolder from its metadata file(s) in ``text_dir`` with the
    caption and split ``columns`` (:mod:`capsearch.data.imagefolder`), a Hugging Face dataset from the folder fetch
    saved (:mod:`capsearch.data.hf_dataset`); webdataset shards (``text_dir`` None) carry
    one caption per image (``KEY.txt``) and are split by a hash of the key
    (:func:`capsearch.data.webdataset.split_of`). The decoding checks run in ``workers`` processes (the same subset
    for any number).

    Images are tried in a seeded permutation of the split; an image missing from the archive or failing to
    decode is excluded with its reason and the next one is tried, so the subset has exactly ``num_images`` good
    images (or an error says the split is too small). With ``at_most``, ``num_images`` is a ceiling: a smaller
    split gives all its readable images (fine-tuning's samples, whose defaults must work on a small collection).
    """
    count_param = count_param or f"{section}.num_images"
    if images.shards:
        return _build_shard_subset(images, split, num_images, seed, count_param, workers, at_most)
    if text_dir is None:
        raise ValueError("a Flickr8k subset needs the extracted text folder")
    wanted = None if num_images == "all" else int(num_images)
    text_dir = Path(text_dir)
    stray_keys_folded = 0
    if kind in KARPATHY_FILES:
        karpathy = parse_karpathy_json(text_dir / KARPATHY_FILES[kind])
        captions, splits = karpathy.captions.captions, karpathy.splits
        stray_keys_folded = karpathy.captions.stray_keys_folded
    elif kind == "imagefolder":
        folder = read_imagefolder(text_dir, *columns)
        captions = folder.captions
        splits = {name: [i for i, s in folder.split_of.items() if s == name] for name in ("train", "dev", "test")}
    elif kind == "hf_dataset":
        captions, splits = read_saved_captions(text_dir)
    else:
        caption_file = load_captions(text_dir)
        captions, splits = caption_file.captions, read_splits(text_dir)
        stray_keys_folded = caption_file.stray_keys_folded
    candidates = split_candidates(captions, splits, split, section)
    if at_most and wanted is not None and wanted >= len(candidates.images):
        wanted = None
    if wanted is not None and wanted > len(candidates.images):
        raise _too_many(count_param, wanted, len(candidates.images), split)
    excluded: list[tuple[str, str]] = [
        (image, "in split file but has no captions") for image in candidates.without_captions
    ]
    chosen = _choose(images, sampling_order(candidates.images, seed), wanted, excluded, count_param, split, workers)
    chosen.sort()
    references = [(image_id, i, text) for image_id, *_ in chosen for i, text in enumerate(captions[image_id])]
    return Subset(
        images=chosen,
        references=references,
        excluded=sorted(excluded),
        stray_keys_folded=stray_keys_folded,
        in_no_split=candidates.in_no_split,
    )


def _build_shard_subset(
    images: ImageSource,
    split: str,
    num_images: int | str,
    seed: int,
    count_param: str,
    workers: int,
    at_most: bool = False,
) -> Subset:
    """:func:`build_subset` over webdataset shards: one reference caption per image, splits by key hash."""
    wanted = None if num_images == "all" else int(num_images)
    captions: dict[str, str] = {}
    excluded: list[tuple[str, str]] = []
    for image_id in images.ids():
        if split != "all" and split_of(sample_key(image_id)) != split:
            continue
        try:
            caption = images.caption_of(image_id)
        except CaptionError as exc:
            excluded.append((image_id, str(exc)))
            continue
        if caption:
            captions[image_id] = caption
        else:
            excluded.append((image_id, "no caption (KEY.txt) beside it in its shard"))
    if at_most and wanted is not None and wanted >= len(captions):
        wanted = None
    if wanted is not None and wanted > len(captions):
        raise _too_many(count_param, wanted, len(captions), split)
    chosen = _choose(images, sampling_order(sorted(captions), seed), wanted, excluded, count_param, split, workers)
    shard_order = {str(reader.path): i for i, reader in enumerate(images.shards)}
    chosen.sort(key=lambda row: (shard_order[row[3]], row[0]))
    references = [(image_id, 0, captions[image_id]) for image_id, *_ in chosen]
    return Subset(images=chosen, references=references, excluded=sorted(excluded))
