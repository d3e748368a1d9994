"""The pipeline's visual report: hits for example queries, generated vs human captions, and the worst queries."""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
from PIL import Image

from capsearch.contact_sheet import Tile, render_contact_sheet
from capsearch.evaluation.ranks import text_to_image_ranks
from capsearch.index import SearchIndex
from capsearch.search import Hit, search


def hit_tiles(index: SearchIndex, hits: Sequence[Hit]) -> list[Tile]:
    """Contact-sheet tiles of search hits: rank and score, then the generated caption."""
    return [
        Tile(
            lambda image_id=hit.image_id: index.source.open_rgb(image_id), [f"#{hit.rank} {hit.score:.3f}", hit.caption]
        )
        for hit in hits
    ]


def query_gallery(index: SearchIndex, queries: Sequence[str], query_vectors, k: int, method: str) -> Image.Image:
    """One row per query: its top ``k`` images with rank, score and generated caption."""
    results = search(index, query_vectors, k, method)
    rows = []
    for query, hits in zip(queries, results, strict=True):
        tiles = hit_tiles(index, hits)
        rows.append((f'"{query}" - top {k} of {len(index.ids)} ({method})', tiles))
    return render_contact_sheet(rows)


def caption_samples(index: SearchIndex, references: dict[str, list[str]], count: int, seed: int) -> Image.Image:
    """A seeded sample of images with the generated caption ("BLIP:") and two human captions ("human:")."""
    rows_idx = sorted(random.Random(seed).sample(range(len(index.ids)), min(count, len(index.ids))))
    tiles = [
        Tile(
            lambda image_id=index.ids[row]: index.source.open_rgb(image_id),
            [f"BLIP: {index.generated[row]}", *[f"human: {c}" for c in references.get(index.ids[row], [])[:2]]],
        )
        for row in rows_idx
    ]
    per_row = 4
    rows = [
        (
            f"generated vs human captions ({start + 1}-{start + len(tiles[start : start + per_row])})",
            tiles[start : start + per_row],
        )
        for start in range(0, len(tiles), per_row)
    ]
    return render_contact_sheet(rows)


def worst_queries(
    index: SearchIndex,
    query_texts: Sequence[str],
    query_vectors: np.ndarray,
    query_targets: np.ndarray,
    count: int,
    k: int = 4,
) -> Image.Image:
    """The ``count`` text→image queries whose true image ranks lowest: the true image, then the top ``k`` hits."""
    ranks = text_to_image_ranks(query_vectors, index.image_vectors, query_targets)
    worst = sorted(range(len(ranks)), key=lambda q: (-int(ranks[q]), q))[:count]
    results = search(index, query_vectors[worst], k, "image")
    rows = []
    for q, hits in zip(worst, results, strict=True):
        target = int(query_targets[q])
        tiles = [
            Tile(
                lambda image_id=index.ids[target]: index.source.open_rgb(image_id),
                [f"TRUE IMAGE, rank {int(ranks[q])}", index.generated[target]],
            )
        ]
        tiles += hit_tiles(index, hits)
        rows.append((f'"{query_texts[q]}" - true image ranked {int(ranks[q])} of {len(index.ids)}', tiles))
    return render_contact_sheet(rows)
