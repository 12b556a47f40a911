"""`curate ingest` part by part: each task reads, validates and writes its own part.

For adapters that turn each record into a pair on its own (every kind but
llava-critic's pointwise config, which pairs records) and for input files (not
`hf://`), the input is cut into parts: a parquet file's row groups or an uncompressed
JSON lines file's lines, about `ROWS_PER_PART` rows a part, or a whole JSON / CSV /
compressed file. A task reads its part, runs the adapter and `build_chunk`, writes
`kept/` and `rejected/` files named after the part (`part-PPPPP-NNNNN.parquet`), and
reports counts, checksums and its kept ids. The local engine runs the tasks in its
pool and Ray on its workers, so both write the same files and no image byte passes
through the driver; only hub inputs and the pointwise pairing are read on the driver
(`curate.stages.ingest`).

Repeated pair ids are settled on the driver in input order, as locally: a kept row
whose id was seen before (in an earlier part or earlier in its own) is moved to
rejected as `duplicate_pair_id` by a second task that rewrites that part's kept files.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate import dataset as D
from curate import schema as S
from curate.engine.fragments import row_group_runs
from curate.pipeline.fragment_writes import WriteTarget, WrittenPart
from curate.sources.base import Adapter
from curate.sources.readers import (
    LineSpan,
    Record,
    expand_inputs,
    jsonl_spans,
    parquet_row_group_bytes,
    parquet_row_groups,
    read_file,
    read_jsonl_span,
    read_parquet_rows,
)
from curate.stages.ingest_rows import (
    IngestOptions,
    build_chunk,
    chunked,
    holds_photos,
    repeated_ids,
)

if TYPE_CHECKING:
    from curate.engine.protocol import Engine
    from curate.pipeline.runner import StageRun

# A part ends at whichever comes first: enough parts for every core on a file of photos
# (a 62 MB parquet of 512 photos in 8 row groups is 8 parts, which balance over 2-4
# workers), few enough task overheads on text.
ROWS_PER_PART = 4096
BYTES_PER_PART = 8 << 20
STAGE = "ingest"


@dataclass(frozen=True)
class IngestPart:
    """Part `index` of the input: `row_groups` of a parquet `file` (None: the whole file)."""

    index: int
    file: str
    row_groups: tuple[int, ...] | None
    first_row: int
    adapter: Adapter
    opts: IngestOptions
    target: WriteTarget
    chunk_size: int = 64
    span: LineSpan | None = None  # lines of a JSON lines file (None: the whole file)
    nbytes: int = 0  # the part's share of its file's stored bytes (for the progress bar)

    def records(self) -> Iterator[Record]:
        """The part's raw records, in input order."""
        if self.span is not None:
            return read_jsonl_span(self.file, self.span)
        if self.row_groups is None:
            return read_file(self.file)
        return read_parquet_rows(self.file, list(self.row_groups), self.first_row)


@dataclass
class IngestedPart(WrittenPart):
    """What a worker wrote for one part, plus its kept ids (in order) for the driver."""

    kept_ids: list[str] = field(default_factory=list)
    index: int = 0


@dataclass(frozen=True)
class MoveDuplicates:
    """Move kept rows at `positions` (0-based, across the part's kept files in name order)
    of part `index` to a rejected file, as repeats of the ids in `details`."""

    index: int
    kept_files: tuple[str, ...]  # relative paths, in name order
    kept_rows: tuple[int, ...]  # rows in each
    positions: tuple[int, ...]
    details: tuple[str, ...]
    target: WriteTarget


def runs_in_workers(adapter: Adapter, inputs: list[str]) -> bool:
    """Whether ingest can run part by part: a record-by-record adapter over files."""
    return adapter.record_by_record and all(isinstance(i, str)  # files, not hub/saved
                                            for i in expand_inputs(inputs))


def plan_parts(inputs: list[str], adapter: Adapter, opts: IngestOptions, target: WriteTarget,
               chunk_size: int, rows_per_part: int | None = None) -> list[IngestPart]:
    """The input cut into parts, in input order."""
    rows_per_part = rows_per_part or ROWS_PER_PART
    parts: list[IngestPart] = []

    def add(file: str, groups: tuple[int, ...] | None, first: int,
            span: LineSpan | None = None, nbytes: int = 0) -> None:
        parts.append(IngestPart(len(parts), file, groups, first, adapter, opts, target,
                                chunk_size, span, nbytes))

    for file in expand_inputs(inputs):
        assert isinstance(file, str)
        size = os.path.getsize(file)
        if file.endswith((".jsonl", ".ndjson")):
            spans = jsonl_spans(file, rows_per_part, BYTES_PER_PART)
            if spans is None:  # read whole (see jsonl_spans)
                add(file, None, 0, None, size)
            for span in spans or []:
                add(file, None, 0, span, span.end - span.start)
            continue
        if not file.endswith(".parquet"):
            add(file, None, 0, None, size)
            continue
        rows = parquet_row_groups(file)
        done = 0  # bytes shared out by rows, the last part taking the rest
        for groups, first, n in row_group_runs(rows, rows_per_part,
                                               parquet_row_group_bytes(file), BYTES_PER_PART):
            share = size - done if first + n >= sum(rows) else size * n // max(1, sum(rows))
            add(file, groups, first, None, share)
            done += share
    return parts


def ingest_part(job: IngestPart) -> IngestedPart:
    """A worker's task: read, validate and write one part of the input."""
    writers = _writers(job.index, job.target)
    out = IngestedPart(index=job.index)
    out.kept_consumed = out.rejected_consumed = 0
    for chunk in chunked(job.adapter.pairs(job.records), job.chunk_size):
        res = build_chunk((chunk, job.adapter.source, job.opts))
        writers[D.KEPT].write(res.kept)
        if res.rejected.num_rows:
            writers[D.REJECTED].write(
                S.reject_rows(res.rejected, res.reasons, res.details, STAGE))
        out.rows_in += res.rows_in
        out.kept += res.kept.num_rows
        out.rejected += res.rejected.num_rows
        out.kept_consumed += res.kept_consumed
        out.rejected_consumed += res.rejected_consumed
        out.reasons.update(res.reasons)
        out.kept_ids += res.kept["pair_id"].to_pylist()
    out.files = _close(writers, job.target)
    return out


def move_duplicates(job: MoveDuplicates) -> WrittenPart:
    """Rewrite part `job.index`'s kept files without the repeated rows and write those
    rows to its own rejected file; returns the change (negative kept counts)."""
    fs, root = job.target.filesystem, job.target.root
    moved: list[pa.Table] = []
    change = WrittenPart()
    start = 0
    for rel, n in zip(job.kept_files, job.kept_rows, strict=True):
        hits = [p - start for p in job.positions if start <= p < start + n]
        start += n
        if not hits:  # files without a repeat are neither read nor rewritten
            continue
        path = f"{root}/{rel}"
        table = pq.read_table(path, filesystem=fs) if fs is not None else pq.read_table(path)
        mask = pc.is_in(pa.array(range(n)), value_set=pa.array(hits))
        moved.append(table.filter(mask))
        change.files.update(_rewrite(table.filter(pc.invert(mask)), path, rel, fs))
    rows = pa.concat_tables(moved)
    k = rows.num_rows
    rejected = S.reject_rows(rows, ["duplicate_pair_id"] * k, list(job.details), STAGE)
    w = D.PartWriter(f"{root}/{D.REJECTED}", rejected.schema,
                     prefix=f"part-{job.index:05d}-d", filesystem=fs, hash_files=True)
    w.write(rejected)
    w.close(leave_a_file=False)
    change.files.update(_reported(w, D.REJECTED, job.target))
    change.kept, change.rejected = -k, k
    change.kept_consumed, change.rejected_consumed = -k, k
    change.reasons = Counter({"duplicate_pair_id": k})
    return change


def settle_duplicate_ids(part: IngestedPart, seen: set[int], target: WriteTarget
                         ) -> MoveDuplicates | None:
    """The move job for `part`'s kept rows whose ids came before (updates `seen`)."""
    repeats = repeated_ids(part.kept_ids, seen)
    positions = [pos for pos, r in enumerate(repeats) if r]
    details = [f"same source, id and content as {part.kept_ids[p]}" for p in positions]
    if not positions:
        return None
    kept_files = tuple(sorted(k for k in part.files if k.startswith(f"{D.KEPT}/")))
    return MoveDuplicates(part.index, kept_files, tuple(part.files[k][0] for k in kept_files),
                          tuple(positions), tuple(details), target)


def ingest_in_workers(run: StageRun, inputs: list[str], adapter: Adapter, opts: IngestOptions,
                      engine: Engine,
                      chunk_size: int, progress: Any) -> None:
    """Every part on the engine's workers, then the repeated ids moved to rejected."""
    target = run.worker_target()
    seen: set[int] = set()
    moves = []
    parts = plan_parts(inputs, adapter, opts, target, chunk_size)
    done = 0
    written = engine.map(ingest_part, parts, releases_gil=_photos(parts))
    for job, part in zip(parts, written, strict=True):
        run.add_written(part)
        done += job.nbytes
        move = settle_duplicate_ids(part, seen, target)
        if move is not None:
            moves.append(move)
        progress.set(done, rows=part.rows_in)
    for change in engine.map(move_duplicates, moves):
        run.add_written(change)


def _photos(parts: list[IngestPart]) -> bool:
    """Whether the first part's first chunk holds photos (`holds_photos`)."""
    if not parts:
        return False
    first = parts[0]
    chunk = next(iter(chunked(first.adapter.pairs(first.records), first.chunk_size)), [])
    return holds_photos(chunk, first.opts)


# -- writing ------------------------------------------------------------------------------
def _writers(index: int, target: WriteTarget) -> dict[str, D.PartWriter]:
    """Part `index`'s kept and rejected writers, each file hashed as it is written."""
    schemas = {D.KEPT: S.PAIR_SCHEMA, D.REJECTED: S.with_reject_columns(S.PAIR_SCHEMA)}
    return {part: D.PartWriter(f"{target.root}/{part}", schema, prefix=f"part-{index:05d}-",
                               filesystem=target.filesystem, hash_files=True)
            for part, schema in schemas.items()}


def _close(writers: dict[str, D.PartWriter], target: WriteTarget
           ) -> dict[str, tuple[int, str, int]]:
    files: dict[str, tuple[int, str, int]] = {}
    for part, w in writers.items():
        w.close(leave_a_file=False)
        files.update(_reported(w, part, target))
    return files


def _reported(w: D.PartWriter, part: str, target: WriteTarget
              ) -> dict[str, tuple[int, str, int]]:
    """(rows, sha256, size) of every file `w` wrote, by path relative to the target."""
    return {f"{part}/{name}": (rows, w.file_sha256[name],
                               D.file_size(f"{target.root}/{part}/{name}", target.filesystem))
            for name, rows in w.file_rows.items()}


def _rewrite(table: pa.Table, path: str, rel: str, fs: Any) -> dict[str, tuple[int, str, int]]:
    """Overwrite the parquet file at `path` with `table`; its new (rows, sha256, size)."""
    sha, size = D.write_parquet_hashed(table, path, fs)
    return {rel: (table.num_rows, sha, size)}
