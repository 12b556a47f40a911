"""`curate shard` on a distributed engine: the shuffle as map and reduce tasks.

The local engine spills the input on the driver and gathers each shard from the
spill (`ShardWriter`). On Ray that would pull every image byte through one process,
so instead:
- map, one task per input fragment: read the fragment, tag its rows (split, stage,
  est_tokens from the plan) and cut them into one block per shard, each row with
  its position inside its shard;
- reduce, one task per shard: the shard's blocks from every fragment (Ray moves
  them between workers through its object store), ordered by position, written as
  the shard file with the local engine's writer options, so the file is the same,
  byte for byte.
The driver holds the plan (a few integers per row) and what the reducers report.
Export formats (`--format`) are then written on the driver from the shard files.

What both engines' shards share lives here too, below `curate.stages.shard`: the shard
columns (`tag`) and the writer options.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from curate import dataset as D
from curate.engine.fragments import Fragment, fragments, read_fragment
from curate.fragment_writes import WriteTarget, WrittenPart

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
    """The map task: this fragment's tagged rows, one table per shard (maybe empty)."""
    parts = [pa.Table.from_batches([b]) for b in read_fragment(job.fragment, job.batch_size)]
    table = pa.concat_tables(parts) if parts else None
    if table is None or table.num_rows != len(job.shard):
        got = 0 if table is None else table.num_rows
        raise RuntimeError(f"shard: fragment {job.fragment.file} has {got} rows, its plan "
                           f"{len(job.shard)}")
    table = tag(table, job.is_eval, job.multimodal, job.est_tokens)
    table = table.append_column(POSITION, pa.array(job.position, pa.int64()))
    return [table.take(pa.array(np.flatnonzero(job.shard == s), pa.int64()))
            for s in range(job.shards)]


def write_shard(job: ShardReduce, blocks: list[pa.Table]) -> tuple[int, str, int]:
    """The reduce task: gather, order and write one shard; (rows, sha256, size in bytes)."""
    table = pa.concat_tables(blocks)
    order = np.argsort(table[POSITION].to_numpy(), kind="stable")
    table = table.take(pa.array(order, pa.int64())).drop_columns([POSITION])
    table = pa.Table.from_batches([D.conform(table, job.schema)], schema=job.schema)
    fs, folder = job.target.filesystem, f"{job.target.root}/{D.KEPT}"
    if fs is None:
        Path(folder).mkdir(parents=True, exist_ok=True)
    else:
        fs.create_dir(folder, recursive=True)
    sha, size = D.write_parquet_hashed(table, f"{folder}/{job.name}", fs,
                                       **shard_write_options(table.schema))
    return table.num_rows, sha, size


def shuffle_into_shards(run: Any, datasets: list[D.Dataset], plan: Any, schema: pa.Schema,
                        engine: Engine, batch_size: int, progress: Any) -> dict[str, tuple]:
    """Run the map and reduce tasks on `engine`; count every shard in `run`; returns
    shard name -> (rows, sha256, size)."""
    frags = fragments(datasets)
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
    written: dict[str, tuple] = {}
    for job, (rows, sha, size) in zip(
            reduces, engine.shuffle(split_fragment, maps, write_shard, reduces), strict=True):
        run.add_written(WrittenPart(rows_in=rows, kept=rows,
                                    files={f"{D.KEPT}/{job.name}": (rows, sha, size)}))
        written[job.name] = (rows, sha, size)
        progress.advance(rows)
    return written
