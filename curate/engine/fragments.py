"""Input fragments: a picklable slice of a dataset folder that a worker reads itself.

The local engine streams input batches from the driver to its process pool; a
distributed engine instead hands each worker a `Fragment` (one parquet file's row
groups, the columns wanted and the schema to conform to), so image bytes go from
storage to the worker that needs them and never through the driver.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curate import dataset as D

ROWS_PER_FRAGMENT = 4096


@dataclass(frozen=True)
class Fragment:
    """Row groups `row_groups` of parquet file `file` (on `filesystem`, None = local)."""

    file: str
    row_groups: tuple[int, ...]
    columns: tuple[str, ...]  # the columns this file has, of those wanted
    schema: pa.Schema  # what every batch is conformed to
    filesystem: Any = None
    rows: int = 0
    # the manifest's sha256 and size of `file` and the name errors give it: set on a file's
    # first fragment, whose reader hashes the whole file (None: unchecked)
    sha256: str | None = None
    size: int | None = None
    name: str = ""


def fragments(
    datasets: list[D.Dataset],
    columns: list[str] | None = None,
    rows_per_fragment: int | None = None,
) -> list[Fragment]:
    """The kept rows of `datasets`, in `D.iter_inputs` order, cut at row-group boundaries
    into fragments of about `rows_per_fragment` (default `ROWS_PER_FRAGMENT`) rows."""
    rows_per_fragment = rows_per_fragment or ROWS_PER_FRAGMENT
    schema = D.unified_schema(datasets)
    if columns is not None:
        schema = pa.schema([schema.field(c) for c in columns])
    out: list[Fragment] = []
    for d in datasets:
        have = set(d.schema().names)
        cols = tuple(c for c in schema.names if c in have)
        for f in d.files(D.KEPT):
            meta = d.parquet_file(f).metadata
            sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
            sha, size = d.expected(f)
            name = f"{d.location}/{d.relative(f)}"
            for k, (groups, _, rows) in enumerate(row_group_runs(sizes, rows_per_fragment)):
                # the file's first fragment verifies all of it (a mismatch fails the stage)
                out.append(Fragment(str(f), groups, cols, schema, d.filesystem, rows,
                                    sha if k == 0 else None, size, name))
    return out


def row_group_runs(sizes: list[int], rows_per_run: int, byte_sizes: list[int] | None = None,
                   bytes_per_run: int | None = None) -> list[tuple[tuple[int, ...], int, int]]:
    """A file's row groups (their row counts `sizes`) cut into consecutive runs of at
    least `rows_per_run` rows, the last maybe fewer: (indices, first row, rows) each. Given
    their `byte_sizes`, a run also ends before it would pass `bytes_per_run` bytes (a
    group larger than that is a run of its own)."""
    runs: list[tuple[tuple[int, ...], int, int]] = []
    group: list[int] = []
    first = rows = size = 0
    for i, n in enumerate(sizes):
        nbytes = byte_sizes[i] if byte_sizes is not None else 0
        if group and bytes_per_run is not None and size + nbytes > bytes_per_run:
            runs.append((tuple(group), first, rows))
            first, group, rows, size = first + rows, [], 0, 0
        group.append(i)
        rows += n
        size += nbytes
        if rows >= rows_per_run:
            runs.append((tuple(group), first, rows))
            first, group, rows, size = first + rows, [], 0, 0
    if group:
        runs.append((tuple(group), first, rows))
    return runs


def read_fragment(frag: Fragment, batch_size: int = 1024) -> Iterator[pa.RecordBatch]:
    """The fragment's rows as batches of at most `batch_size`, conformed to its schema;
    the file checked against its manifest's sha256 as it is read (`D.VerifyingFile`)."""
    if frag.sha256 is None:
        pf = D.open_parquet(frag.file, filesystem=frag.filesystem)
        for batch in pf.iter_batches(batch_size=batch_size, row_groups=list(frag.row_groups),
                                     columns=list(frag.columns)):
            yield D.conform(batch, frag.schema)
        return
    vf = D.VerifyingFile.open(frag.file, frag.filesystem, frag.sha256, frag.size,
                              frag.name or frag.file)
    with vf.reading():
        pf = pq.ParquetFile(pa.PythonFile(vf, mode="r"), pre_buffer=False)
        for batch in pf.iter_batches(batch_size=batch_size, row_groups=list(frag.row_groups),
                                     columns=list(frag.columns)):
            yield D.conform(batch, frag.schema)


def apply_to_fragment(fn: Callable[[pa.RecordBatch], Any], batch_size: int,
                      frag: Fragment) -> list[Any]:
    """`fn` over every batch of `frag`, in order (what a worker runs for one fragment)."""
    return [fn(batch) for batch in read_fragment(frag, batch_size)]


def fragment_setup(setup: Callable[[], Callable[[pa.RecordBatch], Any]],
                   batch_size: int) -> Callable[[Fragment], list[Any]]:
    """An actor's setup for fragments: build the batch function once, apply it per fragment."""
    return functools.partial(apply_to_fragment, setup(), batch_size)
