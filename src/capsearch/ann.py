"""Nearest-neighbour indexes over normalised embeddings (faiss), the one module that imports faiss.

An index only proposes candidates: :meth:`AnnIndex.candidates` gives a few hundred rows per query, and search
(:mod:`capsearch.search`) scores those rows exactly against the stored vectors. So the scores a user sees are
exact, and an index costs recall only where the true top hits fall outside its candidates.

Kinds (``index.kind`` in params.yaml): ``exact`` (a flat inner-product scan), ``hnsw`` (a graph; fast, but keeps
the float vectors, so about 4 bytes per dimension plus its links), ``ivf_sq8`` (inverted lists of 8-bit codes:
one byte per dimension) and ``ivf_pq`` (product-quantised codes of ``pq_bytes`` bytes). ``auto`` chooses by size.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from capsearch.io import atomic_path
from capsearch.params import IndexParams

TRAIN_PER_LIST = 40  # training vectors per inverted list (faiss warns below 39)
PQ_TRAIN_MIN = 256  # a product quantizer's 8-bit codebooks need 256 training vectors


def choose_kind(rows: int, params: IndexParams) -> str:
    """The kind ``index.kind`` asks for; ``auto``: exact, then IVF-SQ8, then IVF-PQ as the gallery grows."""
    if params.kind != "auto":
        return params.kind
    if rows <= params.exact_max:
        return "exact"
    return "ivf_sq8" if rows <= params.compressed_above else "ivf_pq"


def list_count(rows: int, params: IndexParams) -> int:
    """Inverted lists of an IVF index: ``ivf_nlist``, or about ``2 * sqrt(rows)``; never above ``rows / 39``."""
    wanted = params.ivf_nlist if params.ivf_nlist != "auto" else 2 * round(math.sqrt(rows))
    return max(1, min(int(wanted), rows // 39))


def factory_string(kind: str, rows: int, dim: int, params: IndexParams) -> str:
    """The faiss ``index_factory`` description of a kind for ``rows`` vectors of ``dim`` dimensions."""
    if kind == "exact":
        return "Flat"
    if kind == "hnsw":
        return f"HNSW{params.hnsw_m}"
    if kind == "ivf_sq8":
        return f"IVF{list_count(rows, params)},SQ8"
    if kind == "ivf_pq":
        if rows < PQ_TRAIN_MIN:
            raise ValueError(
                f"index.kind: ivf_pq needs at least {PQ_TRAIN_MIN} vectors to train its codes, got {rows}; "
                "use exact, hnsw or ivf_sq8"
            )
        if dim % params.pq_bytes:
            raise ValueError(f"index.pq_bytes: {params.pq_bytes} does not divide the embedding dimension {dim}")
        return f"IVF{list_count(rows, params)},PQ{params.pq_bytes}"
    raise ValueError(f"index.kind: unknown kind {kind!r}")


@dataclass
class AnnIndex:
    """A faiss index with what built it."""

    index: faiss.Index
    kind: str
    description: str
    build_seconds: float = 0.0

    @property
    def rows(self) -> int:
        return int(self.index.ntotal)

    def candidates(self, queries: np.ndarray, count: int) -> np.ndarray:
        """The index's ``count`` best rows for each query (``-1`` pads where it found fewer)."""
        if self.rows == 0:
            return np.full((len(queries), 0), -1, dtype=np.int64)
        _, rows = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), min(count, self.rows))
        return rows

    def configure(self, params: IndexParams) -> None:
        """Set the search-time knobs (HNSW efSearch, IVF nprobe) from ``params``."""
        space = faiss.ParameterSpace()
        if self.kind == "hnsw":
            space.set_index_parameter(self.index, "efSearch", params.hnsw_ef_search)
        elif self.kind.startswith("ivf"):
            space.set_index_parameter(self.index, "nprobe", params.ivf_nprobe)


def build_index(vectors: np.ndarray, params: IndexParams, seed: int = 0) -> AnnIndex:
    """An index of ``params``' kind over ``vectors`` (rows, normalised; inner product = cosine)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    rows, dim = vectors.shape
    if rows == 0:
        raise ValueError("cannot index an empty gallery")
    kind = choose_kind(rows, params)
    description = factory_string(kind, rows, dim, params)
    started = time.perf_counter()
    index = faiss.index_factory(dim, description, faiss.METRIC_INNER_PRODUCT)
    if kind == "hnsw":
        index.hnsw.efConstruction = params.hnsw_ef_construction
    if kind == "ivf_pq":  # polysemous codes serve Hamming filtering, unused here, and cost minutes of training
        faiss.downcast_index(faiss.extract_index_ivf(index)).do_polysemous_training = False
    if not index.is_trained:
        lists = list_count(rows, params)
        sample = vectors
        if rows > TRAIN_PER_LIST * lists:
            chosen = np.random.default_rng(seed).choice(rows, TRAIN_PER_LIST * lists, replace=False)
            sample = vectors[np.sort(chosen)]
        index.train(sample)
    index.add(vectors)
    ann = AnnIndex(index, kind, description, time.perf_counter() - started)
    ann.configure(params)
    return ann


def save_index(ann: AnnIndex, path: str | os.PathLike[str]) -> float:
    """Write the index atomically (faiss's own format); its bytes per vector, what it costs on disk and, loaded,
    in memory."""
    with atomic_path(path) as tmp:
        faiss.write_index(ann.index, str(tmp))
    return Path(path).stat().st_size / max(ann.rows, 1)


def load_index(path: str | os.PathLike[str], params: IndexParams) -> AnnIndex:
    """An index written by :func:`save_index`, configured with ``params``' search knobs."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{path} not found: run `dvc repro index` (or `capsearch index FOLDER`)")
    index = faiss.read_index(str(path))
    kind = _kind_of(index)
    ann = AnnIndex(index, kind, type(index).__name__)
    ann.configure(params)
    return ann


def _kind_of(index: faiss.Index) -> str:
    if isinstance(index, faiss.IndexHNSW):
        return "hnsw"
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        return "exact"
    return "ivf_pq" if isinstance(faiss.downcast_index(ivf), faiss.IndexIVFPQ) else "ivf_sq8"
