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
   `near_match="pair"`, the same responses) whose every image falls in the same
   cluster, where clusters are the connected components (union-find) of "within
   `max_distance` bits" over all distinct image hashes, found with a
   multi-index-hashing range search; text-only rows group by their exact key.
   In each group one row survives: the first of `prefer`'s sources, then the
   larger image (pixels), then the larger file (for the same pixels, the better
   JPEG quality), then the smallest `pair_id`. The others name it in
   `reject_detail`: `exact_duplicate` when they equal it (normalised prompt,
   decoded pixels, both responses), else `near_duplicate_image` plus the distance.
   Exact copies always share a group, so every detail names a row that is kept.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate import dataset as D
from curate.hashing import DEFAULT_METHOD, HASH_SIZE, METHODS, hamming, perceptual_hash
from curate.stage import Decisions, run_filter_stage
from curate.text import normalise_prompt

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

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["prefer"] = list(self.prefer)
        return d


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
        prev = stored[r] if stored[r] is not None and len(stored[r]) == m else [None] * m
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


_NUMPY = {pa.bool_(): np.bool_, pa.int32(): np.int32, pa.int64(): np.int64,
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
        numbers = np.fromiter((x or 0 for x in flat), dtype=_NUMPY[type_.value_type],
                              count=len(flat))
        items = _from_numpy(numbers, type_.value_type, missing)
        return pa.Array.from_buffers(type_, n, [None, pa.py_buffer(offsets)], children=[items])
    if pa.types.is_string(type_):
        if all(v is None for v in values):
            return pa.nulls(n, type_)
        return pa.array(values, type=type_)  # only when an image was corrupt: rare
    return _from_numpy(np.asarray(values, dtype=_NUMPY[type_]), type_)


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


def _image_clusters(codes: np.ndarray, ids: np.ndarray, max_distance: int) -> tuple[
        np.ndarray, dict[str, Any]]:
    """Cluster label of each image (union-find over all pairs of distinct hashes within
    `max_distance`), and the manifest's statistics."""
    from curate.index.hamming import radius_pairs
    from curate.index.unionfind import components

    uniq, inverse = np.unique(codes, return_inverse=True)
    ii, jj, dd = radius_pairs(uniq, max_distance)
    labels = components(len(uniq), ii, jj)
    # distinct images (by decoded pixels) per hash value and per cluster
    images = np.unique(np.stack([inverse.astype(np.uint64), ids], axis=1), axis=0)
    code_of_image = images[:, 0].astype(np.int64)
    per_code = np.bincount(code_of_image, minlength=len(uniq))
    sizes = [s for s in Counter(labels[code_of_image].tolist()).values() if s > 1]
    distances = _histogram(dd)
    zero = int((per_code * (per_code - 1) // 2).sum())  # distinct images, identical hashes
    if zero:
        distances = {"0": zero, **distances}
    return labels[inverse], {
        "images_compared": int(len(codes)),
        "distinct_images": int(len(images)),
        "distinct_hashes": int(len(uniq)),
        "clusters": len(sizes),
        "cluster_size_histogram": _histogram(sizes),
        "distance_histogram": distances,
    }


def _duplicates(keys: pa.Table, v: _Verdicts, cfg: DedupConfig) -> dict[str, Any]:
    """Duplicate groups: same text and image clusters (rows with images) or same exact key
    (text-only rows); one survivor each, exact copies of it as exact_duplicate."""
    alive = v.alive()
    img_row, codes = _flat_lists(keys["codes"])
    _, ids = _flat_lists(keys["image_ids"])
    keep = alive[img_row]
    img_row, codes, ids = img_row[keep], codes[keep], ids[keep]
    cluster, stats = _image_clusters(codes, ids, cfg.max_distance)

    text = _fixed(keys["prompt_key"])
    if cfg.near_match == "pair":
        text = np.hstack([text, _fixed(keys["responses_key"])])
    images_per_row = np.bincount(img_row, minlength=len(alive))
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
    exact_key = _fixed(keys["exact_key"])
    groups += _dup_groups(exact_key, np.flatnonzero(alive & (images_per_row == 0)))

    codes_of = keys["codes"]
    rejected: list[int] = []
    for group in groups:
        winner = v.best(group)
        for r in group:
            if r == winner:
                continue
            if np.array_equal(exact_key[r], exact_key[winner]):
                v.reject(r, "exact_duplicate", v.pair_ids[winner])
                continue
            a, b = codes_of[r].as_py(), codes_of[winner].as_py()
            d = max(hamming(x, y) for x, y in zip(a, b, strict=True))
            v.reject(r, "near_duplicate_image", f"{v.pair_ids[winner]} distance={d}")
            rejected.append(d)
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


# -- the stage ----------------------------------------------------------------------------
def dedup(
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    image_hash: str = DEFAULT_METHOD,
    max_distance: int | None = None,
    prefer: Sequence[str] = (),
    conflicts: str = "drop",
    near_match: str = "prompt",
    engine: Any = None,
    force: bool = False,
    batch_size: int = BATCH_SIZE,
) -> dict[str, Any]:
    """Deduplicate the kept rows of `inputs` (merged, in order) into `out`; returns the manifest."""
    from curate.engine import get_engine

    cfg = DedupConfig(image_hash=image_hash, max_distance=max_distance, prefer=tuple(prefer),
                      conflicts=conflicts, near_match=near_match)
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
        STAGE, inputs, out, cfg.as_dict(),
        annotate=annotate_fn, annotate_columns=columns,
        decide=partial(decide, cfg=cfg), engine=engine, force=force, batch_size=batch_size,
        annotate_releases_gil=hash_on_threads(inputs),
    )


def hash_on_threads(inputs: Sequence[str | Path]) -> bool:
    """Whether the local engine hashes `inputs`' images on threads: photos, not thumbnails
    (see `curate.images.THREADS_MIN_IMAGE_BYTES`)."""
    from curate.images import THREADS_MIN_IMAGE_BYTES

    return D.bytes_per_row([D.Dataset.open(p) for p in inputs]) >= THREADS_MIN_IMAGE_BYTES
