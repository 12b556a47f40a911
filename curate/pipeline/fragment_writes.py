"""A filter stage's write pass, fragment by fragment, the same on every engine.

Each task reads one input fragment, joins the fragment's slice of the decisions
(compact: ids, reasons, attached keys) and writes its kept and rejected rows itself,
as `part-FFFFF-NNNNN.parquet` (F = the fragment's index, so names and order are
deterministic, and the local and Ray engines write the same files, byte for byte).
No image byte passes through the driver, which only adds up what the tasks report.
The local engine runs the tasks on threads of its own process; Ray on its workers.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from curate import dataset as D
from curate import schema as S
from curate.engine.fragments import Fragment, read_fragment


class DecisionsOutOfOrder(D.ConservationError):
    """A fragment's rows are not the ones its slice of decisions was made for."""


@dataclass(frozen=True)
class WriteTarget:
    """The staging folder workers write into: `root` on `filesystem` (None = local disk)."""

    root: str
    filesystem: Any = None


@dataclass(frozen=True)
class FragmentWrite:
    """One worker's job: write fragment `index`'s rows as `decisions` say."""

    index: int
    fragment: Fragment
    decisions: pa.Table  # this fragment's rows of the decisions table, in order
    attach: tuple[str, ...]
    kept_schema: pa.Schema
    rejected_schema: pa.Schema
    target: WriteTarget
    stage: str
    batch_size: int = 512


@dataclass
class WrittenPart:
    """What a worker wrote: row counts, reasons, and every file (relative path -> rows,
    sha256, size in bytes). `kept_consumed` / `rejected_consumed`: the input rows those
    rows stand for, when not one each (ingest: a pair may pair up several records)."""

    rows_in: int = 0
    kept: int = 0
    rejected: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    files: dict[str, tuple[int, str, int]] = field(default_factory=dict)
    kept_consumed: int | None = None
    rejected_consumed: int | None = None


def apply_decisions(
    batch: pa.RecordBatch, dec: pa.Table, attach: tuple[str, ...] | list[str], stage: str
) -> tuple[pa.Table, pa.Table]:
    """(kept rows, rejected rows with reject columns) of `batch` under decisions `dec`
    (same rows, same order), with the decision columns `attach` added to both."""
    if not pc.all(pc.equal(dec["pair_id"], batch.column("pair_id"))).as_py():
        raise DecisionsOutOfOrder(f"{stage}: decisions out of order with the input")
    tbl = pa.Table.from_batches([batch])
    for c in attach:
        if c in tbl.column_names:
            tbl = tbl.drop_columns([c])
        tbl = tbl.append_column(c, dec[c])
    is_rej = pc.is_valid(dec["reject_reason"])
    kept = tbl.filter(pc.invert(is_rej))
    rej = tbl.filter(is_rej)
    rejected = S.reject_rows(
        rej, dec["reject_reason"].filter(is_rej).combine_chunks(),
        dec["reject_detail"].filter(is_rej).combine_chunks(), stage)
    return kept, rejected


def write_fragment(job: FragmentWrite) -> WrittenPart:
    """Read fragment `job.index`, apply its decisions, write its part files (a worker's task)."""
    prefix = f"part-{job.index:05d}-"
    fs, root = job.target.filesystem, job.target.root
    writers = {
        part: D.PartWriter(f"{root}/{part}", schema, prefix=prefix, filesystem=fs,
                           hash_files=True)
        for part, schema in ((D.KEPT, job.kept_schema), (D.REJECTED, job.rejected_schema))
    }
    out = WrittenPart()
    offset = 0
    for batch in read_fragment(job.fragment, job.batch_size):
        n = batch.num_rows
        kept, rejected = apply_decisions(batch, job.decisions.slice(offset, n), job.attach,
                                         job.stage)
        offset += n
        writers[D.KEPT].write(kept)
        writers[D.REJECTED].write(rejected)
        out.kept += kept.num_rows
        out.rejected += rejected.num_rows
        out.reasons.update(rejected["reject_reason"].to_pylist())
    if offset != job.decisions.num_rows:
        raise DecisionsOutOfOrder(
            f"{job.stage}: fragment {job.index} has {offset} rows, its decisions "
            f"{job.decisions.num_rows}")
    out.rows_in = offset
    for part, w in writers.items():
        w.close(leave_a_file=False)
        for name, rows in w.file_rows.items():
            size = D.file_size(f"{root}/{part}/{name}", fs)
            out.files[f"{part}/{name}"] = (rows, w.file_sha256[name], size)
    return out


def jobs(
    fragments: list[Fragment],
    decisions: pa.Table,
    attach: list[str],
    kept_schema: pa.Schema,
    target: WriteTarget,
    stage: str,
    batch_size: int,
) -> list[FragmentWrite]:
    """One `FragmentWrite` per fragment, each with its own compact copy of its decisions."""
    out = []
    offset = 0
    rejected_schema = S.with_reject_columns(kept_schema)
    for i, frag in enumerate(fragments):
        idx = pa.array(range(offset, offset + frag.rows), pa.int64())
        out.append(FragmentWrite(i, frag, decisions.take(idx), tuple(attach), kept_schema,
                                 rejected_schema, target, stage, batch_size))
        offset += frag.rows
    if offset != decisions.num_rows:
        raise DecisionsOutOfOrder(
            f"{stage}: the input's fragments hold {offset} rows, the decisions "
            f"{decisions.num_rows}")
    return out
