"""`curate explain`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from curate.commands.common import UsageFailure, handle_errors
from curate.commands.options import JsonOpt


@handle_errors
def explain(
    pair_id: Annotated[str, typer.Argument(help="A pair id, or a unique prefix (6+ characters).")],
    dirs: Annotated[list[Path], typer.Argument(
        help="Dataset folders of the run, or folders that hold them.")],
    as_json: JsonOpt = False,
) -> None:
    """Show where one pair went through a run: each stage, kept or rejected, and why.

    A reject detail that names another pair (the copy it duplicated, the eval item it
    matched) is looked up in the given folders and shown beside this pair.

    Example:
        curate explain 2334d2a06e demo-out
    """
    from curate.inspect.explain import PairNotFound, explain, print_explanation

    try:
        e = explain(pair_id, dirs)
    except PairNotFound as exc:
        raise UsageFailure(str(exc)) from exc
    if as_json:
        typer.echo(json.dumps(e.as_dict(), indent=2, ensure_ascii=False, default=str))
    else:
        print_explanation(e)


def register(app: typer.Typer) -> None:
    app.command()(explain)
