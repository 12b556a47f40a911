"""Options and error handling shared by every command, so names and behaviour agree."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from curate.progress import console, set_quiet

F = TypeVar("F", bound=Callable[..., Any])

OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output dataset folder.")]
ForceOpt = Annotated[
    bool, typer.Option("--force", help="Redo the stage even if the output is up to date.")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or summaries.")]
EngineOpt = Annotated[
    str, typer.Option("--engine", help="Where per-batch work runs: 'local' (process pool).")
]
WorkersOpt = Annotated[
    int | None, typer.Option("--workers", help="Worker processes (default: all cores).")
]
InputsArg = Annotated[list[Path], typer.Argument(help="Input dataset folder(s).")]


class UsageFailure(Exception):
    """A problem with the user's input: printed without a traceback, exit code 2."""


def handle_errors(fn: F) -> F:
    """Turn known input errors into a one-line message and exit code 2."""
    from curate.dataset import DatasetError
    from curate.schema import SchemaError
    from curate.sources.readers import InputError

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        set_quiet(bool(kwargs.get("quiet")))
        try:
            return fn(*args, **kwargs)
        except (InputError, DatasetError, SchemaError, UsageFailure, ValueError,
                FileNotFoundError) as exc:
            console().print(f"[red]error:[/red] {exc}", highlight=False)
            raise typer.Exit(2) from exc

    return wrapper  # type: ignore[return-value]


def make_engine(name: str, workers: int | None) -> Any:
    from curate.engine import get_engine

    return get_engine(name, workers=workers)


def print_summary(manifest: dict[str, Any], out: Path) -> None:
    from rich.table import Table

    c = console()
    table = Table(title=f"{manifest['stage']} -> {out}", show_header=True)
    table.add_column("rows in", justify="right")
    table.add_column("kept", justify="right")
    table.add_column("rejected", justify="right")
    table.add_column("seconds", justify="right")
    table.add_row(str(manifest["rows_in"]), str(manifest["rows_kept"]),
                  str(manifest["rows_rejected"]), f"{manifest['seconds']:.1f}")
    c.print(table)
    if manifest.get("rejected_by_reason"):
        reasons = ", ".join(f"{k}: {v}" for k, v in manifest["rejected_by_reason"].items())
        c.print(f"rejected by reason: {reasons}", highlight=False)
