"""cosine(chosen, rejected) per row, computed in the map step where the responses are embedded.

`curate similar` needs one number per row from the responses: the cosine between the
chosen and the rejected text. Bringing every response vector back to the driver (as the
prompts' are, for the global kNN) would hold up to 2 x rows x 384 floats there (46 GB at
10M rows as float32); here the driver keeps one float32 per row and never more than one
chunk of response vectors.

`response_cosines` splits the rows into chunks in input order (`rows_per_chunk`, by
default `EmbedSettings.chunk // 2`, so a chunk is at most as many texts as an embedding
call of `ensure_embeddings`). Each chunk is one item of `engine.map_actors`: the chunk's
hashes, the texts that have no stored vector, and the stored vectors of the others. The
worker (in this process on the local engine, an actor on Ray) embeds the missing texts
once per chunk, rounds them to the store's float16 (as every stored vector is) and returns
the chunk's cosines, computed exactly as the driver used to: float32 products of the
float16-rounded vectors, summed per row. A chunk whose vectors are all stored needs no
model: its cosines are computed in this process and the model is never loaded.

Stored vectors are still used (a rerun with another threshold costs no model time), without
random reads of the store: one pass over the store's files (and the prompt vectors already
in memory) routes each stored vector to a spill file of every chunk that needs it, on disk
beside the output. The newly computed vectors come back with the cosines only to be written
(the cache, and a second spill from which the output's `embeddings/<key>/part-00000.parquet`
is written sorted by hash, one of 256 hash buckets at a time): the driver drops them chunk
by chunk.

One cost of chunking: a response text that occurs in rows of several chunks (and is not
stored) is embedded once per chunk, not once per run; `embedded` in the stats counts the
texts the model actually ran on, `computed` the unique ones.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate.models.embedder import (
    STORE_DTYPE,
    EmbeddingStore,
    EmbeddingTable,
    EmbedSettings,
    _file_dim,
    _hashes_to_arrow,
    _vectors_to_arrow,
    get_embedder,
    hashes_to_numpy,
    model_key,
)

if TYPE_CHECKING:
    from curate.engine.protocol import Engine

N_BUCKETS = 256
READ_BATCH = 65_536


def record_dtype(dim: int) -> np.dtype:
    return np.dtype([("h", "S16"), ("v", STORE_DTYPE, (dim,))])


def _first_byte(hashes: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(hashes, dtype="S16").view(np.uint8).reshape(-1, 16)[:, 0]


class VectorSpill:
    """(hash, float16 vector) records appended to files on disk, `by` a small integer per
    record (a chunk, or a hash bucket): written as they come, read back one file at a
    time, so whoever appends holds none of them."""

    def __init__(self, folder: Path, dim: int) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.dtype = record_dtype(dim)
        self.dim = dim

    def _path(self, b: int) -> Path:
        return self.folder / f"{b:08d}.bin"

    def add(self, by: np.ndarray, hashes: np.ndarray, vecs: np.ndarray) -> None:
        if len(hashes) == 0:
            return
        rec = np.empty(len(hashes), dtype=self.dtype)
        rec["h"] = hashes
        rec["v"] = vecs
        order = np.argsort(by, kind="stable")
        by, rec = by[order], rec[order]
        keys, starts = np.unique(by, return_index=True)
        ends = np.append(starts[1:], len(by))
        for b, s, e in zip(keys.tolist(), starts.tolist(), ends.tolist(), strict=True):
            with open(self._path(b), "ab") as fh:
                fh.write(rec[s:e].tobytes())

    def read(self, b: int) -> tuple[np.ndarray, np.ndarray]:
        p = self._path(b)
        rec = np.fromfile(p, dtype=self.dtype) if p.exists() else np.empty(0, self.dtype)
        return rec["h"], rec["v"]


@dataclass
class ResponseCosines:
    """One float32 per row (NaN never: every row's responses get a vector), the stats,
    and the response vectors waiting on disk to be written into the output."""

    cosines: np.ndarray
    stats: dict[str, Any] = field(default_factory=dict)
    found: np.ndarray = field(default_factory=lambda: np.empty(0, "S16"))  # stored hashes
    unique: np.ndarray = field(default_factory=lambda: np.empty(0, "S16"))  # all hashes
    vectors: VectorSpill | None = None  # by hash bucket: stored + computed
    keep: Any = None  # the temporary folder, alive until the output is written


def _pair_setup(settings: EmbedSettings) -> Callable[[Any], Any]:
    """A worker's function: the model is loaded on its first chunk that needs one."""
    emb: list[Any] = []

    def run(item: dict[str, Any]) -> tuple[dict[str, Any] | None, np.ndarray, np.ndarray,
                                           np.ndarray]:
        info = None
        new = np.zeros((0, item["stored_v"].shape[1] if len(item["stored_v"]) else 0),
                       STORE_DTYPE)
        if item["texts"]:
            if not emb:
                emb.append(get_embedder(settings))
            info = emb[0].describe()
            new = emb[0].encode(item["texts"]).astype(STORE_DTYPE)
        return info, chunk_cosines(item, new), item["miss"], new

    return run


def chunk_cosines(item: dict[str, Any], new: np.ndarray) -> np.ndarray:
    """cosine(chosen, rejected) of a chunk's rows from its stored and new float16 vectors,
    computed as the driver did before (float32 products of the float16 values, summed)."""
    h = np.concatenate([item["stored_h"], item["miss"]])
    if len(item["stored_v"]) and len(new):
        v = np.concatenate([item["stored_v"], new])
    else:
        v = item["stored_v"] if len(item["stored_v"]) else new
    order = np.argsort(h, kind="stable")
    table = EmbeddingTable(h[order], v[order])
    c = table.lookup(item["ch"]).astype(np.float32)
    r = table.lookup(item["rh"]).astype(np.float32)
    return np.sum(c * r, axis=1)


def _need(ch: np.ndarray, rh: np.ndarray, rows_per_chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """The unique (hash, chunk) pairs the rows need, sorted by hash then chunk."""
    chunk = np.arange(len(ch), dtype=np.int64) // rows_per_chunk
    hh = np.concatenate([ch, rh])
    cc = np.concatenate([chunk, chunk])
    order = np.lexsort((cc, hh))
    hh, cc = hh[order], cc[order]
    keep = np.ones(len(hh), dtype=bool)
    keep[1:] = (hh[1:] != hh[:-1]) | (cc[1:] != cc[:-1])
    return hh[keep], cc[keep]


def _sources(prompts: EmbeddingTable | None, files: list[Path]) -> Iterator[
        tuple[bool, np.ndarray, np.ndarray]]:
    """(from_a_file, hashes, float16 vectors) batches: the prompt vectors in memory, then
    every store file, streamed (a damaged file is skipped from where it fails)."""
    if prompts is not None and len(prompts.hashes):
        for a in range(0, len(prompts.hashes), READ_BATCH):
            yield False, prompts.hashes[a:a + READ_BATCH], \
                prompts.vectors[a:a + READ_BATCH].astype(STORE_DTYPE)
    for p in files:
        try:
            dim = _file_dim(p)
            pf = pq.ParquetFile(p, pre_buffer=False)
            for batch in pf.iter_batches(batch_size=READ_BATCH,
                                         columns=["text_hash", "embedding"]):
                col = batch.column(1)
                buf = col.buffers()[1]
                v = np.frombuffer(buf, dtype=STORE_DTYPE,
                                  count=(len(col) + col.offset) * dim).reshape(-1, dim)
                yield True, hashes_to_numpy(batch.column(0)), v[col.offset:]
        except (OSError, pa.ArrowException, ValueError, KeyError):
            continue


def _route_stored(need_h: np.ndarray, need_c: np.ndarray, prompts: EmbeddingTable | None,
                  files: list[Path], by_chunk_dir: Path, out: VectorSpill | None,
                  dim: int) -> tuple[np.ndarray, VectorSpill | None]:
    """One pass over the stored vectors: each needed one goes to the spill of every chunk
    that needs it (and once to `out`). Returns which `need` entries were found."""
    found = np.zeros(len(need_h), dtype=bool)
    from_file = np.zeros(len(need_h), dtype=bool)
    spill: VectorSpill | None = None
    for is_file, h, v in _sources(prompts, files):
        if v.shape[1] != dim and dim:
            continue
        lo = np.searchsorted(need_h, h, "left")
        hi = np.searchsorted(need_h, h, "right")
        counts = hi - lo
        sel = np.flatnonzero(counts > 0)
        if len(sel) == 0:
            continue
        sel = sel[~found[lo[sel]]]  # a hash found in an earlier source is done
        if len(sel) == 0:
            continue
        _, first = np.unique(h[sel], return_index=True)  # once per hash within a batch
        sel = sel[np.sort(first)]
        cnt = counts[sel]
        rec = np.repeat(sel, cnt)
        starts = np.repeat(lo[sel] - np.concatenate([[0], np.cumsum(cnt)[:-1]]), cnt)
        pos = np.arange(len(rec)) + starts
        found[pos] = True
        from_file[pos] = is_file
        if spill is None:
            spill = VectorSpill(by_chunk_dir, v.shape[1])
        spill.add(need_c[pos], h[rec], v[rec])
        if out is not None and is_file:
            out.add(_first_byte(h[sel]).astype(np.int64), h[sel], v[sel])
    return found & from_file, spill


def response_cosines(
    ch: np.ndarray,
    rh: np.ndarray,
    rows: Callable[[], Iterator[tuple[list[Any], list[Any]]]],
    settings: EmbedSettings,
    key: str,
    prompts: EmbeddingTable | None,
    folders: list[Path],
    engine: Engine | None = None,
    *,
    spill_dir: Path | None = None,
    keep_vectors: bool = True,
    rows_per_chunk: int | None = None,
) -> ResponseCosines:
    """cosine(chosen, rejected) of every row (`ch`, `rh`: the rows' 'S16' text hashes;
    `rows()`: the rows' (chosen, rejected) texts again, batch by batch, in the same order).

    `key`: the model key of the prompt vectors (the responses' must be the same);
    `prompts`: vectors already in memory (a response that is also a prompt is not
    embedded again); `folders`: stored vectors (with `settings.cache`, which new vectors
    are also added to). `keep_vectors`: spill every response vector for the output's
    embeddings file. On Ray the chunks run in `engine.map_actors` actors."""
    n = len(ch)
    per = rows_per_chunk or max(1, settings.chunk // 2)
    look = ([settings.cache] if settings.cache else []) + [Path(f) for f in folders]
    files = EmbeddingStore(key, None, look, None).files() if key else []
    dim = prompts.vectors.shape[1] if prompts is not None and prompts.vectors.ndim == 2 else 0
    tmp = tempfile.TemporaryDirectory(prefix=".curate-similar-", dir=spill_dir)
    root = Path(tmp.name)
    cos = np.full(n, np.nan, dtype=np.float32)
    stats: dict[str, Any] = {"rows_per_chunk": per, "chunks": 0, "chunks_embedded": 0,
                             "embedded": 0}
    need_h, need_c = _need(ch, rh, per)
    out = VectorSpill(root / "by-hash", dim) if keep_vectors and dim else None
    found, by_chunk = _route_stored(need_h, need_c, prompts, files, root / "by-chunk", out,
                                    dim)
    uniq = np.unique(need_h)
    stored = np.unique(need_h[found])
    del need_h, need_c, found
    store = EmbeddingStore(key, dim or None, look, settings.cache)
    model_info: dict[str, Any] | None = None
    computed: list[np.ndarray] = []

    def items() -> Iterator[dict[str, Any]]:
        c, a = 0, 0
        for chosen, rejected in _rechunk(rows(), per):
            b = a + len(chosen)
            sh, sv = by_chunk.read(c) if by_chunk is not None else (
                np.empty(0, "S16"), np.zeros((0, dim), STORE_DTYPE))
            sh, first = np.unique(sh, return_index=True)
            sv = sv[first]
            hs = np.concatenate([ch[a:b], rh[a:b]])
            miss, at = np.unique(hs, return_index=True)
            keep = ~np.isin(miss, sh, assume_unique=True)
            miss, at = miss[keep], at[keep]
            both = list(chosen) + list(rejected)
            item = {"start": a, "ch": ch[a:b], "rh": rh[a:b], "stored_h": sh, "stored_v": sv,
                    "miss": miss, "texts": [both[i] or "" for i in at.tolist()]}
            stats["chunks"] += 1
            if len(miss) == 0:  # every vector stored: no model, computed here
                cos[a:b] = chunk_cosines(item, np.zeros((0, sv.shape[1]), STORE_DTYPE))
            else:
                stats["chunks_embedded"] += 1
                yield item
            c, a = c + 1, b
        if a != n:
            raise RuntimeError(f"the inputs gave {a} rows for {n} keys")

    setup = functools.partial(_pair_setup, settings)
    starts: list[int] = []

    def tracked() -> Iterator[dict[str, Any]]:
        for it in items():
            starts.append(it["start"])
            yield it

    runner = engine.map_actors(setup, tracked()) if engine is not None else map(
        setup(), tracked())
    for info, c_cos, miss, new in runner:
        a = starts.pop(0)
        cos[a:a + len(c_cos)] = c_cos
        if info is not None:
            k = model_key(info["fingerprint"], info["precision"])
            if key and k != key:
                raise RuntimeError(f"the responses' model key {k} is not the prompts' {key}; "
                                   f"use --precision fp32")
            model_info = info
        stats["embedded"] += len(miss)
        if len(miss):
            computed.append(miss)
            store.add(miss, new, {"model": info["model"] if info else "", "key": key})
            if out is not None:
                out.add(_first_byte(miss).astype(np.int64), miss, new)
    new_h = np.unique(np.concatenate(computed)) if computed else np.empty(0, "S16")
    stats.update({"unique_texts": int(len(uniq)), "from_store": int(len(stored)),
                  "computed": int(len(new_h)), "model_loaded": model_info is not None})
    if model_info is not None:
        stats["model"] = model_info
    if by_chunk is not None:
        for p in by_chunk.folder.glob("*.bin"):
            p.unlink()
    return ResponseCosines(cos, stats, stored, uniq, out, tmp)


def _rechunk(batches: Iterator[tuple[list[Any], list[Any]]], per: int) -> Iterator[
        tuple[list[Any], list[Any]]]:
    """(chosen, rejected) lists of exactly `per` rows (the last one shorter)."""
    bc: list[Any] = []
    br: list[Any] = []
    for c, r in batches:
        bc.extend(c)
        br.extend(r)
        while len(bc) >= per:
            yield bc[:per], br[:per]
            bc, br = bc[per:], br[per:]
    if bc:
        yield bc, br


def write_vectors(path: Path, prompts: EmbeddingTable, extra: VectorSpill | None,
                  meta: dict[str, Any]) -> None:
    """The output's embeddings file: the prompt vectors and the spilled ones, each hash
    once (the prompt's, or the first spilled), sorted by hash, written one hash bucket
    (a row group) at a time and atomically."""
    import json

    dim = int(prompts.vectors.shape[1]) if prompts.vectors.ndim == 2 else 0
    if extra is not None:
        dim = dim or extra.dim
    schema = pa.schema([("text_hash", pa.binary(16)), ("embedding", pa.binary(dim * 2))])
    schema = schema.with_metadata({"curate.embeddings": json.dumps(
        {**meta, "dtype": "float16", "dim": dim}, sort_keys=True)})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    ph = np.ascontiguousarray(prompts.hashes, dtype="S16")
    pfirst = _first_byte(ph) if len(ph) else np.empty(0, np.uint8)
    bounds = np.searchsorted(pfirst, np.arange(N_BUCKETS + 1))
    with pq.ParquetWriter(tmp, schema, compression="zstd", use_dictionary=False,
                          write_statistics=False) as w:
        for b in range(N_BUCKETS):
            h = ph[bounds[b]:bounds[b + 1]]
            v = prompts.vectors[bounds[b]:bounds[b + 1]].astype(STORE_DTYPE)
            if extra is not None:
                eh, ev = extra.read(b)
                if len(eh):
                    h = np.concatenate([h, eh])
                    v = np.concatenate([v, ev])
            if len(h) == 0:
                continue
            h, first = np.unique(h, return_index=True)
            w.write_table(pa.table({"text_hash": _hashes_to_arrow(h),
                                    "embedding": _vectors_to_arrow(v[first])}, schema=schema))
    os.replace(tmp, path)
