"""Caption images, then embed the images and their generated captions: the sequence search and fusion need, and
the folder index built from it (``capsearch index``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from capsearch.data.images import ImageSource, find_images, readable_images
from capsearch.index import ModelRef, SearchIndex, write_folder_index
from capsearch.models.captioner import Captioner, DecodingSettings
from capsearch.models.embedder import DualEncoder
from capsearch.models.runtime import Runtime
from capsearch.params import IndexParams


@dataclass
class CaptionedImages:
    """Row i of each field belongs to image i."""

    generated: list[str]
    image_vectors: np.ndarray
    generated_vectors: np.ndarray


def caption_and_embed(
    source: ImageSource,
    image_ids: Sequence[str],
    captioner: Captioner,
    embedder: DualEncoder,
    settings: DecodingSettings,
    runtime: Runtime,
) -> CaptionedImages:
    """Generated captions, image embeddings and generated-caption embeddings of ``image_ids``, in that order.

    The same code paths as the caption, embed_images and embed_texts stages, with ``runtime``'s batch sizes,
    decoding workers and result cache.
    """
    sizes, workers, cache = runtime.batch_sizes, runtime.num_workers, runtime.cache
    generated = captioner.caption_images(source, image_ids, settings, sizes["caption"], workers, cache)
    image_vectors = embedder.embed_images(source, image_ids, sizes["embed_images"], workers, cache)
    generated_vectors = embedder.embed_texts(generated, sizes["embed_texts"]).vectors
    return CaptionedImages(generated, image_vectors, generated_vectors)


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
    files = find_images([folder])
    source = ImageSource(folder)
    ids, skipped = readable_images(source, [str(p.relative_to(folder)) for p in files])
    if not ids:
        raise FileNotFoundError(f"{folder}: none of the {len(files)} images could be decoded")
    run = caption_and_embed(source, ids, captioner, embedder, settings, runtime)
    clip = ModelRef(embedder.model_id, embedder.source.load_revision, embedder.precision)
    blip = ModelRef(captioner.model_id, captioner.source.load_revision, captioner.precision)
    index = SearchIndex(ids, run.image_vectors, run.generated, run.generated_vectors, source, clip, blip)
    write_folder_index(index, out_dir, skipped, ann)
    return index, skipped
