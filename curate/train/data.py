"""Where training pairs come from: dataset folders, parquet shards or an Arrow table.

Rows stay in Arrow (images as bytes) and become Python dicts one at a time, so a
large image dataset is not copied into Python objects up front.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

EVAL_SPLITS = ("eval", "test", "validation")


def load_pairs(data: Any) -> pa.Table:
    """A table of canonical pairs from a dataset folder (its kept/ rows), a folder of
    parquet shards, a parquet file, a list of those, or a table."""
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if isinstance(data, (list, tuple)):
        tables = [load_pairs(d) for d in data]
        return pa.concat_tables(tables, promote_options="permissive") if tables else _empty()
    from curate.dataset import MANIFEST, Dataset

    path = Path(os.fspath(data))
    if path.is_file():
        import pyarrow.parquet as pq

        return pq.read_table(path)
    if (path / MANIFEST).is_file():
        return Dataset.open(path).read()
    if path.is_dir():
        files = sorted(path.rglob("*.parquet"))
        if not files:
            raise FileNotFoundError(f"{path}: no dataset manifest and no parquet files")
        return load_pairs(files)
    raise FileNotFoundError(f"{path}: no such dataset folder or file")


def _empty() -> pa.Table:
    from curate.schema import empty_table

    return empty_table()


def split_pairs(table: pa.Table, eval_fraction: float, seed: int = 0
                ) -> tuple[pa.Table, pa.Table]:
    """(train, eval): a `split` column decides if present; otherwise a seeded random
    `eval_fraction` of the rows (ordered by pair_id first, so input order does not matter)."""
    if "split" in table.column_names:
        is_eval = pc.is_in(pc.utf8_lower(table["split"].cast(pa.string())),
                           pa.array(EVAL_SPLITS)).fill_null(False)
        if pc.any(is_eval).as_py():
            return table.filter(pc.invert(is_eval)), table.filter(is_eval)
    if eval_fraction <= 0:
        return table, table.slice(0, 0)
    order = np.argsort(np.asarray(table["pair_id"].to_pylist(), dtype=object), kind="stable")
    perm = order[np.random.default_rng(seed).permutation(len(order))]
    n_eval = int(round(eval_fraction * len(order)))
    eval_idx, train_idx = np.sort(perm[:n_eval]), np.sort(perm[n_eval:])
    return table.take(train_idx), table.take(eval_idx)


def has_images(table: pa.Table) -> np.ndarray:
    if "images" not in table.column_names:
        return np.zeros(len(table), dtype=bool)
    return np.asarray(pc.fill_null(pc.list_value_length(table["images"]), 0)
                      .to_numpy(zero_copy_only=False)) > 0


def stage_indices(table: pa.Table, which: str) -> np.ndarray:
    """Rows a stage trains on: `multimodal`, `text` or `all`. A `stage` column (written by
    `curate shard`) decides when present, else whether the pair has images."""
    n = len(table)
    if which == "all":
        return np.arange(n)
    if "stage" in table.column_names:
        col = np.asarray(table["stage"].cast(pa.string()).fill_null("").to_pylist())
        multimodal = col == "multimodal"
    else:
        multimodal = has_images(table)
    return np.flatnonzero(multimodal if which == "multimodal" else ~multimodal)


def margins(table: pa.Table, column: str | None, scale: float = 1.0) -> np.ndarray:
    """Per-pair margin for the loss: a numeric column, or `score_gap` (chosen_score -
    rejected_score); nulls count as 0."""
    n = len(table)
    if column is None:
        return np.zeros(n, dtype=np.float32)
    if column == "score_gap":
        gap = pc.subtract(table["chosen_score"], table["rejected_score"])
    elif column in table.column_names:
        gap = table[column]
    else:
        raise ValueError(f"margin column {column!r} is not in the data "
                         f"(columns: {', '.join(table.column_names)})")
    values = np.asarray(pc.fill_null(gap.cast(pa.float64()), 0.0).to_numpy(zero_copy_only=False))
    return (values * scale).astype(np.float32)


class PairRows:
    """Random access to rows of a table as dicts, without converting the whole table."""

    COLUMNS = ("pair_id", "source", "prompt", "chosen", "rejected", "images")

    def __init__(self, table: pa.Table) -> None:
        cols = [c for c in self.COLUMNS if c in table.column_names]
        self.table = table.select(cols).combine_chunks()

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = self.table.slice(int(i), 1).to_pylist()[0]
        row.setdefault("images", None)
        row.setdefault("source", "")
        return row

    def sources(self) -> list[str]:
        if "source" not in self.table.column_names:
            return [""] * len(self)
        return [s or "" for s in self.table["source"].to_pylist()]


def approx_lengths(table: pa.Table) -> np.ndarray:
    """Characters in a pair's prompt plus its longer response: to batch similar lengths."""
    if len(table) == 0:
        return np.zeros(0, dtype=np.int64)
    prompt = pc.list_flatten(table["prompt"])
    sizes = pc.utf8_length(pc.struct_field(prompt, "content")).fill_null(0)
    offsets = table["prompt"].combine_chunks().offsets.to_numpy()
    csum = np.concatenate([[0], np.cumsum(sizes.to_numpy(zero_copy_only=False))])
    prompt_len = csum[offsets[1:]] - csum[offsets[:-1]]
    resp = np.maximum(pc.utf8_length(table["chosen"]).fill_null(0).to_numpy(zero_copy_only=False),
                      pc.utf8_length(table["rejected"]).fill_null(0)
                      .to_numpy(zero_copy_only=False))
    return (prompt_len + resp).astype(np.int64)
