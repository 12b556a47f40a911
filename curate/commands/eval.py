"""`curate eval`: benchmark accuracy of a reward model with the benchmarks' own rules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from curate.commands.common import UsageFailure, handle_errors
from curate.commands.options import (
    CHECKPOINT_HELP,
    MODEL_BATCH,
    DeviceOpt,
    JsonOpt,
    ModelBatchOpt,
    QuietOpt,
    SeedOpt,
)

BASELINES = ("length",)


@handle_errors
def eval_(
    benchmarks: Annotated[list[Path] | None, typer.Argument(
        help="Ingested benchmark folders (curate ingest vl-rewardbench / rewardbench ...).")
    ] = None,
    model: Annotated[Path | None, typer.Option(
        "--model", help=f"{CHECKPOINT_HELP}.")] = None,
    scores: Annotated[Path | None, typer.Option(
        "--scores", help="Apply the rules to a scores file instead of scoring: .jsonl/.csv/"
        ".parquet with chosen_reward, rejected_reward and source, category (or pair_id, "
        "joined with the benchmark folders).")] = None,
    baseline: Annotated[str | None, typer.Option(
        help="Score with a baseline instead of a model: 'length' (longer wins).")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Write the report here as JSON.")] = None,
    scores_out: Annotated[Path | None, typer.Option(
        help="Write the per-pair scores here (.jsonl or .parquet).")] = None,
    seed: SeedOpt = None,
    batch_size: ModelBatchOpt = None,
    device: DeviceOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Score benchmark pairs and report accuracy by the benchmarks' rules (ties are wrong).

    A benchmark folder that lost rows at ingest is refused (exit 2): its score would not
    compare with the official one. A VL-RewardBench folder ingested without --image-root
    is scored text-only, and the report says so (`text_only: true`).

    VL-RewardBench: overall accuracy and the macro average over general, hallucination
    and reasoning; each pair is shown in a seeded order. RewardBench: Chat, Chat Hard,
    Safety, Reasoning and their average. Other sources: accuracy by category.
    --seed: the order each pair is shown in.

    Example:
        curate eval --model work/rm work/eval-vlrb --out work/rm/eval.json
        curate eval --scores scores.jsonl --json
    """
    from curate.train import evaluate as E

    chosen = [x for x in (model, scores, baseline) if x is not None]
    if len(chosen) != 1:
        raise UsageFailure("give exactly one of --model, --scores or --baseline")
    if scores is not None:
        table = E.read_scores(scores)
        if benchmarks:
            for b in benchmarks:
                E.check_not_shrunk(b)
            table = _join(table, benchmarks)
        result, per_pair = E.report(table), table
        if benchmarks:
            from curate.train.data import load_pairs

            E.label_reports(result, benchmarks, load_pairs(list(benchmarks)))
    else:
        if not benchmarks:
            raise UsageFailure("name at least one ingested benchmark folder")
        if baseline is not None:
            if baseline not in BASELINES:
                raise UsageFailure(f"--baseline must be one of {', '.join(BASELINES)}")
            scorer: E.ScoreFn = E.length_scorer
        else:
            from curate.models.reward_model import load_reward_model

            assert model is not None  # exactly one of --model, --scores, --baseline (above)
            rm = load_reward_model(model, device=device or _default_device())
            scorer = E.model_scorer(rm, batch_size=batch_size or MODEL_BATCH)
        result, per_pair = E.evaluate(benchmarks, scorer, seed=seed or 0)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    if scores_out is not None:
        E.write_scores(per_pair, scores_out)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    elif not quiet:
        print_report(result)


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _join(scores: Any, benchmarks: list[Path]) -> Any:
    """Add source/category to a scores table from the benchmark rows, by pair_id."""
    import pyarrow as pa

    from curate.train.data import load_pairs

    if "pair_id" not in scores.column_names:
        raise UsageFailure("to join scores with benchmark folders the scores need a pair_id")
    meta: dict[str, tuple[str, str]] = {}
    for b in benchmarks:
        t = load_pairs(b).select(["pair_id", "source", "category"]).to_pylist()
        meta.update({r["pair_id"]: (r["source"], r["category"]) for r in t})
    ids = scores["pair_id"].to_pylist()
    missing = [i for i in ids if i not in meta]
    if missing:
        raise UsageFailure(f"{len(missing)} scored pair_id(s) are not in the benchmark folders, "
                           f"e.g. {missing[0]}")
    keep = [c for c in scores.column_names if c not in ("source", "category")]
    return pa.table({**{c: scores[c] for c in keep},
                     "source": [meta[i][0] for i in ids], "category": [meta[i][1] for i in ids]})


def print_report(result: dict[str, Any]) -> None:
    from rich.table import Table

    from curate.progress import console

    c = console()
    for src, rep in result.items():
        text_only = (", TEXT-ONLY: scored without images (ingested without --image-root)"
                     if rep.get("text_only") else "")
        t = Table(title=f"{src} ({rep['benchmark']} rules{text_only})")
        t.add_column("")
        t.add_column("pairs", justify="right")
        t.add_column("accuracy", justify="right")
        ov = rep["overall"]
        lo, hi = ov["accuracy_ci95"]
        t.add_row("overall", str(ov["pairs"]), f"{100 * ov['accuracy']:.2f} "
                  f"[{100 * lo:.1f}, {100 * hi:.1f}]")
        if rep["benchmark"] == "vl-rewardbench":
            for g, v in rep["groups"].items():
                t.add_row(g, str(v["pairs"]), f"{100 * v['accuracy']:.2f}")
            t.add_row("macro average", "", f"{100 * rep['macro_average']:.2f}")
        elif rep["benchmark"] == "rewardbench":
            for s, v in rep["sections"].items():
                t.add_row(s, "", f"{100 * v:.2f}")
            t.add_row("score (mean of sections)", "", f"{100 * rep['score']:.2f}")
        else:
            for cat, v in rep["categories"].items():
                t.add_row(cat or "(none)", str(v["pairs"]), f"{100 * v['accuracy']:.2f}")
        c.print(t)


def register(app: typer.Typer) -> None:
    app.command(name="eval")(eval_)
