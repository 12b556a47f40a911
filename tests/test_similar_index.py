"""Dense nearest neighbours: the approximate (IVF) index against exact search."""

from __future__ import annotations

import numpy as np

from curate.index import dense


def clustered(n_centers: int, per: int, dim: int = 64, spread: float = 0.08,
              seed: int = 0) -> np.ndarray:
    """Unit vectors in tight clusters (near duplicates) around random centres."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((n_centers, dim)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    x = np.repeat(c, per, axis=0) + spread * rng.standard_normal((n_centers * per, dim)).astype(
        np.float32) / np.sqrt(dim)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x[rng.permutation(len(x))]


def test_ivf_recall_against_exact_on_clustered_data() -> None:
    x = clustered(600, 20)  # 12,000 vectors, 20 per cluster, in-cluster cosine ~0.99
    exact = dense.knn(x, 10)
    approx = dense.knn(x, 10, exact_max=0)  # force the approximate index
    assert exact.method == "exact" and approx.method.startswith("ivf(")
    threshold = 0.95
    ei, _, _ = dense.pairs_above(exact, threshold)
    assert len(ei) > 10_000  # plenty of near-duplicate pairs to measure on
    recall = dense.pair_recall(approx, exact, threshold)
    print(f"\nIVF pair recall at cosine >= {threshold}: {recall:.4f} ({approx.method})")
    assert recall >= 0.99
    # top-1 other neighbour agrees too
    e_ids, _ = dense.best_other(exact)
    a_ids, _ = dense.best_other(approx)
    assert (e_ids == a_ids).mean() >= 0.99


def test_pairs_above_and_best_other() -> None:
    x = np.array([[1, 0], [0.999, 0.0447], [0, 1]], dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    nb = dense.knn(x, 3)
    i, j, s = dense.pairs_above(nb, 0.99)
    assert i.tolist() == [0] and j.tolist() == [1] and s[0] > 0.99
    ids, sims = dense.best_other(nb)
    assert ids.tolist() == [1, 0, 1] or ids.tolist() == [1, 0, 0]
    assert sims[0] > 0.99


def test_single_vector_and_ivf_determinism() -> None:
    one = dense.knn(np.ones((1, 4), np.float32) / 2, 5)
    ids, sims = dense.best_other(one)
    assert ids.tolist() == [-1] and np.isnan(sims[0])
    x = clustered(50, 10, seed=3)
    a, b = dense.knn(x, 5, exact_max=0), dense.knn(x, 5, exact_max=0)
    assert np.array_equal(a.ids, b.ids) and np.array_equal(a.sims, b.sims)
