"""All pairs of 64-bit codes within a Hamming radius, found by multi-index hashing.

The 64 bits are cut into `m` contiguous blocks. By the pigeonhole principle, two
codes at distance <= r agree within distance s = r // m on one of the blocks
(refined: with r = s*m + t, on one of the first t + 1 blocks within s, or on one
of the others within s - 1). Each block gets a direct-address table (bucket
start and size for every block value); every code then probes its own block
value and the values a few bit flips away, and the candidates are verified with
a popcount. A pair is probed from one side only (for a flip whose top bit is t,
from the code whose block has bit t clear) and reported only by the first block
that can find it, so no pair is examined twice per block or reported twice. Each
table also keeps the code of its bucket's first member: most occupied buckets hold
one code, so most probes are verified with one gather, and only matches and crowded
buckets are walked member by member.

The work is about n * probes * (1 + n / 2^w) for blocks of w bits: sub-quadratic,
and the planner picks the block count that minimises it for the given n and r.
Everything is vectorised numpy; memory is O(n + 2^w) per block (14 bytes per table
entry) plus the candidates of one probe.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from math import comb

import numpy as np

BITS = 64
MAX_TABLE_BITS = 24  # a block table has 2^w + 1 entries
_PROBE_COST = 1.0  # relative cost of one probe (two gathers) ...
_CANDIDATE_COST = 3.0  # ... of one candidate (expand, xor, popcount, filter) ...
_TABLE_COST = 0.3  # ... and of one table entry (bincount + cumsum)
CHUNK = 1 << 22  # candidates verified at once from crowded buckets
SMALL_BUCKET = 8  # members left in a bucket before its members are expanded at once


@dataclass(frozen=True)
class Plan:
    """Block widths (bits, low block first) and the radius searched in each (-1 = skipped)."""

    widths: tuple[int, ...]
    radii: tuple[int, ...]

    def cost(self, n: int) -> float:
        total = 0.0
        for w, s in zip(self.widths, self.radii, strict=True):
            if s < 0:
                continue
            probes = sum(comb(w, k) for k in range(s + 1))
            total += n * probes * (_PROBE_COST + _CANDIDATE_COST * n / 2**w) + _TABLE_COST * 2**w
        return total


def make_plan(radius: int, blocks: int) -> Plan:
    """The refined pigeonhole split of `BITS` bits into `blocks` blocks for `radius`."""
    if blocks < 1 or blocks > BITS:
        raise ValueError(f"blocks must be in 1..{BITS}, got {blocks}")
    base, extra = divmod(BITS, blocks)
    widths = tuple(base + (1 if k < extra else 0) for k in range(blocks))
    s, t = divmod(radius, blocks)
    radii = tuple(s if k <= t else s - 1 for k in range(blocks))
    return Plan(widths, radii)


def plan_for(n: int, radius: int) -> Plan:
    """The cheapest plan (by `Plan.cost`) whose tables fit MAX_TABLE_BITS."""
    lo = -(-BITS // MAX_TABLE_BITS)
    candidates = [make_plan(radius, m) for m in range(lo, min(BITS, max(lo, radius + 1)) + 1)]
    return min(candidates, key=lambda p: (p.cost(n), len(p.widths)))


def _flips(width: int, radius: int) -> np.ndarray:
    """Every `width`-bit mask with at most `radius` bits set, as int32."""
    masks = [0]
    for k in range(1, radius + 1):
        for bits in itertools.combinations(range(width), k):
            masks.append(sum(1 << b for b in bits))
    return np.asarray(masks, dtype=np.int32)


def _block(codes: np.ndarray, shift: int, width: int) -> np.ndarray:
    mask = np.uint64((1 << width) - 1)
    return ((codes >> np.uint64(shift)) & mask).astype(np.int32)


def _wide_block(codes: np.ndarray, shift: int, width: int) -> np.ndarray:
    """`_block` for any width up to 64 bits, as uint64."""
    return (codes >> np.uint64(shift)) & np.uint64((1 << width) - 1)


def as_codes(codes: object) -> np.ndarray:
    """Codes as a 1-d uint64 array: from Python ints, or any integer array (int64 reinterpreted)."""
    if not isinstance(codes, np.ndarray):
        return np.fromiter((int(c) for c in codes), dtype=np.uint64)  # type: ignore[attr-defined]
    if codes.dtype.kind not in "iu":
        raise TypeError(f"codes must be integers, got {codes.dtype}")
    if codes.dtype.kind == "i":
        codes = codes.astype(np.int64).view(np.uint64)
    return codes.astype(np.uint64, copy=False).reshape(-1)


def _sorted_pairs(i: list[np.ndarray], j: list[np.ndarray], d: list[np.ndarray]) -> tuple[
        np.ndarray, np.ndarray, np.ndarray]:
    if not i:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty.copy(), np.empty(0, dtype=np.uint8)
    ii, jj, dd = np.concatenate(i), np.concatenate(j), np.concatenate(d)
    order = np.lexsort((jj, ii))
    return ii[order], jj[order], dd[order]


def radius_pairs(
    codes: object, radius: int, *, plan: Plan | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (i, j, distance) with i < j and popcount(codes[i] ^ codes[j]) <= radius.

    Sorted by (i, j). `radius` is inclusive (faiss' range_search radius is strict).
    """
    x = as_codes(codes)
    n = len(x)
    if radius < 0:
        raise ValueError("radius must be >= 0")
    if n < 2:
        return _sorted_pairs([], [], [])
    plan = plan or plan_for(n, radius)
    shifts = np.cumsum((0,) + plan.widths[:-1]).tolist()
    out: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
    searched: list[tuple[int, int, int]] = []  # (shift, width, radius) of earlier blocks
    for shift, width, s in zip(shifts, plan.widths, plan.radii, strict=True):
        if s < 0:
            continue
        _search_block(x, shift, width, s, radius, searched, out)
        searched.append((shift, width, s))
    return _sorted_pairs(*out)


def _search_block(x: np.ndarray, shift: int, width: int, s: int, radius: int,
                  searched: list[tuple[int, int, int]],
                  out: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]) -> None:
    """Append to `out` the pairs within `radius` that agree within `s` bits on the block
    (`shift`, `width`) and were not found by the `searched` blocks. A function of its own
    so that one block's arrays and tables are freed before the next block's are made."""
    n = len(x)
    key = _block(x, shift, width)
    order = np.argsort(key, kind="stable")
    # work in block-sorted order: probes of neighbouring codes hit neighbouring buckets
    skey, sx = key[order], x[order]
    del key
    counts = np.bincount(skey, minlength=1 << width)
    occupied = counts > 0
    crowded = counts > 1
    # bucket b holds sorted positions bounds[b]:bounds[b + 1] (one table, one cache line)
    bounds = np.zeros((1 << width) + 1, dtype=np.int32 if n < 2**31 else np.int64)
    np.cumsum(counts, out=bounds[1:])
    del counts
    # the code of each bucket's first member: most occupied buckets hold one code, so
    # a probe is verified with one gather, and only a match or a crowded bucket takes
    # the bucket walk
    head = np.zeros(1 << width, dtype=np.uint64)
    filled = np.flatnonzero(occupied)
    head[filled] = sx[bounds[filled]]
    del filled

    def emit(qp: np.ndarray, cp: np.ndarray, sx: np.ndarray = sx,
             order: np.ndarray = order) -> None:
        """Verify candidates (sorted positions) and keep new pairs within the radius."""
        diff = sx[qp] ^ sx[cp]
        dist = np.bitwise_count(diff)
        ok = np.flatnonzero(dist <= radius)
        if ok.size == 0:
            return
        diff, dist, qp, cp = diff[ok], dist[ok], qp[ok], cp[ok]
        new = np.ones(ok.size, dtype=bool)
        for e_shift, e_width, e_s in searched:  # found by an earlier block already
            new &= np.bitwise_count(_block(diff, e_shift, e_width)) > e_s
        qi, cj = order[qp[new]], order[cp[new]]
        out[0].append(np.minimum(qi, cj))
        out[1].append(np.maximum(qi, cj))
        out[2].append(dist[new].astype(np.uint8))

    # Each pair is probed from one side only: for a flip whose top bit is t, from the
    # code whose key has bit t clear; in its own bucket, from the earlier position.
    for top in range(-1, width):
        if top < 0:
            queries, qkeys, flips = np.arange(n), skey, np.zeros(1, dtype=np.int32)
        elif s == 0:
            break
        else:
            queries = np.flatnonzero((skey >> top) & 1 == 0)
            qkeys = skey[queries]
            flips = (1 << top) | _flips(top, s - 1)
        for flip in flips:
            probe = qkeys ^ flip
            hit = np.flatnonzero(occupied[probe])
            if hit.size == 0:
                continue
            q, bucket = queries[hit], probe[hit]
            if flip == 0:  # q's own bucket: the members after it
                _walk(q, q + 1, bounds[bucket + 1] - q - 1, emit)
                continue
            near = np.flatnonzero(np.bitwise_count(sx[q] ^ head[bucket]) <= radius)
            if near.size:  # the bucket's first member is within the radius
                emit(q[near], bounds[bucket[near]])
            more = np.flatnonzero(crowded[bucket])
            if more.size:  # the other members of crowded buckets
                q, bucket = q[more], bucket[more]
                first = bounds[bucket] + 1
                _walk(q, first, bounds[bucket + 1] - first, emit)



def _walk(q: np.ndarray, first: np.ndarray, cnt: np.ndarray,
          emit: Callable[[np.ndarray, np.ndarray], None]) -> None:
    """Emit (q, every member of q's bucket range), one member of every range at a time
    (most ranges hold one code), crowded ranges all at once."""
    live = np.flatnonzero(cnt > 0)
    q, first, cnt = q[live], first[live], cnt[live]
    while q.size:
        emit(q, first)
        more = np.flatnonzero(cnt > 1)
        q, first, cnt = q[more], first[more] + 1, cnt[more] - 1
        big = cnt > SMALL_BUCKET
        if big.any():  # crowded buckets (skewed codes)
            _expand(q[big], first[big], cnt[big], emit)
            keep = ~big
            q, first, cnt = q[keep], first[keep], cnt[keep]


def _expand(q: np.ndarray, first: np.ndarray, cnt: np.ndarray,
            emit: Callable[[np.ndarray, np.ndarray], None]) -> None:
    """Every (query, bucket member) of crowded buckets, at most CHUNK candidates at a time."""
    ends = np.cumsum(cnt, dtype=np.int64)
    cuts = np.searchsorted(ends, np.arange(CHUNK, int(ends[-1]), CHUNK), side="left").tolist()
    for a, b in zip((0, *cuts), (*cuts, q.size), strict=True):
        if a >= b:
            continue
        ca = cnt[a:b]
        ea = ends[a:b] - (ends[a - 1] if a else 0)
        cp = np.arange(int(ea[-1]), dtype=np.int64) - np.repeat(ea - ca - first[a:b], ca)
        emit(np.repeat(q[a:b], ca), cp)


# `radius_pairs_within`'s three ways, by group size: pair by pair up to SMALL_GROUP codes;
# up to LARGE_GROUP, every such group at once by the pigeonhole principle on radius + 1
# blocks (pair by pair within each (group, block value) bucket: about 1/2^w of the pairs
# for blocks of w bits); above it, `radius_pairs` on the group's own codes. PAIR_CHUNK
# pairs are verified at a time (about 50 MB of temporaries).
SMALL_GROUP = 64
LARGE_GROUP = 4096
PAIR_CHUNK = 1 << 20

_Out = tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]


def radius_pairs_within(
    codes: object, groups: np.ndarray, radius: int, *, small: int = SMALL_GROUP,
    large: int = LARGE_GROUP,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (i, j, distance) with i < j, `groups[i] == groups[j]` and
    popcount(codes[i] ^ codes[j]) <= radius, sorted by (i, j).

    `groups` is non-decreasing (the codes sorted by group). The work follows the groups,
    not n (see SMALL_GROUP and LARGE_GROUP for how each size is searched, all groups of a
    way at once). Used where only codes of the same group can matter (dedup: images of
    rows with the same prompt), where one search over all codes grows as n^1.8
    (docs/scaling.md)."""
    x = as_codes(codes)
    groups = np.asarray(groups).reshape(-1)
    if groups.size != x.size:
        raise ValueError(f"{x.size} codes but {groups.size} groups")
    if radius < 0:
        raise ValueError("radius must be >= 0")
    if x.size < 2:
        return _sorted_pairs([], [], [])
    if (groups[1:] < groups[:-1]).any():
        raise ValueError("groups must be sorted (non-decreasing)")
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    sizes = np.diff(np.r_[starts, x.size])
    out: _Out = ([], [], [])
    few = (sizes > 1) & ((sizes <= small) | (radius >= BITS))  # radius 64+: every pair
    _all_pairs(x, starts[few], sizes[few], radius, out)
    mid = ~few & (sizes > 1) & (sizes <= large)
    _pigeonhole_pairs(x, starts[mid], sizes[mid], radius, out)
    big = ~few & (sizes > large)
    for start, size in zip(starts[big].tolist(), sizes[big].tolist(), strict=True):
        i, j, d = radius_pairs(x[start:start + size], radius)
        out[0].append(i + start)
        out[1].append(j + start)
        out[2].append(d)
    return _sorted_pairs(*out)


def _ranges(starts: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every position of the ranges (`starts`, `sizes`), and its place in its range."""
    at = np.arange(int(sizes.sum()), dtype=np.int64) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    return np.repeat(starts.astype(np.int64), sizes) + at, at


def _pigeonhole_pairs(x: np.ndarray, starts: np.ndarray, sizes: np.ndarray, radius: int,
                      out: _Out) -> None:
    """Append the pairs within `radius` (< 64) of each group (`starts`, `sizes`): two codes
    within `radius` bits are equal on one of radius + 1 blocks, so each block's buckets
    (same group, same block value) are compared pair by pair, and a pair is kept only by
    the first block it is equal on."""
    if not starts.size:
        return
    member, _ = _ranges(starts, sizes)
    group = np.repeat(np.arange(starts.size, dtype=np.uint64), sizes)
    plan = make_plan(radius, radius + 1)
    shifts = np.cumsum((0,) + plan.widths[:-1]).tolist()
    for k, (shift, width) in enumerate(zip(shifts, plan.widths, strict=True)):
        value = _wide_block(x[member], shift, width)
        if starts.size <= 1 << (BITS - width):  # (group, value) packed in one word
            key = (group << np.uint64(width)) | value if width < BITS else value
            order = np.argsort(key)
            key = key[order]
            new = np.r_[True, key[1:] != key[:-1]]
        else:
            order = np.lexsort((value, group))
            value, g = value[order], group[order]
            new = np.r_[True, (value[1:] != value[:-1]) | (g[1:] != g[:-1])]
        at = member[order]
        bstarts = np.flatnonzero(new)
        bsizes = np.diff(np.r_[bstarts, at.size])
        del order, new
        crowded = bsizes > 1
        earlier = list(zip(shifts[:k], plan.widths, strict=False))

        def first_block(diff: np.ndarray, earlier: list[tuple[int, int]] = earlier
                        ) -> np.ndarray:
            keep = np.ones(diff.size, dtype=bool)
            for e_shift, e_width in earlier:  # equal on an earlier block: found there
                keep &= _wide_block(diff, e_shift, e_width) != 0
            return keep

        found: _Out = ([], [], [])
        _all_pairs(x[at], bstarts[crowded], bsizes[crowded], radius, found, first_block)
        for i, j, d in zip(*found, strict=True):
            a, b = at[i], at[j]
            out[0].append(np.minimum(a, b))
            out[1].append(np.maximum(a, b))
            out[2].append(d)


def _all_pairs(x: np.ndarray, starts: np.ndarray, sizes: np.ndarray, radius: int, out: _Out,
               keep: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
    """Append every pair within `radius` of each group (`starts`, `sizes`), pair by pair;
    with `keep`, only those whose xor it accepts."""
    if not starts.size:
        return
    # every code of the groups, and how many later codes of its group it meets
    code, at = _ranges(starts, sizes)
    later = np.repeat(sizes, sizes) - at - 1
    del at
    ends = np.cumsum(later)
    cuts = np.searchsorted(ends, np.arange(PAIR_CHUNK, int(ends[-1]), PAIR_CHUNK),
                           side="left").tolist()
    for a, b in zip((0, *cuts), (*cuts, code.size), strict=True):
        if a >= b:
            continue
        cnt = later[a:b]
        total = int(cnt.sum())
        if total == 0:
            continue
        ii = np.repeat(code[a:b], cnt)
        jj = ii + 1 + np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        diff = x[ii] ^ x[jj]
        dist = np.bitwise_count(diff)
        ok = np.flatnonzero(dist <= radius)
        if keep is not None and ok.size:
            ok = ok[keep(diff[ok])]
        out[0].append(ii[ok])
        out[1].append(jj[ok])
        out[2].append(dist[ok].astype(np.uint8))


def brute_force_pairs(
    codes: object, radius: int, chunk: int = 2048
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The quadratic reference for `radius_pairs` (same output); for tests and small n."""
    x = as_codes(codes)
    n = len(x)
    out_i: list[np.ndarray] = []
    out_j: list[np.ndarray] = []
    out_d: list[np.ndarray] = []
    for a in range(0, n, chunk):
        rows = x[a:a + chunk]
        dist = np.bitwise_count(rows[:, None] ^ x[None, :])
        ii, jj = np.nonzero(dist <= radius)
        ii += a
        keep = jj > ii
        out_i.append(ii[keep].astype(np.int64))
        out_j.append(jj[keep].astype(np.int64))
        out_d.append(dist[ii[keep] - a, jj[keep]].astype(np.uint8))
    return _sorted_pairs(out_i, out_j, out_d)
