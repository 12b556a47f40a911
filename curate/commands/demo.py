"""`curate demo`: the whole pipeline on a small sample the project makes itself."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from curate.commands.common import ForceOpt, QuietOpt, handle_errors


@handle_errors
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the sample and results.")]
    = Path("demo-out"),
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Build a small multimodal + text sample from scikit-image's photos and run every stage.

    Example:
        curate demo --out demo-out
    """
    from rich.table import Table

    from curate.demo import run_demo
    from curate.progress import console

    results = run_demo(out, force=force)
    t = Table(title=f"curate demo -> {out}")
    for col in ("step", "rows in", "kept", "rejected", "reasons"):
        t.add_column(col)
    for step, m in results.items():
        reasons = ", ".join(f"{k}: {v}" for k, v in m.get("rejected_by_reason", {}).items())
        t.add_row(step, str(m["rows_in"]), str(m["rows_kept"]), str(m["rows_rejected"]), reasons)
    c = console()
    c.print(t)
    c.print(f"Results are in {out}/ (each stage's folder has kept/, rejected/, manifest.json).")


def register(app: typer.Typer) -> None:
    app.command()(demo)
