"""The one stage runner: fingerprint + skip, write kept/rejected, conservation, manifest, commit.

Two ways in:
- `StageRun`, a context manager for stages that produce rows themselves (ingest);
- `run_filter_stage`, for stages that read dataset folders: a pure per-batch
  `annotate` function (run by the engine) computes compact keys, a `decide`
  function over all keys says which rows go to rejected, and one task per input
  fragment reads its rows a second time and writes each once, to kept or to rejected
  (`curate.pipeline.fragment_writes`: the same write path on every engine).

Every stage registers itself once, in its module, with `register_stage` (its name, its
place in the pipeline, its reject reasons); `all_stages()` is that registry with every
stage module imported, which the demo iterates (and the reason table, and the tests).
"""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.fs as pafs

from curate import __version__
from curate import dataset as D
from curate import schema as S
from curate.manifest import Manifest
from curate.pipeline.card import write_card
from curate.progress import bar, console
from curate.reasons import REASONS, Reason, check_registered
from curate.registry import Registry, import_submodules

if TYPE_CHECKING:
    from curate.engine.protocol import Engine
    from curate.pipeline.entry import StageEntry
    from curate.pipeline.fragment_writes import WriteTarget, WrittenPart


@dataclass(frozen=True)
class StageSpec:
    """A stage as the rest of `curate` needs to know it.

    `order`: its place in the pipeline (ingest 10, dedup 20, similar 30, decontam 40,
    reward 50, generate 52, pairs 54, shard 60). `filter`: it reads dataset folders'
    kept rows and writes each of them to kept/ or rejected/ (dedup, similar, decontam,
    reward): the demo runs the filter stages in order between ingest and shard.
    `run`: the stage's entry point, `run(inputs, out, cfg, *, engine, force) -> Manifest`
    (`curate.pipeline.entry`), and `config` the class of its `cfg`; `run(inputs, out,
    config())` is the demo's step for a stage it has no step of its own for.
    """

    name: str
    order: float
    filter: bool = False
    run: StageEntry | None = None
    config: type | None = None

    @property
    def reasons(self) -> list[str]:
        """The reject reasons the stage may write (`curate.reasons.REASONS`)."""
        return [r for r, spec in REASONS.items() if self.name in spec.stages]


STAGES: Registry[StageSpec] = Registry("stage")


def register_stage(name: str, order: float, *, filter: bool = False,
                   run: StageEntry | None = None, config: type | None = None,
                   reasons: dict[str, Reason] | None = None) -> StageSpec:
    """Register a stage; `reasons` are reject reasons of its own that `curate.reasons` does
    not list yet (each with `stages` naming this stage), added to that registry."""
    for reason, spec in (reasons or {}).items():
        if name not in spec.stages:
            raise ValueError(f"stage {name}: reason {reason} does not name the stage")
        REASONS.add(reason, spec, order=1000 + order)
    if (run is None) != (config is None):
        raise ValueError(f"stage {name}: register its run and its config class together")
    return STAGES.add(name, StageSpec(name, order, filter, run, config), order=order)


@contextmanager
def temporary_stage(name: str, order: float, **kwargs: Any) -> Iterator[StageSpec]:
    """`register_stage` for a `with` block: the stage and its own reasons are removed after
    it (a test's throwaway stage)."""
    before = set(REASONS)
    spec = register_stage(name, order, **kwargs)
    try:
        yield spec
    finally:
        STAGES.remove(name)
        for reason in set(REASONS) - before:
            REASONS.remove(reason)


def all_stages() -> Registry[StageSpec]:
    """STAGES, with every module of `curate.stages` imported so each has registered."""
    import_submodules("curate.stages")
    return STAGES


def filter_stages() -> list[StageSpec]:
    """The registered filter stages in pipeline order."""
    return [s for s in all_stages().values() if s.filter]


@dataclass
class StageRun:
    """One run of a stage writing one dataset folder.

    `with StageRun(...) as run:`; if `run.skipped` the output is already up to date.
    Call `run.open(schema)`, then `run.keep(...)` / `run.reject(...)` and
    `run.add_in(n)`; leaving the block checks conservation, writes the manifest and
    commits the folder atomically. An exception removes the temporary folder.
    """

    stage: str
    # a path, or a filesystem URI (see curate.dataset): `__post_init__` makes it a Path, or
    # keeps a URI as text
    out: str | os.PathLike[str]
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
        if D.is_uri(self.out):
            D.check_output_uri(str(self.out))
        D.check_output(self.out, [i["path"] for i in self.inputs if i.get("path")])
        self.fingerprint = D.json_fingerprint(
            {"stage": self.stage, "version": __version__, "config": self.config,
             "inputs": [i.get("fingerprint") for i in self.inputs]}
        )
        self.skipped = False
        self._manifest: Manifest | None = None
        self.rows_in = 0
        self.consumed_by_kept = 0
        self.consumed_by_rejected = 0
        self.reasons: Counter[str] = Counter()
        self._tmp: Path | None = None
        # files engine workers wrote (see curate.pipeline.fragment_writes):
        # relpath -> (rows, sha, size)
        self._worker_files: dict[str, tuple[int, str, int]] = {}
        self._worker_rows = {D.KEPT: 0, D.REJECTED: 0}
        self._remote_staging: tuple[Any, str] | None = None  # (filesystem, path) for a URI
        self._kept: D.PartWriter | None = None
        self._rejected: D.PartWriter | None = None
        self._t0 = 0.0

    # -- lifecycle -------------------------------------------------------------------
    def __enter__(self) -> StageRun:
        self._t0 = time.perf_counter()
        old = None if self.force else self._old_manifest()
        if old is not None and old.get("fingerprint") == self.fingerprint:
            stale = self._why_stale()
            if not stale:
                self.skipped = True
                self._manifest = old
                console().print(
                    f"[yellow]{self.stage}: {D.redact(str(self.out))} is up to date "
                    "(same input and config, its files intact); skipped. Use --force to "
                    "redo it."
                )
                return self
            console().print(f"[yellow]{self.stage}: redoing {D.redact(str(self.out))}: "
                            f"{D.redact(stale)}", highlight=False)
        self._tmp = D.temp_folder_for(self.out)
        return self

    @property
    def manifest(self) -> Manifest:
        """The run's manifest: the old one when skipped, else the one written on leaving."""
        if self._manifest is None:
            raise RuntimeError(f"{self.stage}: the manifest is written when the run ends")
        return self._manifest

    def _old_manifest(self) -> Manifest | None:
        """The output's manifest, or None when there is none or it is damaged (redo)."""
        try:
            return D.read_manifest(self.out)
        except ValueError:
            return None

    def _why_stale(self) -> str | None:
        """Why an output whose fingerprint matches must still be redone: one of its files,
        or of its dataset inputs' files, no longer matches its manifest. None = intact."""
        try:
            problems = D.Dataset.open(self.out).verify()
        except D.DatasetError as exc:
            return str(exc)
        if problems:
            return problems[0]
        for record in self.inputs:
            if "stage" not in record or not record.get("path"):
                continue  # a raw input file: its fingerprint is its content already
            problems = D.Dataset.open(record["path"]).verify()
            if problems:
                return f"its input changed: {problems[0]}"
        return None

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self.skipped:
            return
        if exc_type is not None:
            self._discard()
            return
        try:
            self._finish()
        except BaseException:
            self._discard()
            raise

    def _discard(self) -> None:
        """Remove everything this run wrote; the output folder stays as it was."""
        for w in (self._kept, self._rejected):
            if w is not None:
                w.abort()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        self._drop_remote_staging()

    # -- writing ---------------------------------------------------------------------
    def open(self, kept_schema: pa.Schema | None = None) -> None:
        """Open the driver's writers (rows its own reading produces: hub inputs, the
        pointwise pairing, generate and pairs; and the empty file of a part no task wrote)."""
        kept_schema = kept_schema or self.base_schema
        S.validate(kept_schema, base=self.base_schema)
        assert self._tmp is not None
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
        tbl = S.reject_rows(batch, reasons, details, stage or self.stage)
        self._rejected.write(tbl)
        self.consumed_by_rejected += n if consumed is None else consumed
        self.reasons.update(tbl["reject_reason"].to_pylist())

    @property
    def folder(self) -> Path:
        """The temporary folder this run builds (committed into place when it ends)."""
        assert self._tmp is not None, "the run has not started, or has ended"
        return self._tmp

    # -- rows written by engine workers ---------------------------------------------------
    def worker_target(self) -> WriteTarget:
        """Where engine workers write this run's part files: the staging folder beside a
        local output (every Ray node must see it: one machine, or a shared filesystem),
        or a staging prefix beside a URI output on its own filesystem."""
        from curate.pipeline.fragment_writes import WriteTarget

        assert self._tmp is not None
        if not D.is_uri(self.out):
            return WriteTarget(str(self._tmp))
        if self._remote_staging is None:
            fs, inner = D.resolve_uri(str(self.out))
            parent, _, name = inner.rpartition("/")
            staging = f"{parent}/.{name}.tmp-{os.getpid()}" if parent else f".{name}.tmp"
            try:
                fs.delete_dir_contents(staging, missing_dir_ok=True)
            except OSError as exc:  # e.g. no such bucket: said before any work is done
                raise D.RemoteError(f"{D.redact(str(self.out))}: upload failed: {exc}"
                                    ) from exc
            self._remote_staging = (fs, staging)
        fs, staging = self._remote_staging
        return WriteTarget(staging, fs)

    def add_written(self, part: WrittenPart) -> None:
        """Count what a worker wrote for one fragment (`curate.pipeline.fragment_writes`)."""
        self.rows_in += part.rows_in
        self.consumed_by_kept += part.kept if part.kept_consumed is None else part.kept_consumed
        self.consumed_by_rejected += (part.rejected if part.rejected_consumed is None
                                      else part.rejected_consumed)
        self._worker_rows[D.KEPT] += part.kept
        self._worker_rows[D.REJECTED] += part.rejected
        self.reasons.update(part.reasons)
        self._worker_files.update(part.files)

    def _check_worker_files(self) -> None:
        """Every file a worker reported is where the driver will commit it from."""
        assert self._tmp is not None
        fs, root = (self._remote_staging if self._remote_staging is not None
                    else (None, str(self._tmp)))
        for rel, (_, _, size) in sorted(self._worker_files.items()):
            path = f"{root}/{rel}"
            if fs is not None:
                info = fs.get_file_info(path)
                found = info.size if info.type == pafs.FileType.File else None
            else:
                found = os.path.getsize(path) if os.path.isfile(path) else None
            if found != size:
                raise RuntimeError(
                    f"{self.stage}: a worker wrote {rel} ({size} bytes) but the driver finds "
                    f"{'nothing' if found is None else f'{found} bytes'} at {path}. With a "
                    "multi-node Ray cluster, write to a URI (s3://...) or to a path every "
                    "node shares.")

    def _drop_remote_staging(self) -> None:
        if self._remote_staging is not None:
            fs, staging = self._remote_staging
            try:
                fs.delete_dir(staging)
            except (FileNotFoundError, OSError):
                pass
            self._remote_staging = None

    # -- commit ------------------------------------------------------------------------
    def _finish(self) -> None:
        if self._kept is None:
            self.open()
        assert self._kept is not None and self._rejected is not None and self._tmp is not None
        for part, writer in ((D.KEPT, self._kept), (D.REJECTED, self._rejected)):
            if any(k.startswith(f"{part}/") for k in self._worker_files):
                writer.close(leave_a_file=False)  # the workers' files tell the schema
            else:
                writer.close()
        rows_kept = self._kept.rows + self._worker_rows[D.KEPT]
        rows_rejected = self._rejected.rows + self._worker_rows[D.REJECTED]
        if self.rows_in != self.consumed_by_kept + self.consumed_by_rejected:
            raise D.ConservationError(
                f"{self.stage}: rows in {self.rows_in} != kept {self.consumed_by_kept} "
                f"+ rejected {self.consumed_by_rejected}"
            )
        self._check_worker_files()
        files = D.checksum_files(self._tmp, skip=set(self._worker_files))
        files.update({k: sha for k, (_, sha, _) in self._worker_files.items()})
        files = dict(sorted(files.items()))
        sizes = D.file_sizes(self._tmp, [k for k in files if k not in self._worker_files])
        sizes.update({k: size for k, (_, _, size) in self._worker_files.items()})
        file_rows = {f"{D.KEPT}/{k}": v for k, v in self._kept.file_rows.items()}
        file_rows.update({f"{D.REJECTED}/{k}": v for k, v in self._rejected.file_rows.items()})
        file_rows.update({k: rows for k, (rows, _, _) in self._worker_files.items()})
        file_rows = dict(sorted(file_rows.items()))
        check_registered(self.stage, self.reasons)
        consumed = None
        if self.consumed_by_kept != rows_kept or self.consumed_by_rejected != rows_rejected:
            consumed = {"kept": self.consumed_by_kept, "rejected": self.consumed_by_rejected}
        self._manifest = Manifest(
            stage=self.stage,
            version=__version__,
            config=self.config,
            inputs=self.inputs,
            fingerprint=self.fingerprint,
            rows_in=self.rows_in,
            rows_kept=rows_kept,
            rows_rejected=rows_rejected,
            rejected_by_reason=dict(sorted(self.reasons.items())),
            files=files,
            file_sizes=dict(sorted(sizes.items())),
            file_rows=file_rows,
            engine=self.engine,
            steps={k: round(v, 3) for k, v in self.steps.items()},
            seconds=round(time.perf_counter() - self._t0, 3),
            inputs_consumed=consumed,
            facts=dict(self.extra),
        )
        write_card(self._tmp, self._manifest)  # after the checksums: not in `files`
        D.write_manifest(self._tmp, self._manifest)
        if self._remote_staging is not None:
            fs, staging = self._remote_staging
            D.commit(self._tmp, self.out, staged=(staging, sorted(self._worker_files)))
            self._drop_remote_staging()
        else:
            D.commit(self._tmp, self.out)
        self._tmp = None


def input_record(ds: D.Dataset) -> dict[str, Any]:
    return {"path": ds.location, "fingerprint": ds.fingerprint, "stage": ds.manifest.stage}


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
    inputs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    config: dict[str, Any],
    *,
    annotate: Callable[[pa.RecordBatch], pa.RecordBatch] | None,
    annotate_columns: list[str] | None,
    decide: Callable[[pa.Table], Decisions],
    engine: Engine,
    force: bool = False,
    batch_size: int = 512,
    annotate_setup: Callable[[], Callable[[pa.RecordBatch], pa.RecordBatch]] | None = None,
    annotate_releases_gil: bool = False,
) -> Manifest:
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
            raise D.ConservationError(f"{stage}: decide returned {table.num_rows} rows for {total}")
        attach = [c for c in table.column_names if c not in ("pair_id", *S.REJECT_COLUMNS)]
        schema = D.unified_schema(datasets)
        for c in attach:
            if schema.get_field_index(c) >= 0:
                schema = schema.remove(schema.get_field_index(c))
            schema = schema.append(table.schema.field(c))
        run.open(schema)
        run.extra.update(decisions.extra)
        if decisions.write_files is not None:
            decisions.write_files(run.folder)
        t = time.perf_counter()
        with bar(f"{stage}: write", total) as b:
            _write_fragments(run, datasets, table, attach, schema, engine, batch_size, b)
        run.steps["write"] = time.perf_counter() - t
    return run.manifest


def _write_fragments(run: StageRun, datasets: list[D.Dataset], decisions: pa.Table,
                     attach: list[str], schema: pa.Schema, engine: Engine, batch_size: int,
                     progress: Any) -> None:
    """The write pass, the same on every engine: each input fragment's rows are read,
    decided and written by one task (`curate.pipeline.fragment_writes`); the local engine runs the
    tasks on threads (pyarrow's reading, compute and writing release the GIL)."""
    from curate.engine.fragments import fragments
    from curate.pipeline.fragment_writes import jobs, write_fragment

    todo = jobs(fragments(datasets), decisions, attach, schema, run.worker_target(),
                run.stage, batch_size)
    for part in engine.map(write_fragment, todo, releases_gil=True):
        run.add_written(part)
        progress.advance(part.rows_in)


def _collect_keys(
    datasets: list[D.Dataset],
    annotate: Callable[[pa.RecordBatch], pa.RecordBatch] | None,
    columns: list[str] | None,
    engine: Engine,
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
