"""The Hamming range search against brute force, and union-find."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curate.index.hamming import (
    brute_force_pairs,
    make_plan,
    plan_for,
    radius_pairs,
    radius_pairs_within,
)
from curate.index.unionfind import UnionFind, components

U64 = st.integers(min_value=0, max_value=2**64 - 1)


@st.composite
def clustered_codes(draw: st.DrawFn) -> list[int]:
    """Random codes plus copies of some with a few bits flipped, so near pairs exist."""
    base = draw(st.lists(U64, min_size=0, max_size=60))
    out = list(base)
    for code in base:
        for flips in draw(st.lists(st.sets(st.integers(0, 63), max_size=12), max_size=3)):
            out.append(code ^ sum(1 << b for b in flips))
    return out


def _as_set(res: tuple[np.ndarray, np.ndarray, np.ndarray]) -> set[tuple[int, int, int]]:
    return set(zip(*(a.tolist() for a in res), strict=True))


@settings(max_examples=150, deadline=None)
@given(codes=clustered_codes(), radius=st.integers(0, 14), blocks=st.integers(3, 16))
def test_index_equals_brute_force(codes: list[int], radius: int, blocks: int) -> None:
    expected = brute_force_pairs(codes, radius)
    got = radius_pairs(codes, radius, plan=make_plan(radius, blocks))
    assert _as_set(got) == _as_set(expected)
    assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))  # same order
    assert all(i < j for i, j, _ in _as_set(got))


@settings(max_examples=40, deadline=None)
@given(codes=clustered_codes(), radius=st.integers(0, 10))
def test_chosen_plan_equals_brute_force(codes: list[int], radius: int) -> None:
    assert _as_set(radius_pairs(codes, radius)) == _as_set(brute_force_pairs(codes, radius))


@settings(max_examples=150, deadline=None)
@given(codes=clustered_codes(), radius=st.integers(0, 14), small=st.integers(1, 12),
       data=st.data())
def test_search_within_groups_equals_brute_force_on_each_group(
        codes: list[int], radius: int, small: int, data: st.DataObject) -> None:
    """Pairs only within a group, from both paths: pair by pair (groups of up to `small`
    codes) and the range search (larger groups); chunked pair lists too."""
    groups = sorted(data.draw(st.lists(st.integers(0, 6), min_size=len(codes),
                                       max_size=len(codes))))
    x = np.asarray(codes, dtype=np.uint64)
    i, j, d = brute_force_pairs(x, radius)
    same = np.asarray(groups, dtype=np.int64)[i] == np.asarray(groups, dtype=np.int64)[j]
    expected = (i[same], j[same], d[same])
    with mock.patch("curate.index.hamming.PAIR_CHUNK", data.draw(st.sampled_from([1, 7, 1 << 20]))):
        got = radius_pairs_within(x, np.asarray(groups), radius, small=small)
    assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))


def test_search_within_groups_refuses_unsorted_groups_and_odd_lengths() -> None:
    with pytest.raises(ValueError, match="sorted"):
        radius_pairs_within([1, 2, 3], np.array([1, 0, 1]), 4)
    with pytest.raises(ValueError, match="3 codes but 2 groups"):
        radius_pairs_within([1, 2, 3], np.array([0, 0]), 4)
    assert radius_pairs_within([7], np.array([0]), 4)[0].size == 0


def test_duplicates_and_extreme_codes() -> None:
    codes = [0, 0, 2**64 - 1, 2**64 - 1, 1, 2**63]
    got = _as_set(radius_pairs(codes, 1))
    assert got == {(0, 1, 0), (2, 3, 0), (0, 4, 1), (1, 4, 1), (0, 5, 1), (1, 5, 1)}
    assert _as_set(radius_pairs(codes, 64)) == _as_set(brute_force_pairs(codes, 64))


def test_radius_is_inclusive() -> None:
    a = 0b1111_1111  # 8 bits from 0
    assert _as_set(radius_pairs([0, a], 8)) == {(0, 1, 8)}
    assert _as_set(radius_pairs([0, a], 7)) == set()


@pytest.mark.parametrize("small_bucket", [1, 3, 8])
def test_crowded_buckets_are_verified_in_chunks(
        small_bucket: int, monkeypatch: pytest.MonkeyPatch) -> None:
    import curate.index.hamming as H

    rng = np.random.default_rng(0)
    low = rng.integers(0, 2**16, 2000, dtype=np.uint64)  # the top blocks are all zero
    mixed = rng.integers(0, 2**64, 1000, dtype=np.uint64) & np.uint64(0xF0F0_0000_0000_00FF)
    codes = np.concatenate([low, mixed])  # buckets of every size, from 1 to ~2000
    monkeypatch.setattr(H, "CHUNK", 1000)
    monkeypatch.setattr(H, "SMALL_BUCKET", small_bucket)
    assert _as_set(radius_pairs(codes, 3)) == _as_set(brute_force_pairs(codes, 3))


@pytest.mark.parametrize("radius", [0, 3, 8])
def test_skewed_codes_with_many_near_copies(radius: int) -> None:
    """Like real image hashes: clusters of near-identical codes, crowded buckets."""
    rng = np.random.default_rng(1)
    base = rng.integers(0, 2**64, 300, dtype=np.uint64)
    one_bit = np.uint64(1) << rng.integers(0, 64, 4000).astype(np.uint64)
    codes = np.concatenate([base[rng.integers(0, 300, 4000)] ^ one_bit,
                            rng.integers(0, 2**16, 1000, dtype=np.uint64)])
    got, expected = radius_pairs(codes, radius), brute_force_pairs(codes, radius)
    assert len(expected[0]) > 100
    assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))


def test_plans_cover_the_radius() -> None:
    for radius in range(0, 20):
        for blocks in range(3, 12):
            plan = make_plan(radius, blocks)
            assert sum(plan.widths) == 64
            # refined pigeonhole: radii + 1 summed over the blocks exceeds the radius
            assert sum(s + 1 for s in plan.radii) == radius + 1
    assert plan_for(1_000_000, 8).widths == (22, 21, 21)  # three blocks, radius 2 in each


def test_union_find_labels_are_the_smallest_member() -> None:
    uf = UnionFind(7)
    uf.union(5, 3)
    uf.union(3, 6)
    uf.union(1, 2)
    assert uf.labels().tolist() == [0, 1, 1, 3, 4, 3, 3]
    assert components(7, np.array([6, 2, 3]), np.array([3, 1, 5])).tolist() == uf.labels().tolist()
    assert components(0, np.array([]), np.array([])).tolist() == []


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 40), edges=st.lists(st.tuples(st.integers(0, 39), st.integers(0, 39))))
def test_components_match_a_graph_search(n: int, edges: list[tuple[int, int]]) -> None:
    edges = [(a % n, b % n) for a, b in edges]
    labels = components(n, np.array([a for a, _ in edges], dtype=np.int64),
                        np.array([b for _, b in edges], dtype=np.int64))
    adj: dict[int, set[int]] = {k: set() for k in range(n)}
    for a, b in edges:
        adj[a].add(b)
        adj[b].add(a)
    for start in range(n):
        seen, todo = {start}, [start]
        while todo:
            for nxt in adj[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        assert labels[start] == min(seen)


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 400), seed=st.integers(0, 2**32 - 1), extra=st.integers(0, 200))
def test_vectorised_components_equal_union_find(n: int, seed: int, extra: int) -> None:
    """Long chains in shuffled order (many hook rounds) plus random edges."""
    rng = np.random.default_rng(seed)
    path = rng.permutation(n)
    i = np.concatenate([path[:-1], rng.integers(0, n, extra)])
    j = np.concatenate([path[1:], rng.integers(0, n, extra)])
    cut = rng.random(i.size) < 0.3  # break the chain into pieces
    i, j = i[~cut], j[~cut]
    uf = UnionFind(n)
    uf.union_pairs(zip(i.tolist(), j.tolist(), strict=True))
    assert components(n, i, j).tolist() == uf.labels().tolist()
