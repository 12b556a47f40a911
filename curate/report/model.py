"""The model section's data: benchmark results, training curves and the reward filter's facts.

A run's model files are not dataset folders: the trainer writes `<dir>/metrics.json`
(with a `history` of eval steps) and `curate eval` writes a JSON file of benchmark
reports (`{"<benchmark>": {"benchmark": ..., "overall": {...}}}`). They are found
beside the run's dataset folders (the demo's `07-rm/` and `08-eval.json`), or named
explicitly. Everything here reads those files as they are; a key that is absent
leaves its row or chart out, never an error.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curate.report.pipeline import Run

# The reward stage's filter facts, as (label, manifest keys tried in order) under the
# manifest's `reward` section (or the manifest's top level).
FILTER_FACT_KEYS: list[tuple[str, tuple[str, ...]]] = [  # keys of reward.quality (gate.py)
    ("surrogate agreement with the labels (out of fold)", ("oof_accuracy",)),
    ("agreement, 95% interval", ("oof_accuracy_ci95",)),
    ("better than chance", ("better_than_chance",)),
    ("estimated label-noise rate", ("estimated_noise_rate",)),
    ("label-noise rate, 95% interval", ("estimated_noise_rate_ci95",)),
    ("pairs the rules mark", ("marked_by_rules",)),
    ("pairs rejected (or flagged)", ("rejected",)),
    ("expected precision of the rejections", ("expected_precision",)),
    ("expected precision, 95% lower bound", ("expected_precision_lower",)),
    ("abstained (too unreliable to filter)", ("abstained",)),
    ("why it abstained", ("abstain_reason",)),
]


@dataclass
class BenchRow:
    """One line of a benchmark table: the overall score, a section, group or category."""

    kind: str  # "overall", "macro average", "score", "section", "group", "category", "subset"
    name: str
    accuracy: float | None
    pairs: int | None = None
    correct: int | None = None
    ci95: tuple[float, float] | None = None
    ties: int | None = None


@dataclass
class Benchmark:
    name: str
    file: str
    rows: list[BenchRow]
    notes: list[str] = field(default_factory=list)  # missing sections, unknown categories


@dataclass
class CurvePoint:
    step: int
    stage: str
    train_loss: float | None
    train_accuracy: float | None
    eval_loss: float | None
    eval_accuracy: float | None


@dataclass
class Training:
    folder: str
    model: str
    stages: list[dict[str, Any]]
    curve: list[CurvePoint]
    final: dict[str, Any]  # the last eval: pairs, loss, accuracy, accuracy_ci95, ties, ...
    by_source: dict[str, dict[str, Any]]
    facts: dict[str, Any]  # train/eval pairs, seconds, steps, truncation


@dataclass
class FilterFacts:
    folder: str
    facts: list[tuple[str, str, Any]]  # (label, key read, value)
    kfold: list[dict[str, Any]]


@dataclass
class ModelData:
    benchmarks: list[Benchmark]
    trainings: list[Training]
    filters: list[FilterFacts]

    @property
    def empty(self) -> bool:
        return not (self.benchmarks or self.trainings or self.filters)


# -- finding the files ---------------------------------------------------------------------------
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def is_eval_report(value: Any) -> bool:
    """`curate eval`'s output: benchmark name -> a report with an `overall` accuracy."""
    return (isinstance(value, dict) and bool(value) and all(
        isinstance(v, dict) and isinstance(v.get("overall"), dict) for v in value.values()))


def is_training_metrics(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("history"), list)


def search_roots(run: Run, paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Folders that may hold model files: the given folders and the run folders' parents."""
    roots: dict[Path, None] = {}
    for p in map(Path, paths):
        if p.is_dir():
            roots[p.resolve()] = None
    for s in run.steps:
        roots[s.path.resolve().parent] = None
    return list(roots)


def find_model_files(roots: Iterable[Path]) -> tuple[list[Path], list[Path]]:
    """(eval report files, training folders) directly in `roots` or one level down."""
    evals: dict[Path, None] = {}
    trains: dict[Path, None] = {}
    for root in roots:
        if (root / "metrics.json").is_file():
            trains[root] = None
        for child in sorted(root.iterdir()):
            if child.suffix == ".json" and child.is_file() and child.stat().st_size < 16 << 20:
                if is_eval_report(_read_json(child)):
                    evals[child] = None
            elif child.is_dir() and (child / "metrics.json").is_file():
                trains[child] = None
    return list(evals), [t for t in trains if is_training_metrics(_read_json(t / "metrics.json"))]


# -- reading them ----------------------------------------------------------------------------------
def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(
        float(v)) else None


def _int(v: Any) -> int | None:
    return int(v) if isinstance(v, int) and not isinstance(v, bool) else None


def _ci(v: Any) -> tuple[float, float] | None:
    if isinstance(v, list | tuple) and len(v) == 2 and all(_num(x) is not None for x in v):
        return float(v[0]), float(v[1])
    return None


def _acc_row(kind: str, name: str, rec: Any) -> BenchRow:
    if isinstance(rec, dict):
        return BenchRow(kind, name, _num(rec.get("accuracy")), _int(rec.get("pairs")),
                        _int(rec.get("correct")), _ci(rec.get("accuracy_ci95")),
                        _int(rec.get("ties")))
    return BenchRow(kind, name, _num(rec))


def benchmark(name: str, report: dict[str, Any], file: str) -> Benchmark:
    """The rows of one benchmark report, in the order a reader wants them."""
    rows = [_acc_row("overall", "overall", report.get("overall"))]
    if _num(report.get("macro_average")) is not None:
        rows.append(BenchRow("macro average", "macro average", _num(report["macro_average"])))
    if _num(report.get("score")) is not None:
        rows.append(BenchRow("score", "score (mean of sections)", _num(report["score"])))
    for kind, key in (("section", "sections"), ("group", "groups"), ("category", "categories"),
                      ("subset", "subsets")):
        for sub, rec in (report.get(key) or {}).items():
            rows.append(_acc_row(kind, str(sub), rec))
    notes = []
    for key in ("sections_missing", "groups_missing", "unknown_categories"):
        if report.get(key):
            notes.append(f"{key.replace('_', ' ')}: {', '.join(map(str, report[key]))}")
    return Benchmark(str(report.get("benchmark") or name), file, rows, notes)


def _eval_of(rec: Any) -> dict[str, Any]:
    return rec if isinstance(rec, dict) else {}


def training(folder: Path, metrics: dict[str, Any]) -> Training:
    curve = []
    for h in metrics.get("history") or []:
        if not isinstance(h, dict):
            continue
        ev = _eval_of(h.get("eval"))
        curve.append(CurvePoint(int(h.get("step") or 0), str(h.get("stage") or ""),
                                _num(h.get("train_loss")), _num(h.get("train_accuracy")),
                                _num(ev.get("loss")), _num(ev.get("accuracy"))))
    final = _eval_of(metrics.get("eval"))
    facts: dict[str, Any] = {
        k: metrics[k] for k in ("train_pairs", "eval_pairs", "optimizer_steps", "seconds",
                                "train_seconds", "pairs_per_second", "peak_memory_mb",
                                "device", "freeze", "skipped_stages") if k in metrics}
    trunc = metrics.get("truncation")
    if isinstance(trunc, dict):
        facts.update({f"truncation: {k}": v for k, v in trunc.items()})
    return Training(folder.name, str(metrics.get("model") or "?"),
                    [s for s in metrics.get("stages") or [] if isinstance(s, dict)],
                    curve, final, dict(final.get("by_source") or {}), facts)


def filter_facts(run: Run) -> list[FilterFacts]:
    """The reward filter's reliability facts from the reward stage's manifest, when present."""
    out = []
    for step in run.lineage:
        if step.stage != "reward":
            continue
        quality = (step.manifest.get("reward") or {}).get("quality")
        places = [quality] if isinstance(quality, dict) else []
        facts = []
        for label, keys in FILTER_FACT_KEYS:
            for key in keys:
                hit = next((p[key] for p in places if key in p), None)
                if hit is not None:
                    facts.append((label, key, hit))
                    break
        reward = step.manifest.get("reward") or {}
        kfold = [f for f in reward.get("kfold") or [] if isinstance(f, dict)]
        if facts or kfold:
            out.append(FilterFacts(step.name, facts, kfold))
    return out


def collect_model(run: Run, paths: Iterable[str | os.PathLike[str]], *,
                  evals: Iterable[Path] = (), trainings: Iterable[Path] = ()) -> ModelData:
    """The model section: files found beside the run plus the ones named explicitly."""
    found_evals, found_trains = find_model_files(search_roots(run, paths))
    bench = []
    for f in list(dict.fromkeys([*map(Path, evals), *found_evals])):
        report = _read_json(f)
        if is_eval_report(report):
            bench += [benchmark(k, v, f.name) for k, v in report.items()]
    trains = []
    for d in list(dict.fromkeys([*map(Path, trainings), *found_trains])):
        metrics = _read_json(d / "metrics.json")
        if is_training_metrics(metrics):
            trains.append(training(d, metrics))
    return ModelData(bench, trains, filter_facts(run))
