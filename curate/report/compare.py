"""`curate report --compare RUN_A RUN_B`: what changed between two runs of a pipeline.

Counts come from the manifests (rows per stage and reject reason, A against B), the
config differences from the manifests' resolved configs, and the rows that one run
kept and the other rejected from a join on `pair_id` that reads only the id and
reject columns; full rows are read only for the few examples shown.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from curate import dataset as D
from curate.report.collect import Card, card
from curate.report.pipeline import Run, Step, load_run, lookup
from curate.report.thumbs import Thumbnails

REJECT_KEYS = ["pair_id", "reject_stage", "reject_reason"]
MISSING = "(absent)"


@dataclass
class StageDelta:
    stage: str
    rows_in: tuple[int | None, int | None]
    kept: tuple[int | None, int | None]
    by_reason: dict[str, tuple[int, int]]  # reason -> (count in A, count in B)

    @property
    def rejected(self) -> tuple[int, int]:
        return (sum(a for a, _ in self.by_reason.values()),
                sum(b for _, b in self.by_reason.values()))


@dataclass
class ConfigDiff:
    stage: str
    folder: str  # "name" or "name A / name B" when the folder names differ
    changes: list[tuple[str, Any, Any]]  # (dotted key, value in A, value in B)


@dataclass
class Flipped:
    """Rows the final folders of `kept_in` keep and the other run rejects."""

    kept_in: str  # "A" or "B"
    total: int
    by_reason: dict[tuple[str, str], int]  # (stage, reason) in the rejecting run -> rows
    cards: list[Card]


@dataclass
class Comparison:
    names: tuple[str, str]
    stages: list[StageDelta]
    configs: list[ConfigDiff]
    flipped: list[Flipped]
    final_kept: tuple[int, int]
    notes: list[str] = field(default_factory=list)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as {"a.b.c": leaf}; lists stay leaves."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix or "(config)": value}


def _stage_counts(steps: list[Step]) -> tuple[int, int, Counter[str]]:
    reasons: Counter[str] = Counter()
    for s in steps:
        reasons.update({str(k): int(v) for k, v in
                        (s.manifest.get("rejected_by_reason") or {}).items()})
    return (sum(s.manifest.rows_in or 0 for s in steps),
            sum(s.count(D.KEPT) for s in steps), reasons)


def _ordered_stages(a: Run, b: Run) -> list[str]:
    order = [name for name, _ in a.stages()]
    return order + [name for name, _ in b.stages() if name not in order]


def stage_deltas(a: Run, b: Run) -> list[StageDelta]:
    ga, gb = dict(a.stages()), dict(b.stages())
    out = []
    for name in _ordered_stages(a, b):
        ca = _stage_counts(ga[name]) if name in ga else None
        cb = _stage_counts(gb[name]) if name in gb else None
        reasons = sorted(set(ca[2] if ca else ()) | set(cb[2] if cb else ()))
        out.append(StageDelta(
            name, (ca[0] if ca else None, cb[0] if cb else None),
            (ca[1] if ca else None, cb[1] if cb else None),
            {r: ((ca[2][r] if ca else 0), (cb[2][r] if cb else 0)) for r in reasons}))
    return out


def _pair_folders(sa: list[Step], sb: list[Step]) -> list[tuple[Step | None, Step | None]]:
    """Folders of one stage matched by name, the rest by position."""
    names_b = {s.name: s for s in sb}
    pairs: list[tuple[Step | None, Step | None]] = []
    rest_a = []
    for s in sa:
        if s.name in names_b:
            pairs.append((s, names_b.pop(s.name)))
        else:
            rest_a.append(s)
    rest_b = [s for s in sb if s.name in names_b]
    for i in range(max(len(rest_a), len(rest_b))):
        pairs.append((rest_a[i] if i < len(rest_a) else None,
                      rest_b[i] if i < len(rest_b) else None))
    return pairs


def config_diffs(a: Run, b: Run) -> list[ConfigDiff]:
    ga, gb = dict(a.stages()), dict(b.stages())
    out = []
    for name in _ordered_stages(a, b):
        for x, y in _pair_folders(ga.get(name, []), gb.get(name, [])):
            fa = flatten(x.manifest.config) if x else {}
            fb = flatten(y.manifest.config) if y else {}
            changes = [(k, fa.get(k, MISSING), fb.get(k, MISSING))
                       for k in sorted(set(fa) | set(fb))
                       if fa.get(k, MISSING) != fb.get(k, MISSING)]
            if changes:
                if x is not None and y is not None and x.name != y.name:
                    label = f"{x.name} / {y.name}"
                else:
                    step = x or y
                    assert step is not None  # _pair_folders pairs a step with None at worst
                    label = step.name
                out.append(ConfigDiff(name, label, changes))
    return out


def _final_kept_ids(run: Run) -> pa.Array:
    ids = [s.dataset.read(D.KEPT, columns=["pair_id"])["pair_id"] for s in run.finals
           if s.dataset.files(D.KEPT)]
    chunks = [c for col in ids for c in col.chunks]
    return pa.chunked_array(chunks, pa.string()).combine_chunks() if chunks else pa.array(
        [], pa.string())


def _rejected_keys(run: Run) -> list[tuple[Step, pa.Table]]:
    out = []
    for s in run.lineage:
        if s.dataset.files(D.REJECTED) and set(REJECT_KEYS) <= set(s.columns(D.REJECTED)):
            out.append((s, s.dataset.read(D.REJECTED, columns=REJECT_KEYS)))
    return out


def flipped_rows(kept: Run, other: Run, label: str, thumbs: Thumbnails,
                 examples: int) -> Flipped:
    """Rows in `kept`'s final folders that `other` rejected, counted by `other`'s reason,
    with up to `examples` rows per reason shown (as `other` rejected them)."""
    ids = _final_kept_ids(kept)
    by_reason: Counter[tuple[str, str]] = Counter()
    cards: list[Card] = []
    for step, keys in _rejected_keys(other):
        hit = keys.filter(pc.is_in(keys["pair_id"], value_set=ids))
        if not hit.num_rows:
            continue
        reasons = hit["reject_reason"].to_pylist()
        by_reason.update((step.stage, str(r)) for r in reasons)
        first: dict[str, list[str]] = {}
        for pid, r in zip(hit["pair_id"].to_pylist(), reasons, strict=True):
            if len(first.setdefault(str(r), [])) < examples:
                first[str(r)].append(pid)
        wanted = [p for ps in first.values() for p in ps]
        rows = {r["pair_id"]: r for r in lookup(step, D.REJECTED, wanted)}
        cards += [card(rows[p], thumbs, step) for p in wanted if p in rows]
    return Flipped(label, sum(by_reason.values()),
                   dict(sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0]))), cards)


def compare(run_a: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
            run_b: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
            *, examples: int = 3) -> Comparison:
    """Compare two runs (each a folder of dataset folders, or a list of dataset folders)."""
    def paths(x: Any) -> list[Any]:
        return [x] if isinstance(x, str | os.PathLike) else list(x)

    pa_, pb = paths(run_a), paths(run_b)
    a, b = load_run(pa_), load_run(pb)
    thumbs = Thumbnails()
    notes = []
    if [n for n, _ in a.stages()] != [n for n, _ in b.stages()]:
        notes.append("the two runs have different stages: "
                     f"A {[n for n, _ in a.stages()]}, B {[n for n, _ in b.stages()]}")
    kept_a, kept_b = _final_kept_ids(a), _final_kept_ids(b)
    return Comparison(
        names=(", ".join(map(str, pa_)), ", ".join(map(str, pb))),
        stages=stage_deltas(a, b),
        configs=config_diffs(a, b),
        flipped=[flipped_rows(a, b, "A", thumbs, examples),
                 flipped_rows(b, a, "B", thumbs, examples)],
        final_kept=(len(kept_a), len(kept_b)),
        notes=notes,
    )
