"""Error handling and helpers shared by every command (their shared options: options.py)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import typer

from curate.progress import console, set_quiet

F = TypeVar("F", bound=Callable[..., Any])


def location(value: str) -> Any:
    """A dataset folder: a Path, or a filesystem URI (file://, s3://, gs://) kept as text."""
    from curate.dataset import location as as_location

    return as_location(value)


class UsageFailure(Exception):
    """A problem with the user's input: printed without a traceback, exit code 2."""


def debugging() -> bool:
    """`curate --debug ...` or CURATE_DEBUG=1: let tracebacks through."""
    import os

    return os.environ.get("CURATE_DEBUG", "") not in ("", "0")


def print_error(message: str) -> None:
    """An error on stderr, whatever --quiet says (quiet hides progress, never errors)."""
    from rich.console import Console

    from curate.dataset import redact

    Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {redact(message)}",
                                               highlight=False, markup=True)


def user_error_message(exc: BaseException) -> str | None:
    """The one-line message for an error the user can act on (bad input, full disk, an
    output they cannot write), or None for anything else (a bug)."""
    import errno
    import zlib

    import pyarrow as pa

    from curate.dataset import DatasetError
    from curate.schema import SchemaError
    from curate.sources.readers import InputError

    if isinstance(exc, InputError | DatasetError | SchemaError | UsageFailure):
        return str(exc)
    if isinstance(exc, OSError):
        where = exc.filename or ""
        why = exc.strerror or str(exc)
        hint = {
            errno.ENOSPC: "free some space or write --out elsewhere",
            errno.EDQUOT: "free some space or write --out elsewhere",
            errno.EROFS: "that file system is read-only: write --out elsewhere",
            errno.EACCES: "no permission there: write --out elsewhere or fix the permissions",
            errno.EPERM: "no permission there: write --out elsewhere or fix the permissions",
            errno.ENOENT: "check the path",
        }.get(exc.errno or -1, "")
        text = f"{where}: {why}" if where else why
        return f"{text}; nothing was written ({hint})" if hint else f"{text}; nothing was written"
    if isinstance(exc, ValueError | pa.ArrowException | zlib.error | EOFError):
        return f"{type(exc).__name__}: {exc}"
    return None


def handle_errors(fn: F) -> F:
    """Turn errors a user can cause into one message on stderr and exit code 2 (even under
    --quiet), and check that --out may be written before the command reads anything.
    Anything else is a bug: one line and exit 1, the traceback under --debug."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        set_quiet(bool(kwargs.get("quiet")))
        try:
            guard_output(kwargs)
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            if debugging():
                raise
            message = user_error_message(exc)
            if message is not None:
                print_error(message)
                raise typer.Exit(2) from exc
            print_error(f"internal error ({type(exc).__name__}: {exc}); rerun with "
                        "`curate --debug ...` (or CURATE_DEBUG=1) for the traceback, and "
                        "report it")
            raise typer.Exit(1) from exc

    return wrapper  # type: ignore[return-value]


def guard_output(kwargs: dict[str, Any]) -> None:
    """A command whose --out is a dataset folder (`inputs` given too): refuse an --out that
    would replace a user's files or overlaps an input, before anything is read."""
    from curate.dataset import check_output

    out, inputs = kwargs.get("out"), kwargs.get("inputs")
    if out is None or not isinstance(inputs, list):
        return
    reads = [*inputs, *(kwargs.get("against") or [])]
    check_output(out, [str(i) for i in reads if not str(i).startswith("hf://")])


def check_model_engine(engine: str, workers: int | None, gpus_per_worker: float) -> None:
    """The engine options of a command whose local engine is one model in this process
    (generate, pairs): --workers and --gpus-per-worker only mean something on Ray."""
    from curate.engine import ENGINES

    if engine not in ENGINES:
        raise UsageFailure(f"--engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if engine == "local" and (workers is not None or gpus_per_worker):
        raise UsageFailure("--workers and --gpus-per-worker go with --engine ray (--engine "
                           "local runs one model in this process)")


def make_engine(name: str, workers: int | None, ray_address: str | None = None,
                gpus_per_worker: float = 0.0) -> Any:
    """The engine a command's --engine/--workers/--ray-address/--gpus-per-worker name."""
    import os

    from curate.engine import get_engine

    if name == "ray" and not ray_address:
        ray_address = os.environ.get("RAY_ADDRESS") or None
    return get_engine(name, workers=workers, address=ray_address,
                      gpus_per_worker=gpus_per_worker)


def print_summary(manifest: Mapping[str, Any], out: Path) -> None:
    from rich.table import Table

    from curate.dataset import redact

    c = console()
    table = Table(title=f"{manifest['stage']} -> {redact(str(out))}", show_header=True)
    table.add_column("rows in", justify="right")
    table.add_column("kept", justify="right")
    table.add_column("rejected", justify="right")
    table.add_column("seconds", justify="right")
    table.add_row(str(manifest["rows_in"]), str(manifest["rows_kept"]),
                  str(manifest["rows_rejected"]), f"{manifest['seconds']:.1f}")
    c.print(table)
    engine = manifest.get("engine") or {}
    if engine.get("engine") == "ray":
        how = ("a private local Ray" if engine.get("ray_mode") == "private"
               else f"the Ray cluster at {engine.get('address')}")
        c.print(f"engine: ray, {how} ({engine.get('cluster_cpus')} CPUs)", highlight=False)
    if manifest.get("rejected_by_reason"):
        reasons = ", ".join(f"{k}: {v}" for k, v in manifest["rejected_by_reason"].items())
        c.print(f"rejected by reason: {reasons}", highlight=False)


def given(**options: Any) -> dict[str, Any]:
    """The options the user gave: those not None. An option whose default is None leaves
    the field to the stage config's own default, declared there once."""
    return {k: v for k, v in options.items() if v is not None}
