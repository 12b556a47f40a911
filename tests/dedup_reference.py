"""The pre-columnar implementation of dedup's `decide`, kept as the oracle.

A verbatim copy of `curate.stages.dedup.decide` and its helpers as they were before the
global step moved to Arrow/numpy columns (Python lists per row, dict groupings, the
`codes` column read row by row), except that the image clusters use the Python
`UnionFind` directly (what `curate.index.unionfind.components` did then).
`tests/test_dedup_columnar.py` checks that the columnar `decide` gives the same tables
and the same `extra` on randomized inputs. Test-only: never imported by `curate`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.hashing import hamming
from curate.index.hamming import brute_force_pairs, radius_pairs
from curate.index.unionfind import UnionFind
from curate.pipeline.runner import Decisions
from curate.stages.dedup import DedupConfig


# -- pass 2: decisions over the keys ----------------------------------------------------
def _fixed(column: pa.ChunkedArray) -> np.ndarray:
    """A fixed-size binary column (16-byte digests) as rows of uint64 words."""
    arr = column.combine_chunks()
    words = arr.type.byte_width // 8
    flat = np.frombuffer(arr.buffers()[1], dtype="<u8", count=len(arr) * words,
                         offset=arr.offset * arr.type.byte_width)
    return flat.reshape(len(arr), words)


def _flat_lists(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(row of each element, the elements as uint64) of a list<uint64> column; nulls as 0."""
    arr = column.combine_chunks()
    lengths = np.asarray(arr.value_lengths().fill_null(0))
    values = np.asarray(arr.flatten().fill_null(0), dtype=np.uint64)
    return np.repeat(np.arange(len(arr)), lengths), values


def _dup_groups(keys: np.ndarray, rows: np.ndarray) -> list[list[int]]:
    """`rows` grouped by equal `keys[row]` (rows of words): groups of two or more, ordered
    by their first row."""
    if rows.size < 2:
        return []
    k = keys[rows]
    order = np.lexsort(k.T[::-1])
    k = k[order]
    starts = np.ones(len(k), dtype=bool)
    starts[1:] = np.any(k[1:] != k[:-1], axis=1)
    gid = np.cumsum(starts) - 1
    multi = np.bincount(gid)[gid] > 1
    by: dict[int, list[int]] = defaultdict(list)
    for r, g in zip(rows[order][multi].tolist(), gid[multi].tolist(), strict=True):
        by[g].append(r)
    return sorted((sorted(g) for g in by.values()), key=lambda g: g[0])


class _Verdicts:
    """reject_reason / reject_detail per row, plus the survivor order."""

    def __init__(self, keys: pa.Table, prefer: Sequence[str]) -> None:
        n = keys.num_rows
        self.reason: list[str | None] = [None] * n
        self.detail: list[str | None] = [None] * n
        rank = {s: i for i, s in enumerate(prefer)}
        self.pair_ids = keys["pair_id"].to_pylist()
        sources = keys["source"].to_pylist()
        pixels = keys["pixels"].to_pylist()
        nbytes = keys["nbytes"].to_pylist()
        self._order = [(rank.get(s, len(rank)), -p, -b, pid)
                       for s, p, b, pid in zip(sources, pixels, nbytes, self.pair_ids, strict=True)]

    def alive(self) -> np.ndarray:
        return np.fromiter((r is None for r in self.reason), dtype=bool, count=len(self.reason))

    def best(self, rows: Sequence[int]) -> int:
        return min(rows, key=self._order.__getitem__)

    def reject(self, r: int, reason: str, detail: str) -> None:
        self.reason[r] = reason
        self.detail[r] = detail


def _label_conflicts(keys: pa.Table, v: _Verdicts, mode: str) -> int:
    swapped = keys["swapped"].to_pylist()
    found = 0
    for group in _dup_groups(_fixed(keys["pair_key"]), np.flatnonzero(v.alive())):
        sides = ([r for r in group if not swapped[r]], [r for r in group if swapped[r]])
        if not sides[0] or not sides[1]:
            continue
        found += 1
        big, small = sorted(sides, key=len, reverse=True)
        if mode == "keep-majority" and len(group) >= 3 and len(big) > len(small):
            winner = v.pair_ids[v.best(big)]
            for r in small:
                v.reject(r, "label_conflict", f"{winner} (outvoted {len(big)}:{len(small)})")
            continue  # the majority's copies are duplicates of each other: handled later
        for own, other in (sides, sides[::-1]):
            rep = v.pair_ids[v.best(other)]
            for r in own:
                v.reject(r, "label_conflict", f"{rep} (votes {len(own)}:{len(other)})")
    return found


def _histogram(values: Any) -> dict[str, int]:
    counts = Counter(int(x) for x in values)
    return {str(k): counts[k] for k in sorted(counts)}


def _text_groups(text: np.ndarray, images_per_row: np.ndarray) -> list[list[int]]:
    """The rows with images that share their text and number of images with another row."""
    by: dict[tuple[bytes, int], list[int]] = defaultdict(list)
    for r in np.flatnonzero(images_per_row).tolist():
        by[(text[r].tobytes(), int(images_per_row[r]))].append(r)
    return [rows for rows in by.values() if len(rows) > 1]


def _copies(rows: list[int], exact_key: np.ndarray) -> list[tuple[int, int]]:
    """(row, its first exact copy) for every later exact copy among `rows`."""
    first: dict[bytes, int] = {}
    return [(r, first.setdefault(exact_key[r].tobytes(), r)) for r in rows
            if first.setdefault(exact_key[r].tobytes(), r) != r]


def _image_clusters(codes: np.ndarray, img_row: np.ndarray, images_per_row: np.ndarray,
                    groups: list[list[int]], exact_key: np.ndarray,
                    max_distance: int) -> np.ndarray:
    """Cluster label of each image: union-find over all pairs of distinct hashes within
    `max_distance`, and over the images at the same place of exact copies in a group. The
    decisions use these clusters over every hash; the columnar `decide` compares only the
    images of rows with the same text and must decide the same."""
    uniq, inverse = np.unique(codes, return_inverse=True)
    ii, jj, _ = radius_pairs(uniq, max_distance)
    uf = UnionFind(len(uniq))  # the pre-columnar `components`, Python union-find
    uf.union_pairs(zip(ii.tolist(), jj.tolist(), strict=True))
    for rows in groups:
        for r, r0 in _copies(rows, exact_key):
            a, b = np.searchsorted(img_row, [r, r0]).tolist()
            for p in range(int(images_per_row[r])):
                uf.union(int(inverse[a + p]), int(inverse[b + p]))
    return uf.labels()[inverse]


def _compared_images(groups: list[list[int]], exact_key: np.ndarray, img_row: np.ndarray,
                     images_per_row: np.ndarray, codes: np.ndarray, ids: np.ndarray,
                     max_distance: int) -> dict[str, Any]:
    """The manifest's image statistics, written plainly: the images compared are those at
    the same place of rows with the same text and number of images (a segment); pairs,
    clusters and identical hashes are counted within a segment, and a cluster also joins
    the images at the same place of exact copies."""
    segments: list[list[tuple[int, int]]] = []  # (code, image id) of each compared image
    links: list[tuple[int, int, int]] = []  # (segment, image a, image b) of exact copies
    for rows in groups:
        places = int(images_per_row[rows[0]])
        at = {r: k for k, r in enumerate(rows)}
        for r, r0 in _copies(rows, exact_key):
            links += [(len(segments) + p, at[r], at[r0]) for p in range(places)]
        starts = np.searchsorted(img_row, rows).tolist()
        segments += [[(int(codes[a + p]), int(ids[a + p])) for a in starts]
                     for p in range(places)]
    node: dict[tuple[int, int], int] = {}  # (segment, hash) -> node
    pairs: list[tuple[int, int]] = []
    distances: list[int] = []
    zero = 0
    for k, seg in enumerate(segments):
        hashes = sorted({c for c, _ in seg})
        for c in hashes:
            node[k, c] = len(node)
        ii, jj, dd = brute_force_pairs(hashes, max_distance)
        pairs += [(node[k, hashes[i]], node[k, hashes[j]])
                  for i, j in zip(ii.tolist(), jj.tolist(), strict=True)]
        distances += dd.tolist()
        per_hash = Counter(c for c, _ in set(seg))
        zero += sum(m * (m - 1) // 2 for m in per_hash.values())
    pairs += [(node[k, segments[k][a][0]], node[k, segments[k][b][0]]) for k, a, b in links]
    uf = UnionFind(len(node))
    uf.union_pairs(pairs)
    labels = uf.labels()
    images = {(k, c, i) for k, seg in enumerate(segments) for c, i in seg}
    sizes = [s for s in Counter(labels[node[k, c]] for k, c, _ in images).values() if s > 1]
    histogram = _histogram(distances)
    return {
        "images_compared": sum(len(seg) for seg in segments),
        "distinct_images": len(images),
        "distinct_hashes": len({c for seg in segments for c, _ in seg}),
        "clusters": len(sizes),
        "cluster_size_histogram": _histogram(sizes),
        "distance_histogram": {"0": zero, **histogram} if zero else histogram,
    }


def _duplicates(keys: pa.Table, v: _Verdicts, cfg: DedupConfig) -> dict[str, Any]:
    """Duplicate groups: same text and image clusters (rows with images) or same exact key
    (text-only rows); one survivor each, exact copies of it as exact_duplicate."""
    alive = v.alive()
    img_row, codes = _flat_lists(keys["codes"])
    _, ids = _flat_lists(keys["image_ids"])
    keep = alive[img_row]
    img_row, codes, ids = img_row[keep], codes[keep], ids[keep]
    text = _fixed(keys["prompt_key"])
    if cfg.near_match == "pair":
        text = np.hstack([text, _fixed(keys["responses_key"])])
    images_per_row = np.bincount(img_row, minlength=len(alive))
    exact_key = _fixed(keys["exact_key"])
    groups_of_text = _text_groups(text, images_per_row)
    cluster = _image_clusters(codes, img_row, images_per_row, groups_of_text, exact_key,
                              cfg.max_distance)
    stats = _compared_images(groups_of_text, exact_key, img_row, images_per_row, codes, ids,
                             cfg.max_distance)
    # only rows that share their text with another row can be duplicates: sign just those
    rows = np.asarray(sorted(r for g in _dup_groups(text, np.flatnonzero(images_per_row))
                             for r in g), dtype=np.int64)
    first = np.searchsorted(img_row, rows)
    one = images_per_row[rows] == 1  # the common case, vectorised: text + the one cluster
    signature = np.hstack([text, np.zeros((len(alive), 1), dtype=np.uint64)])
    signature[rows[one], -1] = cluster[first[one]]
    groups = _dup_groups(signature, rows[one])
    by: dict[tuple[bytes, tuple[int, ...]], list[int]] = defaultdict(list)
    for r, a in zip(rows[~one].tolist(), first[~one].tolist(), strict=True):
        by[(text[r].tobytes(), tuple(cluster[a:a + images_per_row[r]].tolist()))].append(r)
    groups += [g for g in by.values() if len(g) > 1]
    groups += _dup_groups(exact_key, np.flatnonzero(alive & (images_per_row == 0)))

    codes_of = keys["codes"]
    rejected: list[int] = []
    for group in groups:
        left = list(group)
        while len(left) > 1:  # greedy: the best row takes what is within reach of it
            winner = v.best(left)
            further = []
            for r in left:
                if r == winner:
                    continue
                if np.array_equal(exact_key[r], exact_key[winner]):
                    v.reject(r, "exact_duplicate", v.pair_ids[winner])
                    continue
                a, b = codes_of[r].as_py(), codes_of[winner].as_py()
                d = max(hamming(x, y) for x, y in zip(a, b, strict=True))
                if d > cfg.max_distance:
                    further.append(r)
                    continue
                v.reject(r, "near_duplicate_image", f"{v.pair_ids[winner]} distance={d}")
                rejected.append(d)
            left = further
    return {**stats, "near_duplicate_distance_histogram": _histogram(rejected)}


def _survivors(v: _Verdicts, reason: str) -> int:
    """How many rows survive a group of `reason` duplicates."""
    return len({d.split()[0] for r, d in zip(v.reason, v.detail, strict=True)
                if r == reason and d})


def decide(keys: pa.Table, cfg: DedupConfig) -> Decisions:
    """Reject reasons for every row of `keys`, in order, and the hash column to attach."""
    v = _Verdicts(keys, cfg.prefer)
    for r, err in enumerate(keys["error"].to_pylist()):
        if err is not None:
            v.reject(r, "corrupt_image", err)
    conflicts = _label_conflicts(keys, v, cfg.conflicts)
    near = _duplicates(keys, v, cfg)
    decoded = int(pc.sum(keys["decoded"]).as_py() or 0)
    reused = int(pc.sum(keys["reused"]).as_py() or 0)
    table = pa.table({
        "pair_id": keys["pair_id"],
        "reject_reason": pa.array(v.reason, pa.string()),
        "reject_detail": pa.array(v.detail, pa.string()),
        cfg.column: keys["codes"],
    })
    extra = {"dedup": {
        "image_hash": cfg.image_hash,
        "max_distance": cfg.max_distance,
        "images_decoded": decoded,  # depends on how batches met workers (per-process memo)
        "images_reused": reused,
        "label_conflict_groups": conflicts,
        "exact_duplicate_groups": _survivors(v, "exact_duplicate"),
        "near_duplicate_groups": _survivors(v, "near_duplicate_image"),
        **near,
    }}
    return Decisions(table, extra)
