"""The seeded shuffle rows are dealt from: `curate shard`'s train/eval split and shard
order, and `curate reward --kfold`'s folds. It depends on the pair ids and the seed, not
on the order the rows come in, so every engine and every rerun deals the same."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def shuffle_rank(pair_ids: pa.Array | pa.ChunkedArray, seed: int) -> np.ndarray:
    """Each row's place in a seeded shuffle that depends on the ids, not the input order."""
    n = len(pair_ids)
    order = pc.sort_indices(pair_ids).to_numpy()
    perm = order[np.random.default_rng(seed).permutation(n)]
    rank = np.empty(n, dtype=np.int64)
    rank[perm] = np.arange(n)
    return rank
