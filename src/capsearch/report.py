"""The pipeline's visual report: top hits for example queries, and generated vs human captions side by side."""

from __future__ import annotations

import random
from collections.abc import Sequence

from PIL import Image

from capsearch.contact_sheet import Tile, render_contact_sheet
from capsearch.search import SearchIndex, search


def query_gallery(index: SearchIndex, queries: Sequence[str], query_vectors, k: int, method: str) -> Image.Image:
    """One row per query: its top ``k`` images with rank, score and generated caption."""
    results = search(index, query_vectors, k, method)
    rows = []
    for query, hits in zip(queries, results, strict=True):
        tiles = [
            Tile(
                lambda image_id=hit.image_id: index.source.open_rgb(image_id),
                [f"#{hit.rank} {hit.score:.3f}", hit.caption],
            )
            for hit in hits
        ]
        rows.append((f'"{query}" - top {k} of {len(index.ids)} ({method})', tiles))
    return render_contact_sheet(rows)


def caption_samples(index: SearchIndex, references: dict[str, list[str]], count: int, seed: int) -> Image.Image:
    """A seeded sample of images with the generated caption ("BLIP:") and two human captions ("human:")."""
    rows_idx = sorted(random.Random(seed).sample(range(len(index.ids)), min(count, len(index.ids))))
    tiles = [
        Tile(
            lambda image_id=index.ids[row]: index.source.open_rgb(image_id),
            [f"BLIP: {index.captions[row]}", *[f"human: {c}" for c in references.get(index.ids[row], [])[:2]]],
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
