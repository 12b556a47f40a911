"""How `curate shard` writes its shards, on every engine: a shuffle of map and reduce tasks.

- map, one task per input fragment: read the fragment, tag its rows (split, stage,
  est_tokens from the plan) and cut them into one block per shard, each row with
  its position inside its shard;
- reduce, one task per shard: the shard's blocks from every fragment, ordered by
  position, written as the shard file (hashed as it is written).
Where the blocks wait between the two is the engine's business (`Engine.shuffle`): the
local engine spills them to a folder beside the output, Ray moves them from worker to
worker through its object store. Either way no image byte goes through the driver,
which holds the plan (a few integers per row) and what the reducers report, and the
files are the same, byte for byte and name for name, on every engine and worker count.

Fragments are cut smaller than `ROWS_PER_FRAGMENT` where the rows are large (photos),
since a map task holds its fragment's rows while it cuts them.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate import dataset as D
from curate.engine import fragments as F
from curate.engine.fragments import Fragment, fragments, read_fragment
from curate.pipeline.fragment_writes import WriteTarget, WrittenPart

if TYPE_CHECKING:
    from curate.engine.protocol import Engine

POSITION = "__position"
SHARD_FIELDS = [
    pa.field("split", pa.string()),  # train | eval
    pa.field("stage", pa.string()),  # multimodal (the pair has images) | text
    pa.field("est_tokens", pa.int64()),  # see curate.stages.shard.estimate_tokens
]
SHARD_COLUMNS = [f.name for f in SHARD_FIELDS]
SHARD_ROW_GROUP = 1024
FRAGMENT_BYTES = 64 * 1024 * 1024  # of image bytes a map task reads (see fragment_rows)


@dataclass(frozen=True)
class ShardMap:
    """One fragment's rows and their slice of the plan (in the fragment's row order)."""

    fragment: Fragment
    shard: np.ndarray
    position: np.ndarray
    is_eval: np.ndarray
    multimodal: np.ndarray
    est_tokens: np.ndarray
    shards: int
    batch_size: int = 512


@dataclass(frozen=True)
class ShardReduce:
    """Write shard `name` (its rows in position order) into `target`'s kept folder."""

    name: str
    schema: pa.Schema
    target: WriteTarget


def tag(table: pa.Table, is_eval: np.ndarray, multimodal: np.ndarray,
        est_tokens: np.ndarray) -> pa.Table:
    """`table` with the shard columns (split, stage, est_tokens) replaced by the plan's."""
    table = table.drop_columns([c for c in SHARD_COLUMNS if c in table.column_names])
    table = table.append_column("split", pa.array(np.where(is_eval, "eval", "train")))
    table = table.append_column("stage", pa.array(np.where(multimodal, "multimodal", "text")))
    return table.append_column("est_tokens", pa.array(est_tokens, pa.int64()))


def shard_write_options(schema: pa.Schema) -> dict[str, Any]:
    """How a shard is written (`pq.write_table` options): the same bytes on every engine."""
    return {"compression": "zstd", "row_group_size": SHARD_ROW_GROUP,
            "use_dictionary": D.dictionary_columns(schema)}


def split_fragment(job: ShardMap) -> list[pa.Table]:
    """The map task: this fragment's tagged rows, one table per shard (maybe empty).

    Batch by batch, so the task holds the fragment's rows once (its blocks), not twice."""
    pieces: list[list[pa.RecordBatch]] = [[] for _ in range(job.shards)]
    offset = 0
    for batch in read_fragment(job.fragment, job.batch_size):
        sl = slice(offset, offset + batch.num_rows)
        offset += batch.num_rows
        if offset > len(job.shard):
            raise _miscount(job, f"more than {len(job.shard)}")
        table = _tagged(pa.Table.from_batches([batch]), job, sl)
        shard = job.shard[sl]
        for s in np.unique(shard).tolist():
            pieces[s] += table.take(pa.array(np.flatnonzero(shard == s), pa.int64())).to_batches()
    if offset != len(job.shard):
        raise _miscount(job, str(offset))
    schema = _tagged(job.fragment.schema.empty_table(), job, slice(0, 0)).schema
    return [_by_position(pa.Table.from_batches(p, schema=schema)) for p in pieces]


def _by_position(block: pa.Table) -> pa.Table:
    """`block`'s rows in position order, so that a reducer finds each of its row groups as
    one slice of every block."""
    position = block[POSITION].to_numpy()
    if position.size < 2 or (position[1:] >= position[:-1]).all():
        return block
    return block.take(pa.array(np.argsort(position, kind="stable"), pa.int64()))


def _tagged(table: pa.Table, job: ShardMap, sl: slice) -> pa.Table:
    """`table` (rows `sl` of the fragment) with the shard columns and each row's position."""
    table = tag(table, job.is_eval[sl], job.multimodal[sl], job.est_tokens[sl])
    return table.append_column(POSITION, pa.array(job.position[sl], pa.int64()))


def _miscount(job: ShardMap, got: str) -> RuntimeError:
    return RuntimeError(f"shard: fragment {job.fragment.file} has {got} rows, its plan "
                        f"{len(job.shard)}")


def write_shard(job: ShardReduce, blocks: list[pa.Table]) -> tuple[int, str, int]:
    """The reduce task: gather, order and write one shard; (rows, sha256, size in bytes).

    Row group by row group: the task holds its blocks (on the local engine, memory-mapped
    from the spill) and one row group's copy, not a copy of the whole shard. Each block is
    in position order (`split_fragment`), so a row group is one slice of every block;
    Arrow's take on the whole shard would join all its chunks first, a copy of the shard
    for every row group."""
    fs, folder = job.target.filesystem, f"{job.target.root}/{D.KEPT}"
    if fs is None:
        Path(folder).mkdir(parents=True, exist_ok=True)
    else:
        fs.create_dir(folder, recursive=True)
    path = f"{folder}/{job.name}"
    if not blocks:  # an input with no kept rows: one empty shard
        sha, size = D.write_parquet_hashed(job.schema.empty_table(), path, fs,
                                           **shard_write_options(job.schema))
        return 0, sha, size
    blocks = [_by_position(b) for b in blocks if b.num_rows]
    positions = [b[POSITION].to_numpy() for b in blocks]
    every = np.sort(np.concatenate([np.zeros(0, dtype=np.int64), *positions]))
    options = shard_write_options(job.schema)
    rows_per_group = options.pop("row_group_size")
    firsts = every[::rows_per_group]  # the first position of each row group
    # cuts[b, g]: where row group g starts in block b (and its end, after the last group)
    cuts = np.stack([np.r_[np.searchsorted(p, firsts), p.size] for p in positions]) \
        if blocks else np.zeros((0, firsts.size + 1), dtype=np.int64)
    sink = D.HashingSink(D.open_output(path, fs))
    try:  # the bytes of pq.write_table(whole shard, **shard_write_options)
        with pq.ParquetWriter(sink, job.schema, **options) as writer:
            for g in range(firsts.size):
                lo, hi = cuts[:, g], cuts[:, g + 1]
                parts = [blocks[b].slice(lo[b], hi[b] - lo[b]) for b in np.flatnonzero(hi > lo)]
                rows = pa.concat_tables(parts)
                order = np.argsort(rows[POSITION].to_numpy(), kind="stable")
                rows = rows.take(pa.array(order, pa.int64())).drop_columns([POSITION])
                group = D.conform(rows, job.schema)
                writer.write_table(pa.Table.from_batches([group], schema=job.schema),
                                   row_group_size=rows_per_group)
    finally:
        sink.close()
    return int(every.size), sink.hexdigest(), D.file_size(path, fs)


def shuffle_into_shards(run: Any, datasets: list[D.Dataset], plan: Any, schema: pa.Schema,
                        engine: Engine, batch_size: int
                        ) -> Generator[tuple[int, int, str, int], None, None]:
    """Run the map and reduce tasks on `engine`; count every shard in `run` as it is
    written; yields (shard index, rows, sha256, size in bytes), in shard order."""
    frags = fragments(datasets, rows_per_fragment=fragment_rows(datasets))
    maps, offset = [], 0
    for frag in frags:
        sl = slice(offset, offset + frag.rows)
        offset += frag.rows
        maps.append(ShardMap(frag, plan.shard[sl], plan.position[sl], plan.is_eval[sl],
                             plan.multimodal[sl], plan.est_tokens[sl], len(plan.names),
                             batch_size))
    if offset != len(plan.shard):
        raise RuntimeError(f"shard: the input's fragments hold {offset} rows, the plan "
                           f"{len(plan.shard)}")
    target = run.worker_target()
    reduces = [ShardReduce(name, schema, target) for name in plan.names]
    results = engine.shuffle(split_fragment, maps, write_shard, reduces,
                             spill_dir=str(run.folder))
    try:
        for s, (job, (rows, sha, size)) in enumerate(zip(reduces, results, strict=True)):
            run.add_written(WrittenPart(rows_in=rows, kept=rows,
                                        files={f"{D.KEPT}/{job.name}": (rows, sha, size)}))
            yield s, rows, sha, size
    finally:  # on an error too: the tasks end and the spill goes now, not when freed
        close = getattr(results, "close", None)
        if close is not None:
            close()


def fragment_rows(datasets: list[D.Dataset]) -> int:
    """Rows a map task reads: `ROWS_PER_FRAGMENT`, fewer where the images make that more
    than `FRAGMENT_BYTES` (a task holds its fragment's rows while it cuts them)."""
    rows = F.ROWS_PER_FRAGMENT
    per_row = D.bytes_per_row(datasets)
    return max(1, min(rows, int(FRAGMENT_BYTES // per_row))) if per_row > 0 else rows
