"""Union-find (disjoint sets) over 0..n-1, with deterministic component labels."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


class UnionFind:
    """Path-halving, union-by-size disjoint sets."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))
        self.size = [1] * n

    def find(self, a: int) -> int:
        parent = self.parent
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def union(self, a: int, b: int) -> int:
        """Join the sets of a and b; returns the new root."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]
        return ra

    def union_pairs(self, pairs: Iterable[tuple[int, int]]) -> None:
        for a, b in pairs:
            self.union(int(a), int(b))

    def labels(self) -> np.ndarray:
        """For each element, the smallest element of its set (independent of union order)."""
        n = len(self.parent)
        roots = np.fromiter((self.find(a) for a in range(n)), dtype=np.int64, count=n)
        smallest = np.full(n, n, dtype=np.int64)
        np.minimum.at(smallest, roots, np.arange(n, dtype=np.int64))
        return smallest[roots]


def components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Component labels of the graph on 0..n-1 with edges (i[k], j[k]): for each element,
    the smallest element of its component, as `UnionFind.labels` gives them.

    Vectorised: every round hooks each root onto the smallest root an edge joins it to
    (so a parent is never larger than its child), then jumps pointers until every element
    points at its root; edges inside one tree drop out. A few rounds for the short chains
    of near-duplicate hashes, and 16 bytes per element instead of a Python list's 50.
    """
    parent = np.arange(n, dtype=np.int64)
    i = np.asarray(i, dtype=np.int64).reshape(-1)
    j = np.asarray(j, dtype=np.int64).reshape(-1)
    while i.size:
        a, b = parent[i], parent[j]
        apart = a != b
        if not apart.any():
            break
        i, j, a, b = i[apart], j[apart], a[apart], b[apart]
        np.minimum.at(parent, np.maximum(a, b), np.minimum(a, b))
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
    return parent
