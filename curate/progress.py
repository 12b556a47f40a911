"""rich progress bars that stay quiet under --quiet and when stderr is not a terminal."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

_QUIET = False


def set_quiet(quiet: bool) -> None:
    """Quiet our bars, and the model libraries' own (read when they are first imported)."""
    global _QUIET
    _QUIET = quiet
    if is_quiet():
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TQDM_DISABLE", "1")


def is_quiet() -> bool:
    return _QUIET or not sys.stderr.isatty()


def console() -> Console:
    return Console(stderr=True, quiet=_QUIET, soft_wrap=True)


class _Bar:
    def __init__(self, progress: Progress | None, task: TaskID | None) -> None:
        self._progress = progress
        self._task = task

    def advance(self, n: int = 1) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, n)

    def set(self, completed: int, rows: int = 0) -> None:
        """Move a bytes bar to `completed` bytes; `rows` more rows are done."""


@contextmanager
def bar(description: str, total: int | None = None, unit: str = "rows") -> Iterator[_Bar]:
    """A progress bar showing done/total, rate and ETA; a no-op when quiet.

    `unit="bytes"`: done/total in bytes (as 12.3/45.6 MB) with the transfer rate, and
    the rows done so far beside it; for inputs whose row count is not known up front
    (JSON lines, a .gz) but whose size is."""
    if is_quiet():
        yield _Bar(None, None)
        return
    counts = ((DownloadColumn(), TransferSpeedColumn(), TextColumn("{task.fields[rows]}"))
              if unit == "bytes" else (MofNCompleteColumn(), TextColumn("{task.fields[rate]}")))
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        *counts,
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console(),
        transient=False,
    )
    with progress:
        task = progress.add_task(description, total=total, rate="", rows="")
        inner = _RateBar(progress, task, unit)
        yield inner


class _RateBar(_Bar):
    def __init__(self, progress: Progress, task: TaskID, unit: str) -> None:
        super().__init__(progress, task)
        self._unit = unit
        self._rows = 0

    def set(self, completed: int, rows: int = 0) -> None:
        assert self._progress is not None and self._task is not None
        self._rows += rows
        self._progress.update(self._task, completed=completed, rows=f"{self._rows:,} rows")

    def advance(self, n: int = 1) -> None:
        assert self._progress is not None and self._task is not None
        self._progress.advance(self._task, n)
        t = self._progress.tasks[self._task]
        speed = t.speed
        if speed:
            self._progress.update(self._task, rate=f"{speed:,.0f} {self._unit}/s")
