"""Dedup's columnar `decide` against the pre-columnar one (tests/dedup_reference.py).

Key tables are generated from small alphabets, so that exact duplicates, near-duplicate
hashes within and beyond `max_distance`, label conflicts, ties in the survivor order
(same source rank, pixels, bytes and even pair_id), rows with several images, with no
image and with corrupt images are all frequent. Both implementations must give the same
decision table (reasons, details, the attached hashes) and the same `extra`, key order
included (it is written to the manifest).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any
from unittest import mock

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curate.hashing import METHODS
from curate.stages import dedup
from curate.stages.dedup import KEY_SCHEMA, DedupConfig, _digest, decide
from tests import dedup_reference

U64 = st.integers(min_value=0, max_value=2**64 - 1)
# ties, byte order against code-point order, and what `str.split` treats as whitespace
PAIR_IDS = ["p1", "p2", "p10", "P1", "é", "z", "\uffff", "𝄞", "a b", "", " x", "q\xa0r",
            "s\x1ct"]
SOURCES = ["a", "b", "c", None]
TEXTS = ["x", "y", "z"]


def key_row(pair_id: str, source: str | None = "a", prompt: Any = 0,
            chosen: str = "x", rejected: str = "y",
            images: Sequence[tuple[int, int | None]] = (),
            pixels: int = 100, nbytes: int = 100, error: str | None = None,
            responses: Any = None) -> dict[str, Any]:
    """One row of keys as `annotate` would compute it; images are (id, code) pairs."""
    ids = [i for i, _ in images]
    return {
        "pair_id": pair_id, "source": source,
        "prompt_key": _digest(prompt),
        "responses_key": _digest(responses if responses is not None else [chosen, rejected]),
        "exact_key": _digest([prompt, ids, chosen, rejected]),
        "pair_key": _digest([prompt, ids, sorted((chosen, rejected))]),
        "swapped": chosen > rejected,
        "image_ids": ids, "codes": [c for _, c in images],
        "pixels": pixels, "nbytes": nbytes, "decoded": len(images), "reused": 0,
        "error": error,
    }


def key_table(rows: list[dict[str, Any]], cuts: Sequence[int] = ()) -> pa.Table:
    """`rows` as a keys table, in record batches cut at `cuts` (as the engine returns them)."""
    table = pa.Table.from_pylist(rows, schema=KEY_SCHEMA)
    bounds = [0, *sorted(c for c in cuts if 0 <= c <= len(rows)), len(rows)]
    batches = [b for a, z in zip(bounds, bounds[1:], strict=False)
               for b in table.slice(a, z - a).to_batches()]
    return pa.Table.from_batches(batches or table.to_batches(), schema=KEY_SCHEMA)


@st.composite
def key_tables(draw: st.DrawFn) -> pa.Table:
    """Realistic keys (digests of generated prompts, responses and image ids) or, now and
    then, every key drawn on its own (combinations `annotate` never writes)."""
    realistic = draw(st.integers(0, 4)) > 0
    seed = draw(st.integers(0, 2**32 - 1))
    rng = random.Random(seed)
    n = draw(st.integers(0, 40))
    bases = draw(st.lists(U64, min_size=1, max_size=3))
    # codes a few bits apart: chains of near duplicates within and beyond max_distance
    pool = [b ^ sum(1 << k for k in rng.sample(range(64), rng.choice([0, 1, 3, 5, 8, 10, 12,
                                                                         16])))
            for b in bases for _ in range(3)]
    code_of_id = {i: rng.choice(pool) for i in range(6)}
    rows = []
    for _ in range(n):
        m = rng.choice([0, 1, 1, 1, 1, 2, 3])
        images = []
        for _ in range(m):
            i = rng.randrange(6)
            images.append((i, code_of_id[i] if rng.random() < 0.8 else rng.choice(pool)))
        row = key_row(rng.choice(PAIR_IDS), rng.choice(SOURCES), rng.randrange(3),
                      rng.choice(TEXTS), rng.choice(TEXTS), images,
                      rng.choice([0, 100, 200]), rng.choice([0, 100, 200]))
        if not realistic:
            for name in ("prompt_key", "responses_key", "exact_key", "pair_key"):
                row[name] = _digest(rng.randrange(3))
            row["swapped"] = rng.random() < 0.5
        if rng.random() < 0.1:
            row["error"] = rng.choice(["image 0: OSError: truncated", "a b", ""])
            row["codes"] = [None if rng.random() < 0.5 else c for c in row["codes"]]
        rows.append(row)
    cuts = draw(st.lists(st.integers(0, n), max_size=4))
    return key_table(rows, cuts)


configs = st.builds(
    DedupConfig,
    image_hash=st.sampled_from(METHODS),
    max_distance=st.one_of(st.none(), st.integers(0, 16)),
    prefer=st.lists(st.sampled_from(["a", "b", "c", ""]), max_size=4).map(tuple),
    conflicts=st.sampled_from(["drop", "keep-majority"]),
    near_match=st.sampled_from(["prompt", "pair"]),
)


def assert_same(keys: pa.Table, cfg: DedupConfig) -> list[dict[str, Any]]:
    """The columnar decide and the oracle agree table-for-table and extra-for-extra."""
    want = dedup_reference.decide(keys, cfg)
    got = decide(keys, cfg)
    assert got.table.schema == want.table.schema
    assert got.table.to_pylist() == want.table.to_pylist()
    assert got.table.equals(want.table)
    assert json.dumps(got.extra) == json.dumps(want.extra)  # key order too
    return got.table.to_pylist()


@settings(max_examples=300, deadline=None)
@given(keys=key_tables(), cfg=configs, slab=st.integers(1, 8))
def test_columnar_decide_equals_the_reference(keys: pa.Table, cfg: DedupConfig,
                                              slab: int) -> None:
    with mock.patch.object(dedup, "_SLAB", slab):  # strings taken a few rows at a time
        assert_same(keys, cfg)


def img(i: int, code: int | None = None) -> tuple[int, int | None]:
    return (i, 1000 + i if code is None else code)


def outcome(rows: list[dict[str, Any]], **cfg: Any) -> list[tuple[str | None, str | None]]:
    out = assert_same(key_table(rows), DedupConfig(**cfg))
    return [(r["reject_reason"], r["reject_detail"]) for r in out]


def test_ties_in_the_survivor_order() -> None:
    # same source rank, pixels and bytes: the smallest pair_id, then the first row
    rows = [key_row("p2", images=[img(1)]), key_row("p1", images=[img(1)]),
            key_row("p1", images=[img(1)])]
    assert outcome(rows) == [("exact_duplicate", "p1"), (None, None), ("exact_duplicate", "p1")]
    # prefer separates sources; an unlisted source and a null one tie behind the listed
    rows = [key_row("p1", "c", images=[img(1)]), key_row("p2", None, images=[img(1)]),
            key_row("p3", "b", images=[img(1)])]
    assert outcome(rows, prefer=("b", "b", "a")) == [
        ("exact_duplicate", "p3"), ("exact_duplicate", "p3"), (None, None)]
    # then more pixels, then more bytes; pair ids compare by code point (not UTF-16 units)
    rows = [key_row("𝄞", images=[img(1)], pixels=200),
            key_row("\uffff", images=[img(1)], pixels=200),
            key_row("a", images=[img(1)], nbytes=300)]
    assert outcome(rows) == [("exact_duplicate", "\uffff"), (None, None),
                             ("exact_duplicate", "\uffff")]


def test_label_conflicts_drop_and_keep_majority() -> None:
    rows = [key_row("a", chosen="x", rejected="y", images=[img(1)]),
            key_row("b", chosen="y", rejected="x", images=[img(1)]),
            key_row("c", chosen="x", rejected="y", images=[img(1)])]
    assert outcome(rows) == [("label_conflict", "b (votes 2:1)"),
                             ("label_conflict", "a (votes 1:2)"),
                             ("label_conflict", "b (votes 2:1)")]
    assert outcome(rows, conflicts="keep-majority") == [
        (None, None), ("label_conflict", "a (outvoted 2:1)"), ("exact_duplicate", "a")]
    # 1:1 has no majority: both sides go
    assert outcome(rows[:2], conflicts="keep-majority") == [
        ("label_conflict", "b (votes 1:1)"), ("label_conflict", "a (votes 1:1)")]


def test_near_duplicates_several_images_no_image_and_corrupt_rows() -> None:
    far = 0xFFFF_FFFF_0000_0000
    rows = [
        key_row("a", images=[img(1, 0), img(2, far)], pixels=200),
        key_row("b", images=[img(3, 0b111), img(4, far ^ 1)]),  # 3 and 1 bits away
        key_row("c", images=[img(3, 0b111)]),  # one image: another group
        key_row("d", images=[img(5, 0b111)]),
        key_row("e", images=[img(6, 0), img(7, far)], error="image 1: OSError: bad"),
        key_row("f"), key_row("g"), key_row("h", chosen="w"),  # text only
        key_row("i", prompt=1, images=[img(1, 0), img(2, far)]),  # another prompt
    ]
    assert outcome(rows) == [
        (None, None), ("near_duplicate_image", "a distance=3"), (None, None),
        ("near_duplicate_image", "c distance=0"), ("corrupt_image", "image 1: OSError: bad"),
        (None, None), ("exact_duplicate", "f"), (None, None), (None, None)]
    assert outcome(rows, max_distance=2)[1] == (None, None)


def test_a_chain_of_near_duplicates_rejects_only_what_is_near_the_survivor() -> None:
    # a ~ b ~ c ~ d, 6 bits a step: one union-find cluster, but c is 12 bits from a
    a, b, c, d = 0, 0b111111, 0b111111_111111, 0b111111_111111_111111
    rows = [key_row("a", images=[img(1, a)], pixels=400),
            key_row("b", images=[img(2, b)], pixels=300),
            key_row("c", images=[img(3, c)], pixels=200),
            key_row("d", images=[img(4, d)], pixels=100),
            key_row("e", images=[img(5, d ^ 1)])]  # 1 bit from d, 19 from a
    assert outcome(rows) == [
        (None, None), ("near_duplicate_image", "a distance=6"),
        (None, None), ("near_duplicate_image", "c distance=6"),  # c survives: its own group
        ("near_duplicate_image", "c distance=7")]
    # every near-duplicate rejection is within max_distance of the row it names
    assert outcome(rows, max_distance=12) == [
        (None, None), ("near_duplicate_image", "a distance=6"),
        ("near_duplicate_image", "a distance=12"), (None, None),
        ("near_duplicate_image", "d distance=1")]


def test_exact_copies_share_a_group_even_when_a_stored_hash_differs() -> None:
    # "b" holds the pixels of "a" (same image id, same exact key) but a reused stored hash
    # 30 bits away; "c" and "d" are another prompt's rows 30 bits apart
    far = (1 << 30) - 1
    rows = [key_row("a", images=[(1, 0)], pixels=200), key_row("b", images=[(1, far)]),
            key_row("c", prompt=1, images=[(2, 0)]), key_row("d", prompt=1, images=[(3, far)])]
    assert outcome(rows) == [(None, None), ("exact_duplicate", "a"), (None, None),
                             (None, None)]


def test_only_images_of_rows_sharing_a_prompt_are_compared() -> None:
    """A near-identical image under another prompt neither joins a cluster nor counts."""
    rows = [key_row("a", images=[img(1, 0)]), key_row("b", images=[img(2, 1)]),
            key_row("c", prompt=1, images=[img(3, 3)]),  # 2 bits from a, alone in its prompt
            key_row("d", prompt=2, images=[img(4, 0), img(5, 9)])]
    keys = key_table(rows)
    assert_same(keys, DedupConfig())
    stats = decide(keys, DedupConfig()).extra["dedup"]
    assert {k: stats[k] for k in ("images_compared", "distinct_images", "distinct_hashes",
                                  "clusters", "distance_histogram")} == {
        "images_compared": 2, "distinct_images": 2, "distinct_hashes": 2, "clusters": 1,
        "distance_histogram": {"1": 1}}


def test_near_match_pair_keeps_other_response_pairs() -> None:
    rows = [key_row("a", chosen="x", images=[img(1, 0)]),
            key_row("b", chosen="z", images=[img(2, 1)])]
    assert outcome(rows) == [(None, None), ("near_duplicate_image", "a distance=1")]
    assert outcome(rows, near_match="pair") == [(None, None), (None, None)]


@pytest.mark.parametrize("n", [0, 1])
def test_tiny_tables(n: int) -> None:
    assert outcome([key_row("a", images=[img(1)])] * n) == [(None, None)] * n


def test_group_counts_follow_the_first_word_of_the_detail() -> None:
    # pair ids with spaces or empty: counted as the reference counts them
    rows = [key_row("a b", images=[img(1)]), key_row("a c", images=[img(1)], pixels=50),
            key_row("a", prompt=1, images=[img(2)]), key_row("a d", prompt=1, images=[img(2)]),
            key_row("", prompt=2), key_row("", prompt=2),
            key_row("", prompt=3, images=[img(3, 0)]),
            key_row("z", prompt=3, images=[img(4, 1)]),
            key_row("\xa0", prompt=4, images=[img(3, 0)]),
            key_row("y", prompt=4, images=[img(4, 1)])]
    outcome(rows)


@settings(max_examples=100, deadline=None)
@given(chunks=st.lists(st.lists(st.sampled_from(PAIR_IDS + [None]), max_size=5), max_size=6),
       slab=st.integers(1, 8), data=st.data())
def test_take_from_chunks(chunks: list[list[str | None]], slab: int, data: st.DataObject) -> None:
    column = pa.chunked_array([pa.array(c, pa.string()) for c in chunks], pa.string())
    n = len(column)
    rows = sorted(data.draw(st.lists(st.integers(0, n - 1), max_size=12) if n else st.just([])))
    with mock.patch.object(dedup, "_SLAB", slab):
        got = dedup._take(column, np.asarray(rows, dtype=np.int64))
    assert got.to_pylist() == [column[r].as_py() for r in rows]


def test_space_class_is_what_str_split_splits_on() -> None:
    import pyarrow.compute as pc

    spaces = [chr(c) for c in range(0x110000) if chr(c).isspace()]
    others = ["a", "\u200b", "\ufeff", "_", "\U0001d11e"]
    got = pc.match_substring_regex(pa.array(spaces + others), dedup._SPACE_CLASS)
    assert got.to_pylist() == [True] * len(spaces) + [False] * len(others)


@pytest.mark.parametrize("cfg", [DedupConfig(prefer=("src1",)),
                                 DedupConfig(conflicts="keep-majority", near_match="pair",
                                             max_distance=4)])
def test_the_benchmarks_synthetic_keys(cfg: DedupConfig) -> None:
    """Thousands of rows in the engine's batches of 64 (strings taken slab by slab)."""
    from bench.bench_dedup import synthetic_keys

    assert_same(synthetic_keys(20_000, seed=3), cfg)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.tuples(st.sampled_from([0, 1, 2**32, 2**63 + 5, 2**64 - 1]),
                                 st.integers(0, 2), st.sampled_from([0, 7, 2**40])),
                       max_size=30),
       columns=st.integers(1, 3), pack=st.booleans())
def test_grouping_by_columns(values: list[tuple[int, int, int]], columns: int,
                             pack: bool) -> None:
    rows = np.arange(100, 100 + len(values), dtype=np.int64)
    cols = [np.array([v[k] for v in values], dtype=np.uint64) for k in range(columns)]
    if pack and columns == 2:
        cols = list(dedup._pack(*cols))
    members, group = dedup._shared(rows, *cols)
    by: dict[tuple[int, ...], set[int]] = {}
    for r, v in zip(rows.tolist(), values, strict=True):
        by.setdefault(v[:columns], set()).add(r)
    want = sorted(sorted(g) for g in by.values() if len(g) > 1)
    got: dict[int, list[int]] = {}
    for r, g in zip(members.tolist(), group.tolist(), strict=True):
        got.setdefault(g, []).append(r)
    assert sorted(got) == list(range(len(got)))  # numbered 0, 1, ...
    assert list(group) == sorted(group)  # ordered by group
    assert sorted(sorted(g) for g in got.values()) == want
