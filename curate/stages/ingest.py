"""`curate ingest`: source records -> canonical pairs, validated, every row kept or rejected.

Input files are read part by part by the engine's tasks (`curate.stages.ingest_parts`),
the same on every engine; hub inputs and llava-critic's pointwise pairing (which pairs
records across the file) are read here, in order, their chunks validated by the engine.
Both run the one row pipeline, `curate.stages.ingest_rows.build_chunk`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from curate.images import (
    DEFAULT_MAX_IMAGE_BYTES,
    PIL_DEFAULT_MAX_PIXELS,
)
from curate.manifest import Manifest
from curate.pipeline.entry import RUN_ONLY
from curate.pipeline.runner import StageRun, register_stage
from curate.progress import bar
from curate.sources import AdapterOptions, make_adapter
from curate.sources.readers import (
    ReadProgress,
    iter_records,
)
from curate.stages.ingest_candidates import KIND as CANDIDATES
from curate.stages.ingest_candidates import ingest_candidates
from curate.stages.ingest_checks import check_response
from curate.stages.ingest_parts import ingest_in_workers, runs_in_workers
from curate.stages.ingest_rows import (
    IngestOptions,
    build_chunk,
    canonical_row,
    chunked,
    input_fingerprints,
    peek_threads,
    split_duplicate_ids,
)

if TYPE_CHECKING:
    from curate.engine.protocol import Engine

# the row pipeline's names, as before it moved to curate.stages.ingest_rows
__all__ = ["IngestConfig", "IngestOptions", "build_chunk", "canonical_row", "check_response",
           "ingest", "run"]


@dataclass(frozen=True)
class IngestConfig:
    """How `curate ingest` reads its inputs (`kind`: a registered source format).

    `config`/`split`/`revision`/`data_dir`: of a hub dataset (llava-critic's `config`:
    pairwise or pointwise); `chunk_size`: pairs per validation task."""

    kind: str
    source: str | None = None  # the rows' source label (None: the adapter's)
    mapping: dict[str, str] | None = None  # generic kinds: canonical field -> input column
    config: str | None = None
    split: str = "train"
    image_root: str | os.PathLike[str] | None = None
    max_pixels: int = PIL_DEFAULT_MAX_PIXELS
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    revision: str | None = None
    data_dir: str | None = None
    min_score_gap: float = 0.0
    chunk_size: int = field(default=64, metadata=RUN_ONLY)


def run(inputs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str],
        cfg: IngestConfig, *, engine: Engine | None = None, force: bool = False) -> Manifest:
    """Ingest `inputs` of format `cfg.kind` into the dataset folder `out`; returns the
    manifest.

    `kind` "candidates" (prompts with N sampled responses, for `curate pairs`) has its own
    schema and row loop (`curate.stages.ingest_candidates`), on the same row checks."""
    from curate.engine import get_engine

    kind, source, mapping, config = cfg.kind, cfg.source, cfg.mapping, cfg.config
    split, revision, data_dir = cfg.split, cfg.revision, cfg.data_dir
    max_pixels, max_image_bytes = cfg.max_pixels, cfg.max_image_bytes
    chunk_size, min_score_gap = cfg.chunk_size, cfg.min_score_gap
    files = [os.fspath(p) for p in inputs]
    opts = IngestOptions.checked(cfg.image_root, max_pixels, max_image_bytes)
    engine = engine or get_engine("local")
    root = opts.image_root
    if kind == CANDIDATES:
        return ingest_candidates(
            files, out, opts, AdapterOptions(source=source, mapping=mapping or {},
                                              config=config, has_image_root=root is not None),
            config=config, split=split, engine=engine, force=force, chunk_size=chunk_size)
    adapter = make_adapter(
        kind,
        AdapterOptions(source=source, mapping=mapping or {}, config=config,
                       has_image_root=root is not None),
    )
    opts = replace(opts, min_score_gap=min_score_gap,
                   eval_set=getattr(adapter, "eval_set", False))
    record = {"kind": kind, "source": adapter.source, "mapping": mapping or {},
              "config": config, "split": split, "image_root": str(root) if root else None,
              "max_pixels": max_pixels, "max_image_bytes": max_image_bytes,
              "revision": revision, "data_dir": data_dir, "min_score_gap": min_score_gap}
    stage_run = StageRun("ingest", out, record,
                         input_fingerprints(files, config, split, revision, data_dir),
                         force=force, engine=engine.describe())
    with stage_run:
        if stage_run.skipped:
            return stage_run.manifest
        stage_run.open()
        t0 = time.perf_counter()
        if runs_in_workers(adapter, files):  # part by part, the same on every engine
            with bar(f"ingest {kind}", ReadProgress.of(files).total, unit="bytes") as b:
                ingest_in_workers(stage_run, files, adapter, opts, engine, chunk_size, b)
        else:
            read = ReadProgress.of(files)
            with bar(f"ingest {kind}", read.total,
                     unit="bytes" if read.total is not None else "rows") as b:
                _ingest_on_driver(stage_run, files, adapter, opts, engine, chunk_size, b,
                                  config, split, read, revision, data_dir)
        stage_run.steps["ingest"] = time.perf_counter() - t0
        stage_run.extra.update(adapter.extra_manifest())
    return stage_run.manifest


def _ingest_on_driver(run: StageRun, inputs: list[str], adapter: Any, opts: IngestOptions,
                      engine: Engine, chunk_size: int, progress: Any, config: str | None,
                      split: str, read: ReadProgress, revision: str | None = None,
                      data_dir: str | None = None) -> None:
    """The adapter reads the input here; the engine validates chunks; rows written here.
    The bar follows the input's bytes read (`read`) when its size is known, else rows."""
    seen: set[int] = set()
    records = lambda: iter_records(inputs, config=config, split=split,  # noqa: E731
                                   revision=revision, data_dir=data_dir, progress=read)
    work: Iterator[tuple[Any, ...]] = ((chunk, adapter.source, opts)
                                       for chunk in chunked(adapter.pairs(records), chunk_size))
    work, threads = peek_threads(work, opts)
    for res in engine.map(build_chunk, work, releases_gil=threads):
        run.add_in(res.rows_in)
        kept, dup_mask = split_duplicate_ids(res.kept, seen)
        if dup_mask is not None:
            dups = res.kept.filter(dup_mask)
            n = dups.num_rows
            run.reject(dups, ["duplicate_pair_id"] * n,
                       [f"same source, id and content as {p}" for p in
                        dups["pair_id"].to_pylist()])
            res.kept_consumed -= n
        run.keep(kept, consumed=res.kept_consumed)
        run.reject(res.rejected, res.reasons, res.details, consumed=res.rejected_consumed)
        if read.total is None:
            progress.advance(res.rows_in)
        else:
            progress.set(read.done, rows=res.rows_in)


def ingest(kind: str, inputs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str],
           *, engine: Engine | None = None, force: bool = False, **options: Any) -> Manifest:
    """`run` with IngestConfig(kind, **options)."""
    return run(inputs, out, IngestConfig(kind, **options), engine=engine, force=force)


register_stage("ingest", 10, run=run, config=IngestConfig)
