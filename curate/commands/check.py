"""`curate check`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from curate.commands.common import handle_errors


@handle_errors
def check(
    dirs: Annotated[list[Path] | None, typer.Argument(
        help="The dataset folder to check (or several folders of a run, or a folder holding "
        "them); row rules read the kept rows of the final folders.")] = None,
    rules: Annotated[Path | None, typer.Option(
        "--rules", "-r", help="YAML rules file (default: rules/default.yaml).")] = None,
    fmt: Annotated[str, typer.Option(
        "--format", "-f", help="table, json or junit.")] = "table",
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Write the json / junit result to this file and print the table.")]
    = None,
    show: Annotated[int, typer.Option(help="Offending rows listed per rule.")] = 5,
    list_rules: Annotated[bool, typer.Option(
        "--list-rules", help="Print the rules a rules file may use, and exit.")] = False,
) -> None:
    """Gate a dataset in CI with YAML rules: exit 0 all pass, 1 any fails, 2 bad rules file.

    Prints a pass/fail table with the first offending pair ids of each rule; --format
    json or junit for CI systems. Rules: `curate check --list-rules`.

    Example:
        curate check work/shards --rules rules/default.yaml
        curate check work/shards --format junit --out check.xml
    """
    from curate.inspect.check import (
        FORMATS,
        default_rules_file,
        load_rules,
        print_table,
        run_checks,
        to_json,
        to_junit,
    )

    if list_rules:
        _list_rules()
        return
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not dirs:
        raise ValueError("give the dataset folder(s) to check")
    calls = load_rules(rules or default_rules_file())
    results = run_checks(dirs, calls, limit=show)
    target = " ".join(str(d) for d in dirs)
    text = {"json": to_json, "junit": to_junit}.get(fmt)
    if text is None or out is not None:
        print_table(results, target)
    if text is not None:
        if out is not None:
            out.write_text(text(results, target), encoding="utf-8")
        else:
            typer.echo(text(results, target), nl=False)
    if not all(r.passed for r in results):
        raise typer.Exit(1)


def _list_rules() -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from curate.inspect.check_rules import describe

    t = Table(title="rules for curate check")
    for col in ("rule", "parameters (default)", "checks"):
        t.add_column(col)
    for row in describe():
        t.add_row(*map(escape, row))
    Console().print(t)


def register(app: typer.Typer) -> None:
    app.command()(check)
