"""Caption images, then embed the images and their generated captions: the sequence search and fusion need, and
the folder index built from it (``capsearch index``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from capsearch.data.images import ImageSource, find_images
from capsearch.index import ModelRef, SearchIndex, write_folder_index
from capsearch.models.captioner import Captioner, DecodingSettings
from capsearch.models.embedder import DualEncoder
from capsearch.models.runtime import Runtime
from capsearch.params import IndexParams


@dataclass
class CaptionedImages:
    """Row i of each field belongs to image ``ids[i]``; ``skipped``: the images that could not be decoded."""

    ids: list[str]
    generated: list[str]
    image_vectors: np.ndarray
    generated_vectors: np.ndarray
    skipped: list[tuple[str, str]]


def caption_and_embed(
    source: ImageSource,
    image_ids: Sequence[str],
    captioner: Captioner,
    embedder: DualEncoder,
    settings: DecodingSettings,
    runtime: Runtime,
) -> CaptionedImages:
    """Generated captions, image embeddings and generated-caption embeddings of the readable ones of ``image_ids``,
    in that order; ``skipped`` lists the unreadable ones (id, reason).

    The same code paths as the caption, embed_images and embed_texts stages, with ``runtime``'s batch sizes,
    decoding workers, decode path and result cache.
    """
    sizes, workers, cache, decode = runtime.batch_sizes, runtime.num_workers, runtime.cache, runtime.decode
    generated = captioner.caption_images(
        source,
        image_ids,
        settings,
        runtime.batch_for("caption", captioner.family),
        workers,
        cache,
        decode,
        skip_unreadable=True,
    )
    skipped = captioner.last_run.skipped
    unreadable = {image_id for image_id, _ in skipped}
    ids = [image_id for image_id in image_ids if image_id not in unreadable]
    image_vectors = embedder.embed_images(source, ids, sizes["embed_images"], workers, cache, decode)
    generated_vectors = embedder.embed_texts(generated, sizes["embed_texts"]).vectors
    return CaptionedImages(ids, generated, image_vectors, generated_vectors, skipped)


def index_folder(
    folder: str | Path,
    out_dir: str | Path,
    captioner: Captioner,
    embedder: DualEncoder,
    settings: DecodingSettings,
    runtime: Runtime,
    ann: IndexParams | None = None,
) -> tuple[SearchIndex, list[tuple[str, str]]]:
    """Caption and embed every image under ``folder`` (the pipeline's code path) and save a folder index.

    Unreadable images are skipped and returned with the reason (also listed in ``skipped.csv``). With the
    ``runtime``'s result cache, images already captioned/embedded by the same models are not recomputed
    (re-indexing a folder after adding photos only processes the new ones).
    """
    folder = Path(folder).resolve()
    badly_named: list[tuple[str, str]] = []
    files = find_images([folder], badly_named)
    source = ImageSource(folder)
    run = caption_and_embed(source, [str(p.relative_to(folder)) for p in files], captioner, embedder, settings, runtime)
    run.skipped = [*((os.path.relpath(name, folder), why) for name, why in badly_named), *run.skipped]
    if not run.ids:
        raise FileNotFoundError(f"{folder}: none of the {len(files) + len(badly_named)} images could be used")
    clip = ModelRef(embedder.model_id, embedder.source.load_revision, embedder.precision)
    made_by = ModelRef(captioner.model_id, captioner.source.load_revision, captioner.precision)
    index = SearchIndex(run.ids, run.image_vectors, run.generated, run.generated_vectors, source, clip, made_by)
    write_folder_index(index, out_dir, run.skipped, ann)
    return index, run.skipped
