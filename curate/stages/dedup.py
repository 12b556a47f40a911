"""`curate dedup`: exact duplicates, label conflicts and near-duplicate images.

Pass 1, `annotate` (pure, per record batch, run by the engine's workers; locally threads for
photos, processes for small images, see `hash_on_threads`):
compact keys for every row: digests of the normalised prompt, of the exact pair
and of the unordered pair, and one perceptual hash per image (decoded small; taken
from the input's `image_<method>` column when it is there).

Pass 2, `decide` (global, over the keys only), in this order:
1. `corrupt_image`: an image that cannot be decoded (ingest normally catches these).
2. `label_conflict`: same prompt, images and responses with chosen and rejected
   swapped: every row of the group, or with `conflicts="keep-majority"` and three
   or more votes, only the outvoted side.
3. Duplicate groups: rows with the same normalised prompt (and, with
   `near_match="pair"`, the same responses) and number of images whose every image falls
   in the same cluster, where clusters are the connected components (union-find) of
   "within `max_distance` bits" among the images at the same place of those rows (and of
   "the same place of exact copies"), found pair by pair in small groups and with a
   multi-index-hashing range search in large ones (`radius_pairs_within`), so the work
   follows the prompt groups, not n; text-only rows group by their exact key.
   In each group one row survives: the first of `prefer`'s sources, then the
   larger image (pixels), then the larger file (for the same pixels, the better
   JPEG quality), then the smallest `pair_id`, then the earlier row. The others name it in
   `reject_detail`: `exact_duplicate` when they equal it (normalised prompt,
   decoded pixels, both responses), else `near_duplicate_image` plus the distance,
   but only when every image is within `max_distance` of the survivor's: a cluster
   can chain photos far apart (bench_recipe, 200k pairs: 12,358 of 21,312 near-duplicate
   rejections were 12-46 bits from their survivor before this rule), so the rows further
   away form the group again without it and the next survivor is chosen among them.
   Exact copies always share a group, so every detail names a row that is kept.
Pass 2 works on numpy and Arrow columns (rows as positions, digests as integer words);
the reasons and details are strings only at the end, and only the rejected rows' details
(peak memory about 170 B a row over the keys, see docs/scaling.md).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache, partial
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate import dataset as D
from curate.hashing import DEFAULT_METHOD, HASH_SIZE, METHODS, perceptual_hash
from curate.manifest import Manifest
from curate.pipeline.entry import RUN_ONLY, configured, recorded
from curate.pipeline.runner import Decisions, register_stage, run_filter_stage
from curate.text import normalise_prompt

if TYPE_CHECKING:
    from curate.engine.protocol import Engine

STAGE = "dedup"
CONFLICT_MODES = ("drop", "keep-majority")
NEAR_MATCH_MODES = ("prompt", "pair")

# Defaults measured on 28 photos, ukbench's and scikit-image's (the slow test in
# tests/test_dedup_ukbench.py): re-encoded (JPEG q30-95, PNG) and resized (50-200%)
# copies stay within 6 bits with phash (dhash 9, ahash 4, whash 2; the worst case is a
# brick texture), 1-2% crops of the ukbench photos within 8 (phash), while distinct
# photos are 20+ bits apart with phash (dhash 16+, ahash 11+, whash 10+).
DEFAULT_MAX_DISTANCE = {"phash": 10, "dhash": 10, "ahash": 6, "whash": 6}

ANNOTATE_COLUMNS = ("pair_id", "source", "prompt", "chosen", "rejected", "images")
BATCH_SIZE = 64  # rows a task: a few MB of images, enough tasks to keep every worker busy
_DIGEST = 16  # bytes of the row keys (128-bit blake2b)
_MEMO_LIMIT = 500_000
_MEMO: dict[tuple[str, str], int] = {}


def hash_column(method: str) -> str:
    """The column that stores one `method` hash per image: `image_phash`, `image_dhash`, ..."""
    return f"image_{method}"


@dataclass(frozen=True)
class DedupConfig:
    image_hash: str = DEFAULT_METHOD
    max_distance: int | None = None  # None: DEFAULT_MAX_DISTANCE[image_hash]
    prefer: tuple[str, ...] = ()
    conflicts: str = "drop"
    near_match: str = "prompt"
    batch_size: int = field(default=BATCH_SIZE, metadata=RUN_ONLY)  # rows per annotate call
    hash_size: int = field(default=HASH_SIZE, init=False)

    def __post_init__(self) -> None:
        if self.image_hash not in METHODS:
            raise ValueError(f"--image-hash must be one of {', '.join(METHODS)}, "
                             f"got {self.image_hash!r}")
        if self.conflicts not in CONFLICT_MODES:
            raise ValueError(f"--conflicts must be one of {', '.join(CONFLICT_MODES)}, "
                             f"got {self.conflicts!r}")
        if self.near_match not in NEAR_MATCH_MODES:
            raise ValueError(f"--near-match must be one of {', '.join(NEAR_MATCH_MODES)}, "
                             f"got {self.near_match!r}")
        if self.max_distance is None:
            object.__setattr__(self, "max_distance", DEFAULT_MAX_DISTANCE[self.image_hash])
        elif not 0 <= self.max_distance <= 32:
            raise ValueError(f"--max-distance must be in 0..32 bits, got {self.max_distance}")
        object.__setattr__(self, "prefer", tuple(s for s in self.prefer if s))

    @property
    def column(self) -> str:
        return hash_column(self.image_hash)


# -- pass 1: per-batch keys --------------------------------------------------------------
def _digest(obj: Any) -> bytes:
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return hashlib.blake2b(text.encode("utf-8"), digest_size=_DIGEST).digest()


def _hash_image(data: bytes | None, sha: str | None, method: str) -> tuple[int, bool]:
    """(hash, decoded?): memoised per process by the bytes' sha256, so never decoded twice."""
    if data is None:
        raise ValueError("the image has no bytes")
    key = (method, sha or hashlib.sha256(data).hexdigest())
    hit = _MEMO.get(key)
    if hit is not None:
        return hit, False
    code = perceptual_hash(data, method)
    if len(_MEMO) >= _MEMO_LIMIT:
        _MEMO.clear()
    _MEMO[key] = code
    return code, True


def _pixel_hashes(images: pa.StructArray) -> list[str | None]:
    """The decoded-pixel hash of each image (`pixel_hash`; older folders: `pixel_sha256`)."""
    names = {images.type.field(i).name for i in range(images.type.num_fields)}
    for name in ("pixel_hash", "pixel_sha256"):
        if name in names:
            return images.field(name).to_pylist()
    return [None] * len(images)


KEY_SCHEMA = pa.schema([
    ("pair_id", pa.string()),
    ("source", pa.string()),
    ("prompt_key", pa.binary(_DIGEST)),
    ("responses_key", pa.binary(_DIGEST)),
    ("exact_key", pa.binary(_DIGEST)),
    ("pair_key", pa.binary(_DIGEST)),
    ("swapped", pa.bool_()),
    ("image_ids", pa.list_(pa.uint64())),
    ("codes", pa.list_(pa.uint64())),
    ("pixels", pa.int64()),
    ("nbytes", pa.int64()),  # encoded size: for equal pixels, the better-quality copy wins
    ("decoded", pa.int32()),  # images decoded for a hash here (not memo hits)
    ("reused", pa.int32()),  # hashes taken from the input's column
    ("error", pa.string()),
])


def annotate(batch: pa.RecordBatch, method: str = DEFAULT_METHOD) -> pa.RecordBatch:
    """Compact keys of one batch (schema KEY_SCHEMA); pure apart from a hash memo.

    Needs `pair_id, source, prompt, chosen, rejected, images` and, when present,
    the `image_<method>` column, whose values are reused image by image.
    """
    n = batch.num_rows
    col = hash_column(method)
    names = batch.schema.names
    stored = batch.column(col).to_pylist() if col in names else [None] * n
    images = batch.column("images")
    lengths = [m or 0 for m in images.value_lengths().to_pylist()]  # (pc.fill_null imports pandas)
    flat = images.flatten()
    sha = flat.field("sha256").to_pylist()
    pixel_sha = _pixel_hashes(flat)
    widths = flat.field("width").to_pylist()
    heights = flat.field("height").to_pylist()
    raw = flat.field("bytes")  # read image by image, only when a hash must be computed
    sizes = pc.binary_length(raw).to_pylist()
    prompts = batch.column("prompt").to_pylist()
    chosen = batch.column("chosen").to_pylist()
    rejected = batch.column("rejected").to_pylist()

    out: dict[str, list[Any]] = {name: [] for name in KEY_SCHEMA.names}
    offset = 0
    for r in range(n):
        m = lengths[r]
        known: list[Any] | None = stored[r]
        prev: list[Any] = known if known is not None and len(known) == m else [None] * m
        ids, codes, errors = [], [], []
        decoded_here = reused = pixels = nbytes = 0
        for t in range(m):
            k = offset + t
            ident = pixel_sha[k] or sha[k]
            if ident is None:
                data = raw[k].as_py()
                ident = hashlib.sha256(data).hexdigest() if data is not None else "0" * 16
            ids.append(int(ident[:16], 16))
            pixels += (widths[k] or 0) * (heights[k] or 0)
            nbytes += sizes[k] or 0
            code = prev[t]
            if code is not None:
                reused += 1
            else:
                try:
                    code, decoded = _hash_image(raw[k].as_py(), sha[k], method)
                    decoded_here += decoded
                except Exception as exc:  # a corrupt image never stops the run
                    errors.append(f"image {t}: {type(exc).__name__}: {exc}")
            codes.append(code)
        offset += m
        prompt = normalise_prompt(prompts[r])
        c, j = chosen[r] or "", rejected[r] or ""
        out["prompt_key"].append(_digest(prompt))
        out["responses_key"].append(_digest([c, j]))
        out["exact_key"].append(_digest([prompt, ids, c, j]))
        out["pair_key"].append(_digest([prompt, ids, sorted((c, j))]))
        out["swapped"].append(c > j)
        out["image_ids"].append(ids)
        out["codes"].append(codes)
        out["pixels"].append(pixels)
        out["nbytes"].append(nbytes)
        out["decoded"].append(decoded_here)
        out["reused"].append(reused)
        out["error"].append("; ".join(errors) if errors else None)
    out["pair_id"] = batch.column("pair_id")
    out["source"] = batch.column("source")
    return pa.RecordBatch.from_arrays([_to_arrow(out[f.name], f.type) for f in KEY_SCHEMA],
                                      schema=KEY_SCHEMA)


def _from_numpy(values: np.ndarray, type_: pa.DataType,
                missing: np.ndarray | None = None) -> pa.Array:
    validity = None
    if missing is not None and missing.any():
        validity = pa.py_buffer(np.packbits(~missing, bitorder="little"))
    if type_ == pa.bool_():
        data = pa.py_buffer(np.packbits(values.astype(bool), bitorder="little"))
    else:
        data = pa.py_buffer(np.ascontiguousarray(values, dtype=_NUMPY[type_]))
    return pa.Array.from_buffers(type_, len(values), [validity, data])


_NUMPY = {pa.bool_(): np.bool_, pa.int8(): np.int8, pa.int32(): np.int32, pa.int64(): np.int64,
          pa.uint64(): np.uint64}


def _to_arrow(values: Any, type_: pa.DataType) -> pa.Array:
    """An Arrow array built from buffers: `pa.array` probes its input with pandas, and
    importing pandas costs every worker process half a second of start-up."""
    if isinstance(values, pa.Array | pa.ChunkedArray):
        return values
    n = len(values)
    if pa.types.is_fixed_size_binary(type_):
        return pa.Array.from_buffers(type_, n, [None, pa.py_buffer(b"".join(values))])
    if pa.types.is_list(type_):
        lengths = np.fromiter((len(v) for v in values), dtype=np.int32, count=n)
        offsets = np.concatenate([np.zeros(1, np.int32), np.cumsum(lengths, dtype=np.int32)])
        flat = [x for v in values for x in v]
        missing = np.fromiter((x is None for x in flat), dtype=bool, count=len(flat))
        numbers: np.ndarray = np.fromiter((x or 0 for x in flat), dtype=_NUMPY[type_.value_type],
                              count=len(flat))
        items = _from_numpy(numbers, type_.value_type, missing)
        return pa.Array.from_buffers(type_, n, [None, pa.py_buffer(offsets)], children=[items])
    if pa.types.is_string(type_):
        if all(v is None for v in values):
            return pa.nulls(n, type_)
        return pa.array(values, type=type_)  # only when an image was corrupt: rare
    return _from_numpy(np.asarray(values, dtype=_NUMPY[type_]), type_)


# -- pass 2: decisions over the keys ----------------------------------------------------
# Columns, not objects: rows are int64 positions, digests uint64 words, groups runs of a
# stable sort, and the reasons and details strings only once, at the end, for the rejected
# rows (a few hundred bytes a row at most, see docs/scaling.md).
REASONS = ("corrupt_image", "label_conflict", "exact_duplicate", "near_duplicate_image")
CORRUPT, CONFLICT, EXACT, NEAR = range(len(REASONS))
# what a detail says: the error, or the pair_id of the row it names plus its numbers
_ERROR, _VOTES, _OUTVOTED, _SAME, _DISTANCE = range(5)
_REASON_OF = np.array([CORRUPT, CONFLICT, CONFLICT, EXACT, NEAR], dtype=np.int8)
_SLAB = 65536  # rows of a column concatenated at a time (`_take`): a few MB each
# what `str.split` splits on (nothing above U+3000 is whitespace), as an RE2 class
_SPACE_CLASS = "[" + "".join(f"\\x{{{c:x}}}" for c in range(0x3001) if chr(c).isspace()) + "]"


def _release() -> None:
    """Give freed memory back to the OS between the phases of `decide`. glibc keeps freed
    numpy arrays below its mmap threshold (which rises to the largest array freed, up to
    32 MB) in its heap, where Arrow's allocator cannot reuse them: without this, the
    strings built at the end would come on top of the search's garbage."""
    pa.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None elsewhere (looked up on the driver, not in workers)."""
    try:
        import ctypes

        return ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return None


def _fixed(column: pa.ChunkedArray) -> np.ndarray:
    """A fixed-size binary column (16-byte digests) as rows of uint64 words."""
    arr = column.combine_chunks()
    words = arr.type.byte_width // 8
    if len(arr) == 0:
        return np.zeros((0, words), dtype="<u8")
    flat = np.frombuffer(arr.buffers()[1], dtype="<u8", count=len(arr) * words,
                         offset=arr.offset * arr.type.byte_width)
    return flat.reshape(len(arr), words)


def _words(keys: pa.Table, names: Sequence[str], rows: np.ndarray) -> list[np.ndarray]:
    """The uint64 words of the digest columns `names` at `rows`, one array a word."""
    out = []
    for name in names:
        words = _fixed(keys[name])
        out += [words[rows, w] for w in range(words.shape[1])]
        del words
    return out


def _numpy(column: pa.Array | pa.ChunkedArray, dtype: Any) -> np.ndarray:
    """A numeric or boolean column as one numpy array, nulls as 0 (False). Arrow joins the
    chunks itself: a Python object per chunk costs about a kilobyte, tens of megabytes over
    the engine's batches of 64 rows."""
    if column.null_count:
        column = column.fill_null(False if dtype is np.bool_ else 0)
    if isinstance(column, pa.ChunkedArray) and column.num_chunks == 0:
        return np.zeros(0, dtype=dtype)
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=dtype)


def _chunk_starts(column: pa.ChunkedArray) -> np.ndarray:
    """Where each chunk of `column` starts, and its length at the end."""
    lengths = np.fromiter(map(len, column.iterchunks()), dtype=np.int64,
                          count=column.num_chunks)
    return np.concatenate([np.zeros(1, dtype=np.int64), np.cumsum(lengths)])


def _take(column: pa.ChunkedArray, rows: np.ndarray) -> pa.ChunkedArray:
    """`column[rows]` for sorted `rows`, a few chunks at a time: Arrow's take on a chunked
    array first concatenates all of it (for pair_id, a copy of the whole column)."""
    if rows.size == 0:
        return pa.chunked_array([], column.type)
    starts = _chunk_starts(column)
    cuts = np.unique(np.searchsorted(starts, np.arange(0, starts[-1], _SLAB), side="right") - 1)
    pieces = []
    for a, b in zip(cuts.tolist(), [*cuts[1:].tolist(), column.num_chunks], strict=True):
        lo, hi = np.searchsorted(rows, starts[[a, b]]).tolist()
        if lo < hi:
            slab = pa.concat_arrays([column.chunk(i) for i in range(a, b)])
            pieces.append(slab.take(_from_numpy(rows[lo:hi] - starts[a], pa.int64())))
    return pa.chunked_array(pieces, column.type)


def _flat(column: pa.ChunkedArray) -> np.ndarray:
    """The elements of a list<uint64> column, row after row, nulls as 0."""
    return _numpy(pc.list_flatten(column), np.uint64)


def _shared(rows: np.ndarray, *columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The `rows` that share every column (values given per row of `rows`) with another
    row, ordered by group, and the group of each, numbered 0, 1, ...

    One fast sort of every row by the first column; only the rows tied on it (for a
    digest, the duplicates) are sorted by the others."""
    if rows.size < 2:
        return rows[:0], np.zeros(0, dtype=np.int64)
    order = np.argsort(columns[0])
    ordered = columns[0][order]
    tied = np.zeros(rows.size, dtype=bool)
    tied[1:] = ordered[1:] == ordered[:-1]
    tied[:-1] |= tied[1:]
    order, ordered = order[tied], ordered[tied]
    starts = np.ones(order.size, dtype=bool)
    starts[1:] = ordered[1:] != ordered[:-1]
    if len(columns) > 1 and order.size:
        order = order[np.lexsort((*(c[order] for c in columns[:0:-1]), np.cumsum(starts)))]
        for column in columns[1:]:
            ordered = column[order]
            starts[1:] |= ordered[1:] != ordered[:-1]
    group = np.cumsum(starts) - 1
    multi = np.bincount(group)[group] > 1
    return rows[order[multi]], _renumber(group[multi])


def _pack(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, ...]:
    """Two columns of non-negative integers as one (a << 32 | b) when both fit 32 bits:
    one sort instead of two."""
    if a.size == 0 or (a.min() >= 0 and b.min() >= 0 and a.max() < 2**32 and b.max() < 2**32):
        return ((a.astype(np.uint64) << np.uint64(32)) | b.astype(np.uint64),)
    return a, b


def _renumber(group: np.ndarray) -> np.ndarray:
    """Sorted group numbers with gaps as 0, 1, ..."""
    if group.size == 0:
        return group
    starts = np.ones(group.size, dtype=np.int64)
    starts[1:] = group[1:] != group[:-1]
    return np.cumsum(starts) - 1


def _firsts(keys: pa.Table, prefer: Sequence[str], members: np.ndarray,
            group: np.ndarray) -> np.ndarray:
    """The survivor of each group 0, 1, ... of `members` (distinct rows): its member first
    in the survivor order, that is the first of `prefer`'s sources, then more pixels, then
    the larger file, then the smaller pair_id (by code point, as Python compares strings:
    UTF-8 bytes sort the same), then the earlier row. Only the members' keys are read.

    Key by key, each group keeps only its members that are best on it (no sort of every
    member): after pixels and file size few groups are still tied, and only their
    members' pair_ids are read and sorted."""
    groups = int(group.max()) + 1 if group.size else 0
    at = np.arange(members.size)  # the candidates, as positions in `members`
    if prefer:
        by_row = np.argsort(members)
        rank = {s: i for i, s in enumerate(prefer)}  # a source listed twice: its last place
        listed = pc.index_in(_take(keys["source"], members[by_row]),
                             value_set=pa.array(list(rank), pa.string()))
        source = np.empty(members.size, dtype=np.int64)
        source[by_row] = np.array([*rank.values(), len(rank)], dtype=np.int64)[
            _numpy(listed.fill_null(len(rank)), np.int64)]
        del by_row, listed
        at = _best(at, group, source, groups)
    at = _best(at, group, -_numpy(keys["pixels"], np.int64)[members[at]], groups)
    at = _best(at, group, -_numpy(keys["nbytes"], np.int64)[members[at]], groups)
    tied = np.bincount(group[at], minlength=groups)[group[at]] > 1
    if tied.any():
        ties = at[tied]
        by_row = np.argsort(members[ties])
        # stable: equal pair_ids keep the rows' order, so the earlier row comes first
        by_pid = _numpy(pc.sort_indices(_take(keys["pair_id"], members[ties][by_row])), np.int64)
        pair_id = np.empty(ties.size, dtype=np.int64)
        pair_id[by_row[by_pid]] = np.arange(ties.size)
        at = np.concatenate([at[~tied], _best(ties, group, pair_id, groups)])
    first = np.empty(groups, dtype=members.dtype)
    first[group[at]] = members[at]
    return first


def _best(at: np.ndarray, group: np.ndarray, key: np.ndarray, groups: int) -> np.ndarray:
    """The candidates `at` (positions) whose `key` (given per candidate) is their group's
    smallest."""
    best = np.full(groups, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(best, group[at], key)
    return at[key == best[group[at]]]


class _Verdicts:
    """The rejections so far, as columns: the rows, what their detail says (`_ERROR`,
    `_VOTES`, ...), the row it names and up to two numbers. `alive`: not rejected yet."""

    def __init__(self, n: int) -> None:
        self.alive = np.ones(n, dtype=bool)
        self._parts: list[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def reject(self, kind: int, rows: np.ndarray, named: np.ndarray | None = None,
               a: np.ndarray | None = None, b: np.ndarray | None = None) -> None:
        if rows.size == 0:
            return
        self.alive[rows] = False
        none = np.zeros(rows.size, dtype=np.int64)
        named_, a_, b_ = (none if x is None else x for x in (named, a, b))
        self._parts.append((kind, rows, named_, a_, b_))

    def columns(self, keys: pa.Table) -> tuple[pa.Array, pa.Array, dict[int, int]]:
        """reject_reason and reject_detail of every row (null: kept), and for EXACT and
        NEAR how many rows survive their groups."""
        n = keys.num_rows
        reason = np.zeros(n, dtype=np.int8)
        where = np.zeros(n, dtype=np.int32 if n < 2**31 else np.int64)
        details: list[pa.ChunkedArray] = []
        survivors = {}
        at = 0
        for kind in (_ERROR, _VOTES, _OUTVOTED, _SAME, _DISTANCE):
            parts = [p for p in self._parts if p[0] == kind]
            rows, named, a, b = (np.concatenate([np.zeros(0, dtype=np.int64),
                                                 *(p[k] for p in parts)]) for k in range(1, 5))
            # the named rows in order: their pair_ids taken in one pass over the column
            order = np.argsort(rows if kind == _ERROR else named, kind="stable")
            rows, named, a, b = rows[order], named[order], a[order], b[order]
            reason[rows] = _REASON_OF[kind]
            where[rows] = np.arange(at, at + rows.size, dtype=where.dtype)
            at += rows.size
            if kind == _ERROR:
                details.append(_take(keys["error"], rows))
                continue
            pair_ids = _take(keys["pair_id"], named)
            details.append(_details(kind, pair_ids, a, b))
            if kind in (_SAME, _DISTANCE):
                survivors[EXACT if kind == _SAME else NEAR] = _survivors(pair_ids, details[-1])
        reasons = pa.array(REASONS, pa.string()).take(_from_numpy(reason, pa.int8(), self.alive))
        del reason
        index = _from_numpy(where, pa.from_numpy_dtype(where.dtype), self.alive)
        del where
        text = pa.concat_arrays([pa.array([], pa.string()), *(c for d in details
                                                               for c in d.chunks)])
        del details
        return reasons, text.take(index), survivors


def _details(kind: int, pair_ids: pa.ChunkedArray, a: np.ndarray,
             b: np.ndarray) -> pa.ChunkedArray:
    """The reject_detail strings of rejections that name a row, of one kind."""
    if kind == _SAME:
        return pair_ids
    first = pc.cast(pa.array(a), pa.string())
    if kind == _DISTANCE:
        return pc.binary_join_element_wise(pair_ids, " distance=", first, "")
    word = " (votes " if kind == _VOTES else " (outvoted "
    return pc.binary_join_element_wise(pair_ids, word, first, ":",
                                       pc.cast(pa.array(b), pa.string()), ")", "")


def _survivors(pair_ids: pa.ChunkedArray, details: pa.ChunkedArray) -> int:
    """How many rows survive one reason's groups: the distinct first words of its details,
    which are the named rows' pair_ids unless one is empty or holds whitespace."""
    if len(pair_ids) == 0:
        return 0
    odd = pc.or_(pc.match_substring_regex(pair_ids, _SPACE_CLASS),
                 pc.equal(pc.utf8_length(pair_ids), 0))
    if not pc.any(odd).as_py():
        return int(pc.count_distinct(pair_ids).as_py())
    return len({d.split()[0] for d in details.to_pylist() if d})


def _label_conflicts(keys: pa.Table, v: _Verdicts, prefer: Sequence[str], mode: str) -> int:
    """Reject the rows of groups with chosen and rejected swapped; returns the groups."""
    rows = np.flatnonzero(v.alive)
    members, group = _shared(rows, *_words(keys, ["pair_key"], rows))
    del rows
    swapped = _numpy(keys["swapped"], np.bool_)[members]
    flipped = np.bincount(group, weights=swapped).astype(np.int64)
    votes = np.stack([np.bincount(group) - flipped, flipped], axis=1)  # per group: sides
    both = np.asarray((votes > 0).all(axis=1))
    keep = both[group]
    members, side = members[keep], swapped[keep].astype(np.int64)
    group = (np.cumsum(both) - 1)[group[keep]]
    votes = votes[both]
    # per group: the first row of each side in the survivor order
    best = _firsts(keys, prefer, members, 2 * group + side).reshape(-1, 2)
    named = best[group, 1 - side]
    own, other = votes[group, side], votes[group, 1 - side]
    if mode == "keep-majority":  # 3+ votes and no tie: only the minority goes
        total = votes.sum(axis=1)
        decided = ((total >= 3) & (votes[:, 0] != votes[:, 1]))[group]
    else:
        decided = np.zeros(members.size, dtype=bool)
    outvoted = decided & (own < other)
    v.reject(_OUTVOTED, members[outvoted], named[outvoted], other[outvoted], own[outvoted])
    drop = ~decided
    v.reject(_VOTES, members[drop], named[drop], own[drop], other[drop])
    return int(both.sum())


def _histogram(values: np.ndarray) -> dict[str, int]:
    keys, counts = np.unique(np.asarray(values, dtype=np.int64), return_counts=True)
    return {str(k): c for k, c in zip(keys.tolist(), counts.tolist(), strict=True)}


def _distinct_images(inverse: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The key (`inverse`: small integers, such as indices of distinct hashes) of every
    distinct (key, image id)."""
    members, group = _shared(np.arange(inverse.size), inverse, ids)
    alone = np.ones(inverse.size, dtype=bool)  # no other image has its hash and id
    alone[members] = False
    first = np.ones(group.size, dtype=bool)
    first[1:] = group[1:] != group[:-1]
    return np.concatenate([inverse[alone], inverse[members[first]]])


def _image_clusters(codes: np.ndarray, ids: np.ndarray, first: np.ndarray, count: np.ndarray,
                    members: np.ndarray, group: np.ndarray, exact: np.ndarray,
                    max_distance: int) -> tuple[np.ndarray, dict[str, Any]]:
    """The cluster label of every image of `members` (rows grouped by text and image count,
    `group`), as a column over all the live images (-1: not compared), and the manifest's
    statistics.

    Only images at the same place in rows of the same group are compared: a row can only
    be a near duplicate of a row with its text, so the search's work follows the groups,
    not the number of images (one search over every hash grows as n^1.8). A cluster is a
    connected component (union-find) of "within `max_distance` bits" among them, and of
    "the same place of exact copies" (same `exact` key, so the same pixels, even where a
    reused stored hash differs), so exact copies always share a group. Every decision is
    the same as with clusters over all hashes: a row is rejected only as an exact copy of
    its survivor or within `max_distance` of it at every place, a link made here directly,
    and the survivor order is the same within each smaller group."""
    from curate.index.hamming import radius_pairs_within
    from curate.index.unionfind import components

    n = count[members].astype(np.int64)
    place = _places(n)
    image = np.repeat(first[members], n) + place  # the compared images, row after row
    segment = np.repeat(group, n) * max(int(n.max(initial=0)), 1) + place
    del place
    code = codes[image]
    # nodes: the distinct (group and place, hash); the search compares a segment's nodes
    order = _by_segment_and_code(segment, code)
    seg_sorted, code_sorted = segment[order], code[order]
    del segment
    new = np.ones(order.size, dtype=bool)
    new[1:] = (seg_sorted[1:] != seg_sorted[:-1]) | (code_sorted[1:] != code_sorted[:-1])
    node_of = np.empty(order.size, dtype=np.int64)
    node_of[order] = np.cumsum(new) - 1
    node_code, node_segment = code_sorted[new], seg_sorted[new]
    del order, seg_sorted, code_sorted, new
    ii, jj, dd = radius_pairs_within(node_code, node_segment, max_distance)
    del node_segment
    labels = np.full(codes.size, -1, dtype=np.int64)  # first the node of each image
    labels[image] = node_of
    copies, copy_group = _shared(members, exact[members, 0], exact[members, 1], group)
    head = np.ones(copies.size, dtype=bool)
    head[1:] = copy_group[1:] != copy_group[:-1]
    copy_of = copies[head][np.cumsum(head) - 1]  # each copy's first copy
    copies, copy_of = copies[~head], copy_of[~head]
    n = count[copies].astype(np.int64)
    place = _places(n)
    ci = labels[np.repeat(first[copies], n) + place]
    cj = labels[np.repeat(first[copy_of], n) + place]
    del copies, copy_group, copy_of, head, n, place
    node_label = components(node_code.size, np.concatenate([ii, ci]),
                            np.concatenate([jj, cj]))
    del ii, jj, ci, cj
    labels[image] = node_label[node_of]

    node_of_image = _distinct_images(node_of, ids[image])
    per_node = np.bincount(node_of_image, minlength=node_code.size)
    zero = int((per_node * (per_node - 1) // 2).sum())  # distinct images, identical hashes
    sizes = np.bincount(node_label[node_of_image], minlength=node_code.size)
    sizes = sizes[sizes > 1]
    distances = _histogram(dd)
    if zero:
        distances = {"0": zero, **distances}
    return labels, {
        "images_compared": int(image.size),
        "distinct_images": int(node_of_image.size),
        "distinct_hashes": _distinct(node_code),
        "clusters": int(sizes.size),
        "cluster_size_histogram": _histogram(sizes),
        "distance_histogram": distances,
    }


def _by_segment_and_code(segment: np.ndarray, code: np.ndarray) -> np.ndarray:
    """`np.lexsort((code, segment))`, as one sort of the codes and one of packed
    (segment, code rank) words where they fit (lexsort's passes are slow at millions)."""
    if segment.size >= 2**32 or (segment.size and (segment.min() < 0
                                                    or segment.max() >= 2**32)):
        return np.lexsort((code, segment))
    by_code = np.argsort(code, kind="stable")
    rank = np.empty(code.size, dtype=np.uint64)
    rank[by_code] = np.arange(code.size, dtype=np.uint64)
    packed = (segment.astype(np.uint64) << np.uint64(32)) | rank
    packed.sort()
    return by_code[(packed & np.uint64(0xFFFFFFFF)).astype(np.int64)]


def _distinct(values: np.ndarray) -> int:
    """How many distinct values (a sort: numpy's hashed unique is slower for uint64)."""
    if values.size == 0:
        return 0
    ordered = np.sort(values)
    return int(1 + np.count_nonzero(ordered[1:] != ordered[:-1]))


def _duplicates(keys: pa.Table, v: _Verdicts, cfg: DedupConfig) -> dict[str, Any]:
    """Duplicate groups: same text and image clusters (rows with images) or same exact key
    (text-only rows); one survivor each, exact copies of it as exact_duplicate."""
    alive = v.alive
    count = _numpy(pc.list_value_length(keys["codes"]), np.int32)
    live = np.repeat(alive, count)  # the images of rows still alive
    count = np.where(alive, count, 0)
    codes, ids = _flat(keys["codes"]), _flat(keys["image_ids"])
    if not live.all():
        codes, ids = codes[live], ids[live]
    del live
    _release()
    first = np.cumsum(count, dtype=np.int64) - count  # where each row's images start

    # rows with images: same text, then the same number of images, then image by image
    # the same cluster; groups of one drop out at every step
    rows = np.flatnonzero(count)
    text = ["prompt_key", "responses_key"] if cfg.near_match == "pair" else ["prompt_key"]
    members, group = _shared(rows, *_words(keys, text, rows))
    members, group = _shared(members, *_pack(group, count[members]))
    assert cfg.max_distance is not None  # DedupConfig fills in the method's default
    exact = _fixed(keys["exact_key"])
    labels, stats = _image_clusters(codes, ids, first, count, members, group, exact,
                                    cfg.max_distance)
    del ids
    found: list[tuple[np.ndarray, np.ndarray]] = []
    step = 0
    while members.size:
        members, group = _shared(members, *_pack(group, labels[first[members] + step]))
        step += 1
        done = count[members] == step
        found.append((members[done], group[done]))
        members, group = members[~done], group[~done]
    del labels
    rows = np.flatnonzero(alive & (count == 0))
    found.append(_shared(rows, exact[rows, 0], exact[rows, 1]))
    del rows
    members = np.concatenate([np.zeros(0, dtype=np.int64), *(m for m, _ in found)])
    groups, offset = [], 0
    for _, g in found:
        g = _renumber(g)
        groups.append(g + offset)
        offset += int(g[-1]) + 1 if g.size else 0
    group = np.concatenate([np.zeros(0, dtype=np.int64), *groups])
    del found, groups

    # a group's survivor takes its exact copies and the rows with every image within
    # max_distance of its own; the rows further away (a chain of near duplicates can join
    # photos far apart) go round again without it, so no row is ever rejected as a near
    # duplicate of an image more than max_distance away
    rejected_at: list[np.ndarray] = []
    while members.size:
        winner = _firsts(keys, cfg.prefer, members, group)[group]
        lost = members != winner
        members, winner, group = members[lost], winner[lost], group[lost]
        same = (exact[members] == exact[winner]).all(axis=1)
        v.reject(_SAME, members[same], winner[same])
        members, winner, group = members[~same], winner[~same], group[~same]
        distance = _image_distance(codes, first, count, members, winner)
        close = distance <= cfg.max_distance
        v.reject(_DISTANCE, members[close], winner[close], distance[close])
        rejected_at.append(distance[close])
        members, group = members[~close], _renumber(group[~close])
    distances = np.concatenate([np.zeros(0, dtype=np.int64), *rejected_at])
    return {**stats, "near_duplicate_distance_histogram": _histogram(distances)}


def _image_distance(codes: np.ndarray, first: np.ndarray, count: np.ndarray,
                    rows: np.ndarray, other: np.ndarray) -> np.ndarray:
    """The largest Hamming distance between the images at the same place of each row and
    its `other` row (rows with the same number of images)."""
    n = count[rows].astype(np.int64)
    if not n.size:
        return np.zeros(0, dtype=np.int64)
    at = _places(n)
    a = codes[np.repeat(first[rows], n) + at]
    b = codes[np.repeat(first[other], n) + at]
    return np.maximum.reduceat(np.bitwise_count(a ^ b), np.cumsum(n) - n).astype(np.int64)


def _places(n: np.ndarray) -> np.ndarray:
    """For rows with `n` images each, every image's place in its row: 0..n[k] - 1, row
    after row."""
    return np.arange(int(n.sum()), dtype=np.int64) - np.repeat(np.cumsum(n) - n, n)


def decide(keys: pa.Table, cfg: DedupConfig) -> Decisions:
    """Reject reasons for every row of `keys`, in order, and the hash column to attach."""
    v = _Verdicts(keys.num_rows)
    v.reject(_ERROR, np.flatnonzero(_numpy(pc.is_valid(keys["error"]), np.bool_)))
    conflicts = _label_conflicts(keys, v, cfg.prefer, cfg.conflicts)
    near = _duplicates(keys, v, cfg)
    _release()
    reasons, details, survivors = v.columns(keys)
    decoded = int(pc.sum(keys["decoded"]).as_py() or 0)
    reused = int(pc.sum(keys["reused"]).as_py() or 0)
    table = pa.table({
        "pair_id": keys["pair_id"],
        "reject_reason": reasons,
        "reject_detail": details,
        cfg.column: keys["codes"],
    })
    extra = {"dedup": {
        "image_hash": cfg.image_hash,
        "max_distance": cfg.max_distance,
        "images_decoded": decoded,  # depends on how batches met workers (per-process memo)
        "images_reused": reused,
        "label_conflict_groups": conflicts,
        "exact_duplicate_groups": survivors[EXACT],
        "near_duplicate_groups": survivors[NEAR],
        **near,
    }}
    return Decisions(table, extra)


# -- the stage ----------------------------------------------------------------------------
def run(inputs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str],
        cfg: DedupConfig, *, engine: Engine | None = None, force: bool = False) -> Manifest:
    """Deduplicate the kept rows of `inputs` (merged, in order) into `out`; returns the manifest."""
    from curate.engine import get_engine

    if not inputs:
        raise ValueError("give at least one input dataset folder")
    engine = engine or get_engine("local")
    schema = D.unified_schema([D.Dataset.open(p) for p in inputs])
    columns = list(ANNOTATE_COLUMNS)
    if schema.get_field_index(cfg.column) >= 0:
        columns.append(cfg.column)
    annotate_fn: Callable[[pa.RecordBatch], pa.RecordBatch] = partial(
        annotate, method=cfg.image_hash)
    return run_filter_stage(
        STAGE, inputs, out, recorded(cfg),
        annotate=annotate_fn, annotate_columns=columns,
        decide=partial(decide, cfg=cfg), engine=engine, force=force,
        batch_size=cfg.batch_size, annotate_releases_gil=hash_on_threads(inputs),
    )


def dedup(inputs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *,
          config: DedupConfig | None = None, engine: Engine | None = None,
          force: bool = False, **options: Any) -> Manifest:
    """`run` with `config` (default: DedupConfig()) and DedupConfig's fields as keywords."""
    return run(inputs, out, configured(DedupConfig, config, options), engine=engine,
               force=force)


def hash_on_threads(inputs: Sequence[str | os.PathLike[str]]) -> bool:
    """Whether the local engine hashes `inputs`' images on threads: photos, not thumbnails
    (see `curate.images.THREADS_MIN_IMAGE_BYTES`)."""
    from curate.images import THREADS_MIN_IMAGE_BYTES

    return D.bytes_per_row([D.Dataset.open(p) for p in inputs]) >= THREADS_MIN_IMAGE_BYTES


register_stage(STAGE, 20, filter=True, run=run, config=DedupConfig)
