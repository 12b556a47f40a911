"""The report's "Model" section: benchmarks, training curves, per-source accuracy, the filter."""

from __future__ import annotations

from typing import Any

from curate.report.markup import block, e, interval, num, pct, table
from curate.report.model import Benchmark, FilterFacts, ModelData, Training
from curate.report.svg import PALETTE, Line, line_chart


def _benchmark(b: Benchmark) -> str:
    rows = [[e(r.kind), e(r.name), pct(r.accuracy), interval(r.ci95), num(r.correct),
             num(r.pairs), num(r.ties)] for r in b.rows]
    notes = "".join(f'<p class="muted">{e(n)}</p>' for n in b.notes)
    return (f'<div class="bench" data-benchmark="{e(b.name)}"><h3>{e(b.name)} '
            f'<span class="muted">({e(b.file)})</span></h3>'
            + table(["level", "name", "accuracy", "95% interval", "correct", "pairs", "ties"],
                    rows, numeric={2, 4, 5, 6}) + notes + "</div>")


def _stage_marks(t: Training) -> list[tuple[float, str]]:
    marks, last = [], None
    for p in t.curve:
        if p.stage != last:
            marks.append((float(p.step), p.stage))
            last = p.stage
    return marks


def _curves(t: Training) -> str:
    xs = [float(p.step) for p in t.curve]
    marks = _stage_marks(t)
    loss = line_chart([Line("train loss", xs, [p.train_loss for p in t.curve], PALETTE[0]),
                       Line("eval loss", xs, [p.eval_loss for p in t.curve], PALETTE[1],
                            dashed=True)],
                      title=f"{t.folder}: loss", xlabel="step", ylabel="loss", marks=marks)
    acc = line_chart([Line("train accuracy", xs, [p.train_accuracy for p in t.curve],
                           PALETTE[0]),
                      Line("eval accuracy", xs, [p.eval_accuracy for p in t.curve], PALETTE[1],
                           dashed=True)],
                     title=f"{t.folder}: accuracy", xlabel="step", ylabel="accuracy",
                     marks=marks, y_range=(0.0, 1.0))
    rows = [[p.step, e(p.stage), num(p.train_loss), pct(p.train_accuracy), num(p.eval_loss),
             pct(p.eval_accuracy)] for p in t.curve]
    return (f'<div class="charts"><div class="chart-box" data-curve="loss"><h3>Loss</h3>{loss}'
            f'</div><div class="chart-box" data-curve="accuracy"><h3>Accuracy</h3>{acc}</div>'
            "</div><details><summary>every eval step</summary>"
            + table(["step", "stage", "train loss", "train accuracy", "eval loss",
                     "eval accuracy"], rows, numeric={0, 2, 3, 4, 5}) + "</details>")


def _training(t: Training) -> str:
    stages = table(["stage", "data", "pairs", "lr", "epochs"],
                   [[e(s.get("name", "?")), e(s.get("data", "-")), e(s.get("pairs", "-")),
                     e(s.get("lr", "-")), e(s.get("epochs", "-"))] for s in t.stages],
                   numeric={2, 3, 4}, cls="stages")
    f = t.final
    final = table(["pairs", "accuracy", "95% interval", "ties", "loss", "mean margin"],
                  [[e(f.get("pairs", "-")), pct(_num(f.get("accuracy"))),
                    interval(_ci(f.get("accuracy_ci95"))), e(f.get("ties", "-")),
                    num(_num(f.get("loss"))), num(_num(f.get("mean_margin")))]],
                  numeric={0, 1, 3, 4, 5}, cls="final-eval")
    by_source = table(["source", "eval pairs", "accuracy"],
                      [[e(src), e(v.get("pairs", "-")), pct(_num(v.get("accuracy")))]
                       for src, v in sorted(t.by_source.items()) if isinstance(v, dict)],
                      numeric={1, 2}, cls="by-source")
    facts = " · ".join(f"{e(k)} {e(v)}" for k, v in t.facts.items())
    return (f'<div class="training" data-training="{e(t.folder)}"><h3>Training: {e(t.folder)} '
            f'<span class="muted">({e(t.model)})</span></h3><p class="muted">{facts}</p>'
            '<div class="blocks">' + block("Stages", stages)
            + block("Held-out accuracy at the end", final)
            + block("Per-source accuracy (held-out pairs)", by_source) + "</div>"
            f"<h4>Training curves</h4>{_curves(t)}</div>")


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _ci(v: Any) -> tuple[float, float] | None:
    return (float(v[0]), float(v[1])) if isinstance(v, list | tuple) and len(v) == 2 else None


def _fact_value(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, list | tuple) and len(v) == 2 and all(_num(x) is not None for x in v):
        return interval((float(v[0]), float(v[1])))
    if isinstance(v, int):  # a count (bool is handled above)
        return f"{v:,}"
    if _num(v) is not None and 0 <= float(v) <= 1:
        return pct(float(v))
    return e(v)


def pooled_oof(kfold: list[dict[str, Any]]) -> tuple[int, float] | None:
    """(pairs, accuracy) over every fold's out-of-fold pairs, weighted by their count."""
    folds = [(int(f["scored_pairs"]), float(f["oof_accuracy"])) for f in kfold
             if _num(f.get("oof_accuracy")) is not None and isinstance(f.get("scored_pairs"), int)]
    n = sum(k for k, _ in folds)
    return (n, sum(k * a for k, a in folds) / n) if n else None


def _filter(f: FilterFacts) -> str:
    rows = [[e(label), _fact_value(v), f"<code>{e(key)}</code>"] for label, key, v in f.facts]
    pooled = pooled_oof(f.kfold)
    if pooled and not any(key.endswith("oof_accuracy") for _, key, _ in f.facts):
        rows.insert(0, ["surrogate out-of-fold accuracy (pooled over the folds)",
                        pct(pooled[1]), f"<code>reward.kfold</code>, {pooled[0]} pairs"])
    folds = table(["fold", "train pairs", "scored pairs", "train accuracy", "out-of-fold accuracy"],
                  [[e(k.get("fold", "?")), e(k.get("train_pairs", "-")),
                    e(k.get("scored_pairs", "-")), pct(_num(k.get("train_accuracy"))),
                    pct(_num(k.get("oof_accuracy")))] for k in f.kfold],
                  numeric={1, 2, 3, 4}, cls="kfold") if f.kfold else ""
    return (f'<div class="filter" data-folder="{e(f.folder)}"><h3>Reward filter: {e(f.folder)}'
            "</h3>" + table(["fact", "value", "from the manifest"], rows, cls="filter-facts")
            + (f"<h4>Surrogate folds</h4>{folds}" if folds else "") + "</div>")


def render_model(m: ModelData | None) -> str:
    if m is None or m.empty:
        return ('<p class="muted">No model files beside these folders: no <code>metrics.json'
                "</code> of a training run and no benchmark report of <code>curate eval</code> "
                "(name them with <code>--eval</code> and <code>--model</code>).</p>")
    parts = []
    if m.benchmarks:
        parts.append('<h3>Benchmarks</h3><p class="muted">Accuracy with its 95% interval; '
                     "a tie (equal rewards) counts as wrong, as in the benchmarks' own "
                     'scoring.</p><div class="blocks">'
                     + "".join(_benchmark(b) for b in m.benchmarks) + "</div>")
    parts += [_training(t) for t in m.trainings]
    parts += [_filter(f) for f in m.filters]
    return "".join(parts)
