"""The one stage runner: fingerprint + skip, write kept/rejected, conservation, manifest, commit.

Two ways in:
- `StageRun`, a context manager for stages that produce rows themselves (ingest);
- `run_filter_stage`, for stages that read dataset folders: a pure per-batch
  `annotate` function (run by the engine) computes compact keys, a `decide`
  function over all keys says which rows go to rejected, and the runner streams
  the input a second time to write every row once, to kept or to rejected.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from curate import __version__
from curate import dataset as D
from curate import schema as S
from curate.progress import bar, console


class ConservationError(AssertionError):
    """rows in != rows kept + rows rejected: a stage lost or invented rows."""


@dataclass
class StageRun:
    """One run of a stage writing one dataset folder.

    `with StageRun(...) as run:`; if `run.skipped` the output is already up to date.
    Call `run.open(schema)`, then `run.keep(...)` / `run.reject(...)` and
    `run.add_in(n)`; leaving the block checks conservation, writes the manifest and
    commits the folder atomically. An exception removes the temporary folder.
    """

    stage: str
    out: Path | str  # a path, or a filesystem URI (see curate.dataset)
    config: dict[str, Any]
    inputs: list[dict[str, Any]]
    force: bool = False
    base_schema: pa.Schema = S.PAIR_SCHEMA
    rows_per_file: int = D.DEFAULT_ROWS_PER_FILE
    extra: dict[str, Any] = field(default_factory=dict)
    steps: dict[str, float] = field(default_factory=dict)
    engine: dict[str, Any] = field(default_factory=lambda: {"engine": "local", "workers": 1})

    def __post_init__(self) -> None:
        self.out = D.location(self.out)
        self.fingerprint = D.json_fingerprint(
            {"stage": self.stage, "version": __version__, "config": self.config,
             "inputs": [i.get("fingerprint") for i in self.inputs]}
        )
        self.skipped = False
        self.manifest: dict[str, Any] = {}
        self.rows_in = 0
        self.consumed_by_kept = 0
        self.consumed_by_rejected = 0
        self.reasons: Counter[str] = Counter()
        self._tmp: Path | None = None
        self._kept: D.PartWriter | None = None
        self._rejected: D.PartWriter | None = None
        self._t0 = 0.0

    # -- lifecycle -------------------------------------------------------------------
    def __enter__(self) -> StageRun:
        self._t0 = time.perf_counter()
        old = None if self.force else D.read_manifest(self.out)
        if old is not None and old.get("fingerprint") == self.fingerprint:
            self.skipped = True
            self.manifest = old
            console().print(
                f"[yellow]{self.stage}: {self.out} is up to date "
                "(same input and config); skipped. Use --force to redo it."
            )
            return self
        self._tmp = D.temp_folder_for(self.out)
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self.skipped:
            return
        if exc_type is not None:
            for w in (self._kept, self._rejected):
                if w is not None:
                    w.abort()
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)
            return
        self._finish()

    # -- writing ---------------------------------------------------------------------
    def open(
        self,
        kept_schema: pa.Schema | None = None,
        kept_writer: Callable[[Path, pa.Schema], Any] | None = None,
    ) -> None:
        """Open the writers; `kept_writer(folder, schema)` replaces the default PartWriter
        for kept rows (a writer with PartWriter's interface that names its own files)."""
        kept_schema = kept_schema or self.base_schema
        S.validate(kept_schema, base=self.base_schema)
        assert self._tmp is not None
        if kept_writer is not None:
            self._kept = kept_writer(self._tmp / D.KEPT, kept_schema)
        else:
            self._kept = D.PartWriter(self._tmp / D.KEPT, kept_schema, self.rows_per_file)
        self._rejected = D.PartWriter(
            self._tmp / D.REJECTED, S.with_reject_columns(kept_schema), self.rows_per_file
        )

    def add_in(self, n: int) -> None:
        self.rows_in += n

    def keep(self, batch: pa.RecordBatch | pa.Table, consumed: int | None = None) -> None:
        """Write kept rows; `consumed` is how many input rows they stand for (default: one each)."""
        assert self._kept is not None, "call open() first"
        self._kept.write(batch)
        self.consumed_by_kept += batch.num_rows if consumed is None else consumed

    def reject(
        self,
        batch: pa.RecordBatch | pa.Table,
        reasons: Sequence[str] | pa.Array,
        details: Sequence[str | None] | pa.Array | None = None,
        stage: str | None = None,
        consumed: int | None = None,
    ) -> None:
        """Write rejected rows; `consumed` as in `keep` (default: one input row each)."""
        assert self._rejected is not None, "call open() first"
        n = batch.num_rows
        if n == 0:
            return
        reasons_arr = pa.array(reasons, type=pa.string())
        details_arr = pa.array(details if details is not None else [None] * n, type=pa.string())
        if len(reasons_arr) != n or len(details_arr) != n:
            raise ValueError("one reason and one detail per rejected row")
        if reasons_arr.null_count:
            raise ValueError("every rejected row needs a reason")
        stage_arr = pa.array([stage or self.stage] * n, type=pa.string())
        tbl = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
        for name in S.REJECT_COLUMNS:
            if name in tbl.column_names:
                tbl = tbl.drop_columns([name])
        tbl = tbl.append_column("reject_stage", stage_arr)
        tbl = tbl.append_column("reject_reason", reasons_arr)
        tbl = tbl.append_column("reject_detail", details_arr)
        self._rejected.write(tbl)
        self.consumed_by_rejected += n if consumed is None else consumed
        self.reasons.update(reasons_arr.to_pylist())

    # -- commit ------------------------------------------------------------------------
    def _finish(self) -> None:
        if self._kept is None:
            self.open()
        assert self._kept is not None and self._rejected is not None and self._tmp is not None
        self._kept.close()
        self._rejected.close()
        rows_rejected = self._rejected.rows
        if self.rows_in != self.consumed_by_kept + self.consumed_by_rejected:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise ConservationError(
                f"{self.stage}: rows in {self.rows_in} != kept {self.consumed_by_kept} "
                f"+ rejected {self.consumed_by_rejected}"
            )
        files = D.checksum_files(self._tmp)
        file_rows = {f"{D.KEPT}/{k}": v for k, v in self._kept.file_rows.items()}
        file_rows.update({f"{D.REJECTED}/{k}": v for k, v in self._rejected.file_rows.items()})
        self.manifest = {
            "stage": self.stage,
            "version": __version__,
            "config": self.config,
            "inputs": self.inputs,
            "fingerprint": self.fingerprint,
            "rows_in": self.rows_in,
            "rows_kept": self._kept.rows,
            "rows_rejected": rows_rejected,
            "rejected_by_reason": dict(sorted(self.reasons.items())),
            "files": files,
            "file_rows": file_rows,
            "engine": self.engine,
            "steps": {k: round(v, 3) for k, v in self.steps.items()},
            "seconds": round(time.perf_counter() - self._t0, 3),
            **self.extra,
        }
        if self.consumed_by_kept != self._kept.rows or self.consumed_by_rejected != rows_rejected:
            self.manifest["inputs_consumed"] = {
                "kept": self.consumed_by_kept, "rejected": self.consumed_by_rejected
            }
        D.write_manifest(self._tmp, self.manifest)
        D.commit(self._tmp, self.out)
        self._tmp = None


def input_record(ds: D.Dataset) -> dict[str, Any]:
    return {"path": ds.location, "fingerprint": ds.fingerprint, "stage": ds.manifest.get("stage")}


@dataclass
class Decisions:
    """What `decide` returns: one row per input row, in input order.

    `table` has `pair_id`, `reject_reason` (null = keep), `reject_detail`, and any
    columns to attach to every output row (hashes, scores, similarities).
    """

    table: pa.Table
    extra: dict[str, Any] = field(default_factory=dict)
    # writes extra files (e.g. `embeddings/`) into the output folder before it is
    # committed; they are checksummed in the manifest like the data files
    write_files: Callable[[Path], None] | None = None


def run_filter_stage(
    stage: str,
    inputs: Sequence[str | Path],
    out: str | Path,
    config: dict[str, Any],
    *,
    annotate: Callable[[pa.RecordBatch], pa.RecordBatch] | None,
    annotate_columns: list[str] | None,
    decide: Callable[[pa.Table], Decisions],
    engine: Any,
    force: bool = False,
    batch_size: int = 512,
    annotate_setup: Callable[[], Callable[[pa.RecordBatch], pa.RecordBatch]] | None = None,
    annotate_releases_gil: bool = False,
) -> dict[str, Any]:
    """Run a two-pass stage over the kept rows of `inputs` (see the module docstring).

    `annotate_setup` (instead of `annotate`) builds the annotate function once per engine
    worker, for one that holds a model: `engine.map_inputs_actors` runs it.
    `annotate_releases_gil`: `annotate` spends its time decoding images, so the local
    engine runs it on threads (see `LocalEngine.map`)."""
    datasets = [D.Dataset.open(p) for p in inputs]
    run = StageRun(
        stage, out, config, [input_record(d) for d in datasets], force=force,
        engine=engine.describe(),
    )
    with run:
        if run.skipped:
            return run.manifest
        total = sum(d.count() for d in datasets)
        t = time.perf_counter()
        keys = _collect_keys(datasets, annotate, annotate_columns, engine, batch_size, total,
                             annotate_setup, annotate_releases_gil)
        run.steps["annotate"] = time.perf_counter() - t
        t = time.perf_counter()
        decisions = decide(keys)
        run.steps["decide"] = time.perf_counter() - t
        table = decisions.table
        if table.num_rows != total:
            raise ConservationError(f"{stage}: decide returned {table.num_rows} rows for {total}")
        attach = [c for c in table.column_names if c not in ("pair_id", *S.REJECT_COLUMNS)]
        schema = D.unified_schema(datasets)
        for c in attach:
            if schema.get_field_index(c) >= 0:
                schema = schema.remove(schema.get_field_index(c))
            schema = schema.append(table.schema.field(c))
        run.open(schema)
        run.extra.update(decisions.extra)
        if decisions.write_files is not None:
            assert run._tmp is not None
            decisions.write_files(run._tmp)
        t = time.perf_counter()
        offset = 0
        with bar(f"{stage}: write", total) as b:
            for batch in D.iter_inputs(datasets, batch_size=batch_size):
                n = batch.num_rows
                dec = table.slice(offset, n)
                offset += n
                if not pc.all(pc.equal(dec["pair_id"], batch.column("pair_id"))).as_py():
                    raise ConservationError(f"{stage}: decisions out of order with the input")
                tbl = pa.Table.from_batches([batch])
                for c in attach:
                    if c in tbl.column_names:
                        tbl = tbl.drop_columns([c])
                    tbl = tbl.append_column(c, dec[c])
                run.add_in(n)
                is_rej = pc.is_valid(dec["reject_reason"])
                run.keep(tbl.filter(pc.invert(is_rej)))
                rej = tbl.filter(is_rej)
                if rej.num_rows:
                    run.reject(
                        rej,
                        dec["reject_reason"].filter(is_rej).combine_chunks(),
                        dec["reject_detail"].filter(is_rej).combine_chunks(),
                    )
                b.advance(n)
        run.steps["write"] = time.perf_counter() - t
    return run.manifest


def _collect_keys(
    datasets: list[D.Dataset],
    annotate: Callable[[pa.RecordBatch], pa.RecordBatch] | None,
    columns: list[str] | None,
    engine: Any,
    batch_size: int,
    total: int,
    annotate_setup: Callable[[], Callable[[pa.RecordBatch], pa.RecordBatch]] | None = None,
    releases_gil: bool = False,
) -> pa.Table:
    cols = columns if columns is not None else ["pair_id"]
    if "pair_id" not in cols:
        cols = ["pair_id", *cols]
    parts: list[pa.RecordBatch] = []
    with bar("annotate", total) as b:
        results: Iterable[pa.RecordBatch]
        if annotate_setup is not None:
            results = engine.map_inputs_actors(annotate_setup, datasets, cols, batch_size)
        elif annotate is not None:
            results = engine.map_inputs(annotate, datasets, cols, batch_size,
                                        releases_gil=releases_gil)
        else:
            results = D.iter_inputs(datasets, columns=cols, batch_size=batch_size)
        for res in results:
            parts.append(res)
            b.advance(res.num_rows)
    if not parts:
        return pa.table({"pair_id": pa.array([], pa.string())})
    return pa.Table.from_batches(parts)


def keep_all(keys: pa.Table) -> pa.Table:
    """A decision table that keeps every row (a starting point for `decide`)."""
    n = keys.num_rows
    return pa.table(
        {
            "pair_id": keys["pair_id"],
            "reject_reason": pa.nulls(n, pa.string()),
            "reject_detail": pa.nulls(n, pa.string()),
        }
    )
