"""Nearest neighbours of L2-normalised vectors by inner product (= cosine), with faiss.

Below `EXACT_MAX` vectors the search is exact (`IndexFlatIP`: brute force, one BLAS
GEMM per block). Above it an IVF index (`IndexIVFFlat`, k-means cells, `nprobe` cells
searched per query) is built: its cost grows about as n^1.5 instead of n^2. Its recall
of the neighbours above a similarity threshold is measured against exact search in
`tests/test_similar_index.py` and `bench/bench_similar.py`.

faiss is imported lazily (a command's `--help` must not pay for it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# Measured with bench/bench_similar.py on this shared 2-core machine (k=10 self-search):
# MiniLM embeddings of 10k / 14k prompts: exact 4.2 / 7.4 s, IVF 4.3 / 6.2 s; clustered
# 384-d vectors at 20k / 40k: exact 11.0 / 50.5 s, IVF 7.6 / 26.0 s (IVF grows about as
# n^1.5, exact as n^2). IVF found every pair with cosine >= 0.9 in all of these; its
# nearest-other agreement was 0.96 on the real embeddings. Up to 20k the exact search
# costs at most ~1.5x and gives exact scores, so it is used there.
# Issue 16.3, float16 vectors (what `similar` searches now), 40k clustered 384-d, one
# process, the machine loaded by another job: exact 39.7 s; IVF (fp16 codes) 17.3 s, recall
# of the pairs >= 0.9: 1.0000; HNSW (IndexHNSWFlat M=32, efConstruction 80) 50.1 s at
# efSearch 64 and 80.7 s at 128, recall 1.0000 too: its graph build costs more than IVF's
# whole search at the sizes this machine reaches, so IVF stays. IVF with fp16 codes
# (by_residual off) gave the same ids and sims as IVF-Flat bit for bit on fp16 vectors.
EXACT_MAX = 20_000
DEFAULT_NPROBE = 32
SEED = 1234
NITER = 10  # k-means iterations of the IVF cells


@dataclass(frozen=True)
class Neighbours:
    """For each query row: `ids` (n, k) of its nearest base rows and their `sims`,
    best first; -1 / -inf pad rows with fewer than k results."""

    ids: np.ndarray
    sims: np.ndarray
    method: str


def _faiss() -> Any:
    import faiss

    return faiss


def nlist_for(n: int) -> int:
    """IVF cells: about 4 sqrt(n), and at least 39 training points per cell."""
    return max(1, min(int(4 * np.sqrt(n)), n // 39))


def build_index(base: np.ndarray, *, exact_max: int = EXACT_MAX,
                nprobe: int = DEFAULT_NPROBE, block: int = 65_536) -> tuple[Any, str]:
    """An inner-product index over `base` (normalised; float16 or float32): exact up to
    `exact_max` rows, IVF above. Returns (index, description).

    For a float16 `base` the IVF index stores its vectors as float16
    (`IndexIVFScalarQuantizer`, QT_fp16: 2 bytes a dimension, half of IVF-Flat's float32):
    the vectors `curate similar` searches are the store's float16 values, so it holds them
    exactly and finds what IVF-Flat found; a float32 `base` gets IVF-Flat. Rows
    are added a block at a time (converted to float32 per block): no float32 copy of
    `base` is ever made."""
    faiss = _faiss()
    n, d = base.shape
    if n <= exact_max:
        index = faiss.IndexFlatIP(d)
        for a in range(0, n, block):
            index.add(np.ascontiguousarray(base[a:a + block], dtype=np.float32))
        return index, "exact"
    nlist = nlist_for(n)
    quantizer = faiss.IndexFlatIP(d)
    if base.dtype == np.float16:  # held exactly as float16: half of IVF-Flat's memory
        index = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist,
                                              faiss.ScalarQuantizer.QT_fp16,
                                              faiss.METRIC_INNER_PRODUCT)
        index.by_residual = False  # the vectors themselves (residuals would be rounded)
    else:  # float32 vectors stay float32 (fp16 would round them)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = SEED
    index.cp.niter = NITER
    limit = nlist * 64
    rows = np.arange(n) if n <= limit else np.linspace(0, n - 1, limit).astype(np.int64)
    # a fixed, evenly spaced training sample: deterministic and order-stable
    index.train(np.ascontiguousarray(base[rows], dtype=np.float32))
    for a in range(0, n, block):
        index.add(np.ascontiguousarray(base[a:a + block], dtype=np.float32))
    index.nprobe = min(nprobe, nlist)
    return index, f"ivf(nlist={nlist},nprobe={index.nprobe})"


def search(index: Any, queries: np.ndarray, k: int, method: str,
           block: int = 16384) -> Neighbours:
    """The k nearest base rows of each query (blocked, so memory stays bounded: a query
    block is converted to float32 on its own)."""
    k = max(1, min(k, index.ntotal)) if index.ntotal else 1
    ids = np.full((len(queries), k), -1, dtype=np.int64)
    sims = np.full((len(queries), k), -np.inf, dtype=np.float32)
    if index.ntotal:
        for a in range(0, len(queries), block):
            q = np.ascontiguousarray(queries[a:a + block], dtype=np.float32)
            s, i = index.search(q, k)
            sims[a:a + block], ids[a:a + block] = s, i
    sims[ids < 0] = -np.inf
    return Neighbours(ids, sims, method)


def knn(base: np.ndarray, k: int, queries: np.ndarray | None = None, *,
        exact_max: int = EXACT_MAX, nprobe: int = DEFAULT_NPROBE) -> Neighbours:
    """k nearest neighbours of `queries` (default: the base itself, self included)."""
    index, method = build_index(base, exact_max=exact_max, nprobe=nprobe)
    return search(index, base if queries is None else queries, k, method)


def pairs_above(nb: Neighbours, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, sim) with i < j and sim >= threshold from a self-search, each pair once."""
    n, k = nb.ids.shape
    i = np.repeat(np.arange(n, dtype=np.int64), k)
    j = nb.ids.reshape(-1)
    s = nb.sims.reshape(-1)
    ok = (j >= 0) & (j != i) & (s >= threshold)
    i, j, s = i[ok], j[ok], s[ok]
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    key = lo * max(n, 1) + hi
    _, first = np.unique(key, return_index=True)
    return lo[first], hi[first], s[first]


def best_other(nb: Neighbours) -> tuple[np.ndarray, np.ndarray]:
    """For a self-search: each row's nearest other row and its similarity (-1, nan if none)."""
    n = len(nb.ids)
    other = nb.ids != np.arange(n)[:, None]
    valid = other & (nb.ids >= 0)
    first = np.where(valid.any(axis=1), valid.argmax(axis=1), -1)
    rows = np.arange(n)
    ids = np.where(first >= 0, nb.ids[rows, np.maximum(first, 0)], -1)
    sims = np.where(first >= 0, nb.sims[rows, np.maximum(first, 0)], np.nan)
    return ids, sims.astype(np.float32)


def pair_recall(approx: Neighbours, exact: Neighbours, threshold: float) -> float:
    """Share of the exact search's pairs with similarity >= threshold that the
    approximate search also returns (1.0 when there are none)."""
    ei, ej, _ = pairs_above(exact, threshold)
    if len(ei) == 0:
        return 1.0
    ai, aj, _ = pairs_above(approx, threshold)
    n = max(len(exact.ids), 1)
    return float(np.isin(ei * n + ej, ai * n + aj).mean())
