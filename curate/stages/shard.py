"""`curate shard`: deterministic, length-balanced parquet shards with `split` and `stage` tags.

The output is an ordinary dataset folder whose `kept/` holds the shards:

    OUT/kept/train-00000-of-00004.parquet ... train-00003-of-00004.parquet
    OUT/kept/eval-00000-of-00001.parquet
    OUT/rejected/part-00000.parquet      (empty: sharding rejects nothing)
    OUT/manifest.json                    (each shard's split, rows, est. tokens, sha256)
    OUT/trl/..., OUT/llamafactory/...    (with --format; see curate.export)
    OUT/README.md                        (the dataset card: configs `kept` with its train
                                          and eval splits, `rejected`, and each export's)

Why kept/ holds both splits: conservation stays the plain contract (rows in = kept
rows; train + eval shards are all kept), `Dataset.open(OUT)` and every downstream
stage read it as any other folder, `curate train OUT` finds the eval rows by the
`split` column, and `datasets.load_dataset("parquet", data_files={"train":
"OUT/kept/train-*.parquet", "eval": "OUT/kept/eval-*.parquet"})` reads the splits as is.

How rows are placed (a pure function of the pair ids, the seed and the config, not
of the input order):
1. shuffle: rows ordered by `pair_id`, then permuted by `numpy.random.default_rng(seed)`;
2. eval split: within each source, the first round(F x n_source) rows of the shuffle;
3. shards: within a split, rows sorted by estimated tokens (longest first) are dealt
   to the shards in snake order (0..k-1, k-1..0, ...), so every shard gets one row
   of each length band: row counts within one, token totals close;
4. inside a shard, rows keep their shuffled order.
Writing is a shuffle on the engine's workers (`curate.stages.shard_shuffle`): map tasks
cut each input fragment into one block per shard, reduce tasks order and write one shard
each; the local engine keeps the blocks in a spill folder beside the output, Ray in its
object store, and both write the same files. Memory holds what the running tasks hold
(a fragment's rows, a shard's rows), never the whole input.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate import dataset as D
from curate.export.base import ExportOptions, make_exporters
from curate.manifest import Manifest
from curate.pipeline.entry import RUN_ONLY, configured, recorded
from curate.pipeline.runner import StageRun, input_record, register_stage
from curate.progress import bar
from curate.splits import shuffle_rank
from curate.stages.shard_shuffle import SHARD_COLUMNS, SHARD_FIELDS, SHARD_ROW_GROUP

if TYPE_CHECKING:
    from curate.engine.protocol import Engine
    from curate.export.base import Exporter
    from curate.pipeline.fragment_writes import WriteTarget

SPLITS = ("train", "eval")
# the key pass reads image sizes only, never the image bytes (nested parquet projection)
KEY_COLUMNS = ["pair_id", "source", "prompt", "chosen", "rejected",
               "images.list.element.width", "images.list.element.height"]
CHARS_PER_TOKEN = 4
PIXELS_PER_IMAGE_TOKEN = 28 * 28  # Qwen2-VL / Qwen2.5-VL: a 14px patch, 2x2 merged
IMAGE_TOKENS_MIN, IMAGE_TOKENS_MAX = 4, 16384


@dataclass(frozen=True)
class ShardConfig:
    """`rows_per_shard` (at most that many rows a shard) or `shards` (train shard count)."""

    rows_per_shard: int | None = None
    shards: int | None = None
    eval_fraction: float = 0.0
    seed: int = 0
    formats: tuple[str, ...] = ()
    only: str | None = None  # exports: only the text or only the vision rows
    # exports (mpo): absolute paths of the committed folder (None: yes for a local output)
    absolute_paths: bool | None = None
    batch_size: int = field(default=512, metadata=RUN_ONLY)  # rows per task

    def __post_init__(self) -> None:
        if self.rows_per_shard is not None and self.shards is not None:
            raise ValueError("give --rows-per-shard or --shards, not both")
        if self.rows_per_shard is None and self.shards is None:
            object.__setattr__(self, "rows_per_shard", D.DEFAULT_ROWS_PER_FILE)
        if (self.rows_per_shard or 1) < 1 or (self.shards or 1) < 1:
            raise ValueError("--rows-per-shard and --shards must be at least 1")
        if not 0 <= self.eval_fraction < 1:
            raise ValueError("--eval-fraction must be in [0, 1)")
        from curate.export import get_exporter
        from curate.export.base import ExportOptions

        for f in self.formats:
            get_exporter(f)
        ExportOptions(only=self.only)  # validates --only
        if self.only is not None and not self.formats:
            raise ValueError("--only chooses the rows of the exports: give a --format too")
        object.__setattr__(self, "formats", tuple(sorted(set(self.formats))))


# -- per batch (pure) ------------------------------------------------------------------
def _list_sum(lists: pa.Array, values: pa.Array) -> np.ndarray:
    """Per-row sum of `values`, one value per element of the list array `lists`."""
    n = len(lists)
    if len(values) == 0:
        return np.zeros(n, dtype=np.int64)
    parents = pc.list_parent_indices(lists).to_numpy()
    vals = np.asarray(pc.fill_null(values, 0).to_numpy(zero_copy_only=False), dtype=np.int64)
    return np.bincount(parents, weights=vals, minlength=n).astype(np.int64)


def estimate_tokens(batch: pa.RecordBatch) -> np.ndarray:
    """Tokens the trainer processes for a pair, roughly: both sequences (prompt + chosen,
    prompt + rejected) at 4 characters a token, plus each image's tokens in both (one per
    28x28 pixels, clamped to [4, 16384], as Qwen2.5-VL's processor does by default)."""
    def chars(col: pa.Array) -> np.ndarray:
        return np.asarray(pc.fill_null(pc.utf8_length(col), 0).to_numpy(zero_copy_only=False),
                          dtype=np.int64)

    prompt = batch.column("prompt")
    prompt_chars = _list_sum(prompt, pc.utf8_length(pc.list_flatten(prompt).field("content")))
    text = 2 * prompt_chars + chars(batch.column("chosen")) + chars(batch.column("rejected"))
    images = batch.column("images")
    flat = pc.list_flatten(images)
    pixels = pc.multiply(flat.field("width").cast(pa.int64()),
                         flat.field("height").cast(pa.int64()))
    per_image = pc.max_element_wise(pc.min_element_wise(
        pc.divide(pc.fill_null(pixels, 0), PIXELS_PER_IMAGE_TOKEN), IMAGE_TOKENS_MAX),
        IMAGE_TOKENS_MIN)
    return -(-text // CHARS_PER_TOKEN) + 2 * _list_sum(images, per_image)


def shard_keys(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The compact keys the plan needs: pair_id, source, est_tokens, multimodal."""
    n_images = pc.fill_null(pc.list_value_length(batch.column("images")), 0)
    return pa.RecordBatch.from_arrays(
        [batch.column("pair_id"), batch.column("source"), pa.array(estimate_tokens(batch)),
         pc.greater(n_images, 0)],
        names=["pair_id", "source", "est_tokens", "multimodal"],
    )


# -- global step over the keys -----------------------------------------------------------
@dataclass
class ShardPlan:
    """Where every input row goes, in input order."""

    is_eval: np.ndarray  # bool
    shard: np.ndarray  # index into `names`
    position: np.ndarray  # row position inside its shard
    names: list[str]
    splits: list[str]  # split of each shard
    est_tokens: np.ndarray
    multimodal: np.ndarray

    def rows(self, shard: int) -> np.ndarray:
        """Input indices of a shard's rows, in the order they are written."""
        idx = np.flatnonzero(self.shard == shard)
        return idx[np.argsort(self.position[idx], kind="stable")]


def stratified_eval(sources: Sequence[str], rank: np.ndarray, fraction: float) -> np.ndarray:
    """round(fraction x n) rows of each source (half up), the first in shuffle order."""
    is_eval = np.zeros(len(rank), dtype=bool)
    if fraction <= 0:
        return is_eval
    src = np.asarray(sources, dtype=object)
    for s in sorted(set(sources)):
        idx = np.flatnonzero(src == s)
        k = int(math.floor(fraction * len(idx) + 0.5))
        is_eval[idx[np.argsort(rank[idx], kind="stable")[:k]]] = True
    return is_eval


def snake_assign(est_tokens: np.ndarray, rank: np.ndarray, k: int) -> np.ndarray:
    """Shard of each row: longest first, dealt 0..k-1, k-1..0, ... (ties by shuffle rank)."""
    order = np.lexsort((rank, -est_tokens))
    i = np.arange(len(order))
    block, j = i // k, i % k
    shard = np.empty(len(order), dtype=np.int64)
    shard[order] = np.where(block % 2 == 0, j, k - 1 - j)
    return shard


def plan_shards(keys: pa.Table, cfg: ShardConfig) -> ShardPlan:
    n = keys.num_rows
    rank = shuffle_rank(keys["pair_id"], cfg.seed)
    est = np.asarray(keys["est_tokens"].to_numpy(), dtype=np.int64)
    is_eval = stratified_eval(keys["source"].to_pylist(), rank, cfg.eval_fraction)
    n_train = int(n - is_eval.sum())
    per_shard = cfg.rows_per_shard or max(1, math.ceil(n_train / (cfg.shards or 1)))
    shard = np.zeros(n, dtype=np.int64)
    position = np.zeros(n, dtype=np.int64)
    names: list[str] = []
    splits: list[str] = []
    for split, mask in (("train", ~is_eval), ("eval", is_eval)):
        idx = np.flatnonzero(mask)
        if len(idx) == 0 and split == "eval":
            continue
        if split == "train" and cfg.shards is not None:
            k = max(1, min(cfg.shards, len(idx)))
        else:
            k = max(1, math.ceil(len(idx) / per_shard))
        local = snake_assign(est[idx], rank[idx], k)
        shard[idx] = local + len(names)
        for s in range(k):  # position inside a shard: shuffled order
            members = idx[local == s]
            position[members[np.argsort(rank[members], kind="stable")]] = np.arange(len(members))
        names += [f"{split}-{s:05d}-of-{k:05d}.parquet" for s in range(k)]
        splits += [split] * k
    return ShardPlan(is_eval, shard, position, names, splits, est,
                     np.asarray(keys["multimodal"].to_numpy(zero_copy_only=False), dtype=bool))


# -- writing -------------------------------------------------------------------------
def shard_record(plan: ShardPlan, s: int, rows: int, sha256: str) -> dict[str, Any]:
    """The manifest's entry for shard `s`."""
    idx = np.flatnonzero(plan.shard == s)
    return {"file": f"{D.KEPT}/{plan.names[s]}", "split": plan.splits[s], "rows": rows,
            "multimodal_rows": int(plan.multimodal[idx].sum()),
            "est_tokens": int(plan.est_tokens[idx].sum()), "sha256": sha256}


def split_summary(keys: pa.Table, plan: ShardPlan) -> dict[str, Any]:
    """Rows by split, and by split and source (the stratification, for the manifest)."""
    sources = keys["source"].to_pylist()
    out: dict[str, Any] = {}
    for split in SPLITS:
        mask = plan.is_eval if split == "eval" else ~plan.is_eval
        by_source = Counter(s for s, m in zip(sources, mask.tolist(), strict=True) if m)
        out[split] = {"rows": int(mask.sum()), "multimodal_rows": int(plan.multimodal[mask].sum()),
                      "by_source": dict(sorted(by_source.items()))}
    return out


def run(inputs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str],
        cfg: ShardConfig, *, engine: Engine | None = None, force: bool = False) -> Manifest:
    """Shard the kept rows of `inputs` into `out` (see the module docstring); returns the
    manifest, whose `shards` lists each file's split, rows, est. tokens and sha256."""
    from curate.engine import get_engine

    engine = engine or get_engine("local", workers=1)
    local = not D.is_uri(out)
    absolute_paths = cfg.absolute_paths
    if absolute_paths and not local:
        raise ValueError(f"--absolute-paths: {D.redact(str(out))} is not a local folder; "
                         "use --no-absolute-paths (paths relative to the export's folder)")
    absolute = (local if absolute_paths is None else absolute_paths) and "mpo" in cfg.formats
    cfg = replace(cfg, absolute_paths=absolute)
    options = ExportOptions(cfg.only, Path(out).resolve() if absolute else None)
    datasets = [D.Dataset.open(p) for p in inputs]
    config = recorded(cfg)
    if options.root is not None and "mpo" in cfg.formats:  # the paths written depend on it
        config["export_root"] = str(options.root)
    stage_run = StageRun("shard", out, config, [input_record(d) for d in datasets],
                         force=force, engine=engine.describe())
    with stage_run:
        if stage_run.skipped:
            return stage_run.manifest
        total = sum(d.count() for d in datasets)
        t = time.perf_counter()
        parts = []
        with bar("shard: keys", total) as b:
            batches = (batch for d in datasets
                       for batch in d.iter_batches(D.KEPT, KEY_COLUMNS, cfg.batch_size))
            for res in engine.map(shard_keys, batches):
                parts.append(res)
                b.advance(res.num_rows)
        keys = pa.Table.from_batches(parts, schema=shard_keys_schema())
        plan = plan_shards(keys, cfg)
        stage_run.steps["plan"] = time.perf_counter() - t
        schema = D.unified_schema(datasets)
        for name in SHARD_COLUMNS:
            if schema.get_field_index(name) >= 0:
                schema = schema.remove(schema.get_field_index(name))
        schema = pa.schema(list(schema) + SHARD_FIELDS)
        stage_run.extra["splits"] = split_summary(keys, plan)
        stage_run.extra["data_files"] = {s: f"{D.KEPT}/{s}-*.parquet"
                                         for s in sorted(set(plan.splits))}
        t = time.perf_counter()
        _write_shards(stage_run, datasets, plan, schema, cfg, options, engine, total)
        stage_run.steps["shuffle"] = time.perf_counter() - t
    return stage_run.manifest


def _write_shards(run: StageRun, datasets: list[D.Dataset], plan: ShardPlan,
                  schema: pa.Schema, cfg: ShardConfig, options: ExportOptions, engine: Engine,
                  total: int) -> None:
    """The shuffle as map and reduce tasks on the engine's workers (`shard_shuffle`); each
    shard, once written, goes to the export formats on the driver (read back from its
    file while the workers write the next ones), in shard order."""
    from curate.stages.shard_shuffle import shuffle_into_shards

    run.open(schema)
    exporters = make_exporters(run.folder, cfg.formats, has_images=bool(plan.multimodal.any()),
                               options=options) if cfg.formats else []
    target = run.worker_target()
    records = []
    try:
        shards = shuffle_into_shards(run, datasets, plan, schema, engine, cfg.batch_size)
        with bar("shard: shuffle", total) as b, contextlib.closing(shards):
            for s, rows, sha, _ in shards:
                records.append(shard_record(plan, s, rows, sha))
                if exporters:
                    _export(exporters, target, plan.splits[s], plan.names[s])
                b.advance(rows)
    except BaseException:
        for e in exporters:
            e.abort()
        raise
    run.extra["shards"] = records
    run.extra["exports"] = {e.name: e.close() for e in exporters}


def _export(exporters: list[Exporter], target: WriteTarget, split: str, name: str) -> None:
    """Hand the written shard `name` to every exporter, read back row group by row group
    (a shard of photos is hundreds of MB; the exporters hold one row group's records)."""
    path = f"{target.root}/{D.KEPT}/{name}"
    fs = target.filesystem
    with (pa.OSFile(path) if fs is None else fs.open_input_file(path)) as f:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=SHARD_ROW_GROUP):
            table = pa.Table.from_batches([batch])
            for e in exporters:
                e.write(split, name, table)
    for e in exporters:
        e.end_shard(split, name)


def shard_keys_schema() -> pa.Schema:
    return pa.schema([("pair_id", pa.string()), ("source", pa.string()),
                      ("est_tokens", pa.int64()), ("multimodal", pa.bool_())])


def shard(inputs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *,
          config: ShardConfig | None = None, engine: Engine | None = None,
          force: bool = False, **options: Any) -> Manifest:
    """`run` with `config` (default: ShardConfig()) and ShardConfig's fields as keywords."""
    return run(inputs, out, configured(ShardConfig, config, options), engine=engine,
               force=force)


register_stage("shard", 60, run=run, config=ShardConfig)
