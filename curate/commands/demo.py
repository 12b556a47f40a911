"""`curate demo`: the whole pipeline on a small sample the project makes itself."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from curate.commands.common import handle_errors
from curate.commands.options import ForceOpt, QuietOpt


@handle_errors
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the sample and results.")]
    = Path("demo-out"),
    sample_only: Annotated[bool, typer.Option(
        "--sample-only", help="Only write the raw sample (OUT/raw/), for `make -f "
        "recipes/skywork-vl.mk SMALL=1`."
    )] = False,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Build a small multimodal + text sample from scikit-image's photos and run every stage.

    Example:
        curate demo --out demo-out
    """
    from rich.table import Table

    from curate.progress import console
    from curate.recipes.demo import build_eval_sample, build_sample, run_demo

    if sample_only:
        paths = {**build_sample(out / "raw"), **build_eval_sample(out / "raw" / "eval")}
        for kind, path in paths.items():
            console().print(f"{kind}: {path}", highlight=False)
        return
    results = run_demo(out, force=force)
    t = Table(title=f"curate demo -> {out}")
    for col in ("step", "rows in", "kept", "rejected", "reasons"):
        t.add_column(col)
    for step, m in results.items():
        reasons = ", ".join(f"{k}: {v}" for k, v in m.get("rejected_by_reason", {}).items())
        t.add_row(step, str(m["rows_in"]), str(m["rows_kept"]), str(m["rows_rejected"]), reasons)
    c = console()
    c.print(t)
    c.print(f"Results are in {out}/: one folder per stage (kept/, rejected/, manifest.json), "
            f"the reward model in {out}/07-rm/, benchmark scores in {out}/08-eval.json "
            "(a tiny random model: near chance by design).")
    c.print(f"Report: {out}/report.html")


def register(app: typer.Typer) -> None:
    app.command()(demo)
