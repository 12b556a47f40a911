"""`curate report`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from curate.commands.common import QuietOpt, handle_errors

RunDirsArg = Annotated[list[Path], typer.Argument(
    help="Dataset folders of a run, or folders that hold them (e.g. the demo's output).")]


@handle_errors
def report(
    dirs: RunDirsArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write.")]
    = Path("report.html"),
    title: Annotated[str, typer.Option(help="The page title.")] = "curate report",
    examples: Annotated[int, typer.Option(help="Example rows shown per reject reason.")] = 3,
    clusters: Annotated[int, typer.Option(
        help="Duplicate clusters shown per duplicate reason.")] = 12,
    quiet: QuietOpt = False,
) -> None:
    """Write one self-contained HTML page about a pipeline run (no network needed to view it).

    Sections: the funnel (rows per stage, rejected by reason, per source), duplicate
    clusters (thumbnails side by side with their Hamming distance, the copy that
    survived), histograms of the numeric columns, example rows for every reject reason,
    and the run facts from the manifests (config, versions, timings, fingerprints).

    Example:
        curate report demo-out --out demo-out/report.html
        curate report work/ingest-* work/dedup work/shard -o report.html
    """
    from curate.progress import console
    from curate.report import build_report

    path = build_report(dirs, out, title=title, examples=examples, clusters=clusters)
    if not quiet:
        console().print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)", highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(report)
