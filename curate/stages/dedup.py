"""`curate dedup`: exact duplicates, label conflicts and near-duplicate images.

Pass 1, `annotate` (pure, per record batch, run by the engine in worker processes):
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
   larger image (pixels), then the smallest `pair_id`. The others name it in
   `reject_detail`: `exact_duplicate` when they equal it (normalised prompt,
   decoded pixels, both responses), else `near_duplicate_image` plus the distance.
   Exact copies always share a group, so every detail names a row that is kept.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
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
from curate.hashing import DEFAULT_METHOD, HASH_SIZE, METHODS, perceptual_hash
from curate.stage import Decisions, run_filter_stage

STAGE = "dedup"
CONFLICT_MODES = ("drop", "keep-majority")
NEAR_MATCH_MODES = ("prompt", "pair")

# Defaults measured on the ukbench photos plus scikit-image's (see the README section
# and tests/test_dedup_ukbench.py): re-encodes (JPEG q30-95, PNG) and resizes (50-200%)
# stay within 6 bits for every method; a 1-2% crop or a 1-degree rotation mostly within
# 8 (phash); distinct photos are >= 20 bits apart for phash, >= 16 for dhash and
# >= 10-11 for ahash/whash, whose 64 bits carry less information.
DEFAULT_MAX_DISTANCE = {"phash": 10, "dhash": 10, "ahash": 6, "whash": 6}

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
def normalise_text(text: str) -> str:
    """Unicode NFKC, case-folded, whitespace runs collapsed to one space and trimmed."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    return " ".join(folded.split())


def normalise_prompt(prompt: Sequence[dict[str, Any]] | None) -> list[list[str]]:
    return [[m.get("role") or "", normalise_text(m.get("content") or "")] for m in prompt or []]


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
    prompts = batch.column("prompt").to_pylist()
    chosen = batch.column("chosen").to_pylist()
    rejected = batch.column("rejected").to_pylist()

    out: dict[str, list[Any]] = {name: [] for name in KEY_SCHEMA.names}
    offset = 0
    for r in range(n):
        m = lengths[r]
        prev = stored[r] if stored[r] is not None and len(stored[r]) == m else [None] * m
        ids, codes, errors = [], [], []
        decoded_here = reused = pixels = 0
        for t in range(m):
            k = offset + t
            ident = pixel_sha[k] or sha[k]
            if ident is None:
                data = raw[k].as_py()
                ident = hashlib.sha256(data).hexdigest() if data is not None else "0" * 16
            ids.append(int(ident[:16], 16))
            pixels += (widths[k] or 0) * (heights[k] or 0)
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
class _Verdicts:
    """reject_reason / reject_detail per row, plus the survivor order."""

    def __init__(self, keys: pa.Table, prefer: Sequence[str]) -> None:
        n = keys.num_rows
        self.reason: list[str | None] = [None] * n
        self.detail: list[str | None] = [None] * n
        rank = {s: i for i, s in enumerate(prefer)}
        pair_ids = keys["pair_id"].to_pylist()
        self.pair_ids = pair_ids
        sources = keys["source"].to_pylist()
        pixels = keys["pixels"].to_pylist()
        self._order = [(rank.get(s, len(rank)), -p, pid)
                       for s, p, pid in zip(sources, pixels, pair_ids, strict=True)]

    def alive(self, r: int) -> bool:
        return self.reason[r] is None

    def best(self, rows: Sequence[int]) -> int:
        return min(rows, key=self._order.__getitem__)

    def reject(self, r: int, reason: str, detail: str) -> None:
        self.reason[r] = reason
        self.detail[r] = detail


def _groups(values: Sequence[Any], rows: Sequence[int]) -> list[list[int]]:
    """Rows grouped by value (groups of two or more), in order of first appearance."""
    by: dict[Any, list[int]] = defaultdict(list)
    for r in rows:
        by[values[r]].append(r)
    return [g for g in by.values() if len(g) > 1]


def _label_conflicts(keys: pa.Table, v: _Verdicts, mode: str) -> int:
    pair_key = keys["pair_key"].to_pylist()
    swapped = keys["swapped"].to_pylist()
    found = 0
    for group in _groups(pair_key, [r for r in range(len(pair_key)) if v.alive(r)]):
        sides = ([r for r in group if not swapped[r]], [r for r in group if swapped[r]])
        if not sides[0] or not sides[1]:
            continue
        found += 1
        big, small = sorted(sides, key=len, reverse=True)
        if mode == "keep-majority" and len(group) >= 3 and len(big) > len(small):
            winner = v.pair_ids[v.best(big)]
            for r in small:
                v.reject(r, "label_conflict", f"{winner} (outvoted {len(big)}:{len(small)})")
            continue  # the majority's copies are exact duplicates, handled next
        for own, other in (sides, sides[::-1]):
            rep = v.pair_ids[v.best(other)]
            for r in own:
                v.reject(r, "label_conflict", f"{rep} (votes {len(own)}:{len(other)})")
    return found


def _exact_duplicates(keys: pa.Table, v: _Verdicts) -> None:
    """Exact copies among the rows still kept (text-only ones, after the image step)."""
    exact_key = keys["exact_key"].to_pylist()
    for group in _groups(exact_key, [r for r in range(len(exact_key)) if v.alive(r)]):
        winner = v.best(group)
        for r in group:
            if r != winner:
                v.reject(r, "exact_duplicate", v.pair_ids[winner])


def _survivors(v: _Verdicts, reason: str) -> int:
    """How many rows survive a group of `reason` duplicates."""
    return len({d.split()[0] for r, d in zip(v.reason, v.detail, strict=True)
                if r == reason and d})


def _histogram(values: Any) -> dict[str, int]:
    counts = Counter(int(x) for x in values)
    return {str(k): counts[k] for k in sorted(counts)}


def _near_duplicates(keys: pa.Table, v: _Verdicts, cfg: DedupConfig) -> dict[str, Any]:
    from curate.index.hamming import radius_pairs
    from curate.index.unionfind import components

    codes_col = keys["codes"].to_pylist()
    rows = [r for r, codes in enumerate(codes_col) if v.alive(r) and codes]
    row_codes = [codes_col[r] for r in rows]
    flat = np.fromiter((c for codes in row_codes for c in codes), dtype=np.uint64)
    ids_col = keys["image_ids"].to_pylist()
    flat_ids = np.fromiter((i for r in rows for i in ids_col[r]), dtype=np.uint64)
    uniq, inverse = np.unique(flat, return_inverse=True)
    ii, jj, dd = radius_pairs(uniq, cfg.max_distance)
    labels = components(len(uniq), ii, jj)

    # distinct images (by pixels) per hash value and per cluster, for the manifest
    images = np.unique(np.stack([inverse.astype(np.uint64), flat_ids], axis=1), axis=0)
    per_code = np.bincount(images[:, 0].astype(np.int64), minlength=len(uniq))
    per_cluster = Counter(labels[images[:, 0].astype(np.int64)].tolist())
    sizes = [s for s in per_cluster.values() if s > 1]
    distances = _histogram(dd)
    zero = int((per_code * (per_code - 1) // 2).sum())
    if zero:
        distances = {"0": zero, **distances}

    # rows with the same prompt (and responses) whose images fall in the same clusters
    prompt_key = keys["prompt_key"].to_pylist()
    responses_key = keys["responses_key"].to_pylist()
    cluster_of = labels[inverse].tolist()
    signature: dict[int, tuple[Any, ...]] = {}
    k = 0
    for r, codes in zip(rows, row_codes, strict=True):
        clusters = tuple(cluster_of[k:k + len(codes)])
        k += len(codes)
        text = (prompt_key[r], responses_key[r]) if cfg.near_match == "pair" else prompt_key[r]
        signature[r] = (text, clusters)
    # exact copies share a signature too, so one survivor serves the whole group
    exact_key = keys["exact_key"].to_pylist()
    rejected: list[int] = []
    for group in _groups(signature, rows):
        winner = v.best(group)
        for r in group:
            if r == winner:
                continue
            if exact_key[r] == exact_key[winner]:
                v.reject(r, "exact_duplicate", v.pair_ids[winner])
                continue
            d = max(int(a ^ b).bit_count() for a, b in zip(codes_col[r], codes_col[winner],
                                                             strict=True))
            v.reject(r, "near_duplicate_image", f"{v.pair_ids[winner]} distance={d}")
            rejected.append(d)
    return {
        "images_compared": int(len(flat)),
        "distinct_images": int(len(images)),
        "distinct_hashes": int(len(uniq)),
        "clusters": len(sizes),
        "cluster_size_histogram": _histogram(sizes),
        "distance_histogram": distances,
        "near_duplicate_distance_histogram": _histogram(rejected),
    }


def decide(keys: pa.Table, cfg: DedupConfig) -> Decisions:
    """Reject reasons for every row of `keys`, in order, and the hash column to attach."""
    v = _Verdicts(keys, cfg.prefer)
    for r, err in enumerate(keys["error"].to_pylist()):
        if err is not None:
            v.reject(r, "corrupt_image", err)
    conflicts = _label_conflicts(keys, v, cfg.conflicts)
    near = _near_duplicates(keys, v, cfg)
    _exact_duplicates(keys, v)
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
    batch_size: int = 128,
) -> dict[str, Any]:
    """Deduplicate the kept rows of `inputs` (merged, in order) into `out`; returns the manifest."""
    from curate.engine import get_engine

    cfg = DedupConfig(image_hash=image_hash, max_distance=max_distance, prefer=tuple(prefer),
                      conflicts=conflicts, near_match=near_match)
    if not inputs:
        raise ValueError("give at least one input dataset folder")
    engine = engine or get_engine("local")
    schema = D.unified_schema([D.Dataset.open(p) for p in inputs])
    columns = ["pair_id", "source", "prompt", "chosen", "rejected", "images"]
    if schema.get_field_index(cfg.column) >= 0:
        columns.append(cfg.column)
    annotate_fn: Callable[[pa.RecordBatch], pa.RecordBatch] = partial(
        annotate, method=cfg.image_hash)
    return run_filter_stage(
        STAGE, inputs, out, cfg.as_dict(),
        annotate=annotate_fn, annotate_columns=columns,
        decide=partial(decide, cfg=cfg), engine=engine, force=force, batch_size=batch_size,
    )
