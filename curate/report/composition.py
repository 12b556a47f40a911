"""What the trainer will get: the final folder's rows by split, modality, source and category.

Read from light columns only (split, stage, source, category, the images' width and
height as nested parquet columns, never their bytes) and from the shard manifest's
per-shard facts; the response texts are read one file at a time to measure lengths.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate import dataset as D
from curate.report.pipeline import Run, Step

IMAGE_SIZE_COLUMNS = ["images.list.element.width", "images.list.element.height"]
MIX_COLUMNS = ["split", "stage", "source", "category"]


@dataclass
class ShardTokens:
    split: str
    shards: int
    rows: int
    tokens_min: float
    tokens_median: float
    tokens_max: float
    tokens_total: float


@dataclass
class Composition:
    folders: list[str]
    rows: int
    mix: dict[tuple[str, str, str, str], int]  # (split, modality, source, category) -> rows
    stages: dict[tuple[str, str, str], int]  # (split, stage tag, modality) -> rows
    shard_tokens: list[ShardTokens]
    image_sides: np.ndarray  # longest side of each image
    image_counts: Counter[int]  # images per row -> rows
    chosen_len: np.ndarray
    rejected_len: np.ndarray
    notes: list[str] = field(default_factory=list)

    @property
    def chosen_longer(self) -> float | None:
        """Share of pairs whose chosen response is longer than the rejected one."""
        if not self.chosen_len.size or self.chosen_len.size != self.rejected_len.size:
            return None
        return float(np.mean(self.chosen_len > self.rejected_len))


def final_steps(run: Run) -> list[Step]:
    """The folders the trainer reads: the shard stage's, else the run's last folders."""
    shards = [s for s in run.lineage if s.stage == "shard"]
    return shards[-1:] if shards else run.finals


def _column(table: pa.Table, name: str, n: int, default: str) -> list[str]:
    if name not in table.column_names:
        return [default] * n
    return [default if v is None else str(v) for v in table[name].to_pylist()]


def _read_file(step: Step, f: Any, columns: list[str]) -> pa.Table:
    pf = step.dataset.parquet_file(f)
    names = set(pf.schema_arrow.names)
    return pf.read(columns=[c for c in columns if c.split(".", 1)[0] in names])


def _shard_tokens(steps: list[Step]) -> tuple[list[ShardTokens], list[str]]:
    per_split: dict[str, list[tuple[int, float]]] = {}
    notes = []
    for s in steps:
        shards = [x for x in s.manifest.get("shards") or [] if isinstance(x, dict)]
        if shards:
            for x in shards:
                per_split.setdefault(str(x.get("split", "?")), []).append(
                    (int(x.get("rows") or 0), float(x.get("est_tokens") or 0)))
            continue
        if "est_tokens" not in s.columns(D.KEPT):
            continue
        notes.append(f"{s.name}: tokens per file summed from its est_tokens column")
        for f in s.dataset.files(D.KEPT):
            t = _read_file(s, f, ["est_tokens", "split"])
            split = _column(t, "split", t.num_rows, "-")[0] if t.num_rows else "-"
            per_split.setdefault(split, []).append(
                (t.num_rows, float(pc.sum(t["est_tokens"]).as_py() or 0)))
    out = []
    for split, vals in sorted(per_split.items()):
        tok = np.array([v for _, v in vals])
        out.append(ShardTokens(split, len(vals), sum(n for n, _ in vals), float(tok.min()),
                               float(np.median(tok)), float(tok.max()), float(tok.sum())))
    return out, notes


def _lengths(step: Step, f: Any) -> tuple[np.ndarray, np.ndarray]:
    t = _read_file(step, f, ["chosen", "rejected"])
    out = []
    for col in ("chosen", "rejected"):
        if col in t.column_names and pa.types.is_string(t.schema.field(col).type):
            out.append(pc.utf8_length(t[col]).to_numpy(zero_copy_only=False).astype(float))
        else:
            out.append(np.full(t.num_rows, np.nan))
    return out[0], out[1]


def collect_composition(run: Run) -> Composition | None:
    """The final training mix, or None when the run has no folder with kept rows."""
    steps = [s for s in final_steps(run) if s.dataset.files(D.KEPT)]
    if not steps:
        return None
    mix: Counter[tuple[str, str, str, str]] = Counter()
    stages: Counter[tuple[str, str, str]] = Counter()
    sides: list[np.ndarray] = []
    per_row: Counter[int] = Counter()
    chosen: list[np.ndarray] = []
    rejected: list[np.ndarray] = []
    for s in steps:
        for f in s.dataset.files(D.KEPT):
            t = _read_file(s, f, MIX_COLUMNS + IMAGE_SIZE_COLUMNS)
            n = t.num_rows
            if "images" in t.column_names:
                counts = pc.fill_null(pc.list_value_length(t["images"]), 0).to_numpy(
                    zero_copy_only=False)
                flat = pc.list_flatten(t["images"])
                w = pc.struct_field(flat, "width").to_numpy(zero_copy_only=False)
                h = pc.struct_field(flat, "height").to_numpy(zero_copy_only=False)
                side = np.fmax(w.astype(float), h.astype(float))
                sides.append(side[~np.isnan(side)])
            else:
                counts = np.zeros(n, dtype=int)
            per_row.update(int(c) for c in counts)
            modality = ["multimodal" if c else "text" for c in counts]
            split = _column(t, "split", n, "-")
            source = _column(t, "source", n, "?")
            category = _column(t, "category", n, "-")
            tag = _column(t, "stage", n, "-")
            mix.update(zip(split, modality, source, category, strict=True))
            stages.update(zip(split, tag, modality, strict=True))
            c, r = _lengths(s, f)
            chosen.append(c)
            rejected.append(r)
    tokens, notes = _shard_tokens(steps)
    cat = np.concatenate
    return Composition(
        folders=[s.name for s in steps], rows=sum(mix.values()),
        mix=dict(sorted(mix.items(), key=lambda kv: (kv[0][0], -kv[1], kv[0]))),
        stages=dict(sorted(stages.items())), shard_tokens=tokens,
        image_sides=cat(sides) if sides else np.array([]), image_counts=per_row,
        chosen_len=cat(chosen) if chosen else np.array([]),
        rejected_len=cat(rejected) if rejected else np.array([]), notes=notes)


def summary(values: np.ndarray) -> dict[str, Any]:
    """n, min, median, mean and max of the finite values (None when there are none)."""
    v = values[np.isfinite(values)]
    if not v.size:
        return {"n": 0, "min": None, "median": None, "mean": None, "max": None}
    return {"n": int(v.size), "min": float(v.min()), "median": float(np.median(v)),
            "mean": float(v.mean()), "max": float(v.max())}
