"""`curate report`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from curate.commands.common import UsageFailure, handle_errors
from curate.commands.options import QuietOpt

RunDirsArg = Annotated[list[Path] | None, typer.Argument(
    help="Dataset folders of a run, or folders that hold them (e.g. the demo's output).",
    show_default=False)]


@handle_errors
def report(
    dirs: RunDirsArg = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write.")]
    = Path("report.html"),
    title: Annotated[str | None, typer.Option(
        help="The page title [default: curate report / curate compare].")] = None,
    examples: Annotated[int, typer.Option(help="Example rows shown per reject reason.")] = 3,
    clusters: Annotated[int, typer.Option(
        help="Duplicate clusters shown per duplicate reason.")] = 12,
    eval_files: Annotated[list[Path] | None, typer.Option(
        "--eval", help="A benchmark report of `curate eval` (JSON) to show in the model "
        "section, besides those found beside the run. Repeatable.")] = None,
    models: Annotated[list[Path] | None, typer.Option(
        "--model", help="A training output folder (with metrics.json) to show in the model "
        "section, besides those found beside the run. Repeatable.")] = None,
    compare: Annotated[tuple[Path, Path] | None, typer.Option(
        "--compare", metavar="RUN_A RUN_B",
        help="Compare two runs instead: rows per stage and reason with deltas, config "
        "differences per stage, and rows kept by one run and rejected by the other.")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Write one self-contained HTML page about a pipeline run (no network needed to view it).

    Sections: the funnel (rows per stage, rejected by reason, per source), the training
    mix (rows by split, modality, source and category, tokens per shard, image sizes,
    chosen against rejected lengths, stage tags), the model (benchmark accuracy with 95%
    intervals, training curves, per-source accuracy, the reward filter's facts), duplicate
    clusters (thumbnails side by side with their Hamming distance, the copy that
    survived), histograms of the numeric columns, example rows for every reject reason,
    and the run facts from the manifests (config, versions, timings, fingerprints).

    With --compare RUN_A RUN_B it writes a page comparing two runs of a pipeline, e.g.
    after changing a threshold.

    Example:
        curate report demo-out --out demo-out/report.html
        curate report work -o report.html
        curate report --compare run-a run-b -o compare.html
    """
    from curate.progress import console
    from curate.report import build_comparison, build_report

    if compare is not None:
        if dirs:
            raise UsageFailure("give either run folders or --compare RUN_A RUN_B, not both")
        path = build_comparison(compare[0], compare[1], out, title=title or "curate compare",
                                examples=examples)
    elif not dirs:
        raise UsageFailure("name the run's folders (curate report RUN_DIR ...) or two runs "
                           "with --compare RUN_A RUN_B")
    else:
        for f in eval_files or []:
            if not f.is_file():
                raise UsageFailure(f"{f}: no such benchmark report (--eval)")
        for m in models or []:
            if not (m / "metrics.json").is_file():
                raise UsageFailure(f"{m}: no metrics.json in this folder (--model)")
        path = build_report(dirs, out, title=title or "curate report", examples=examples,
                            clusters=clusters, evals=eval_files or [], models=models or [])
    if not quiet:
        console().print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)", highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(report)
