"""Caption images, then embed the images and their generated captions: the sequence search and fusion need."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from capsearch.data.images import ImageSource
from capsearch.models.blip import BlipCaptioner, DecodingSettings
from capsearch.models.clip import ClipEmbedder
from capsearch.models.runtime import Runtime


@dataclass
class CaptionedImages:
    """Row i of each field belongs to image i."""

    generated: list[str]
    image_vectors: np.ndarray
    generated_vectors: np.ndarray


def caption_and_embed(
    source: ImageSource,
    image_ids: Sequence[str],
    captioner: BlipCaptioner,
    embedder: ClipEmbedder,
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
