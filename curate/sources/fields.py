"""Field paths for `--map`: a column name, `a.b` into an object, `a[0]` into a list.

A column whose name is literally the whole path (`chosen.value`) wins over the nested
reading, so flat files with dotted headers keep working.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from curate.sources.readers import InputError, Record

_STEP = re.compile(r"\.?([^.\[\]]+)|\[(\d+)\]")


def parse_path(path: str) -> list[str | int]:
    """'a.b[0].c' -> ['a', 'b', 0, 'c']; ValueError for a malformed path."""
    steps: list[str | int] = []
    pos = 0
    while pos < len(path):
        m = _STEP.match(path, pos)
        if m is None or (pos == 0 and path.startswith(".")):
            raise ValueError(f"--map path {path!r} is not COLUMN, a.b or a[0]")
        steps.append(m[1] if m[1] is not None else int(m[2]))
        pos = m.end()
    if not steps:
        raise ValueError("--map path is empty")
    return steps


def get_path(data: dict[str, Any], path: str | None) -> Any:
    """The value at `path` in a record, or None when any step is absent."""
    if path is None:
        return None
    if path in data:
        return data[path]
    cur: Any = data
    for step in parse_path(path):
        if isinstance(step, int):
            if not isinstance(cur, list | tuple) or not -len(cur) <= step < len(cur):
                return None
            cur = cur[step]
        else:
            if not isinstance(cur, dict) or step not in cur:
                return None
            cur = cur[step]
    return cur


def top_column(path: str) -> str:
    """The column a path starts from (the whole path when the file has that column)."""
    first = parse_path(path)[0]
    return str(first)


SAMPLE = 100  # records per file whose keys make up "the columns the file has"


def with_column_check(records: Iterator[Record], required: dict[str, str],
                      hint: str) -> Iterator[Record]:
    """`records` unchanged, after checking that every path in `required` (field -> path)
    names a column of each file (the union of the keys of its first `SAMPLE` records).

    A missing column is a schema error (InputError, exit 2) naming the missing columns and
    the columns the file has, not a rejection of every row."""
    buffer: list[Record] = []
    checked: str | None = None  # the file whose sample passed; its other records pass through
    for rec in records:
        if rec.file == checked:
            yield rec
            continue
        if buffer and rec.file != buffer[0].file:
            _check(buffer, required, hint)
            yield from buffer
            buffer = []
        buffer.append(rec)
        if len(buffer) >= SAMPLE:
            _check(buffer, required, hint)
            checked = rec.file
            yield from buffer
            buffer = []
    if buffer:
        _check(buffer, required, hint)
        yield from buffer


def _check(sample: list[Record], required: dict[str, str], hint: str) -> None:
    """Raise when the readable records of `sample` lack a required column. A sample with no
    readable record (every line malformed) has no columns to judge: its rows are each
    rejected as `malformed_row` instead, so one bad line never stops a run."""
    readable = [rec for rec in sample if rec.problem is None]
    if not readable:
        return
    columns: dict[str, None] = {}
    for rec in readable:
        columns.update(dict.fromkeys(rec.data))
    missing = {field: path for field, path in required.items()
               if path not in columns and top_column(path) not in columns}
    if missing:
        names = ", ".join(f"{p!r} ({f})" if p != f else repr(p) for f, p in missing.items())
        raise InputError(
            f"{sample[0].file}: missing column(s) {names}; the file has columns "
            f"{', '.join(columns) or '(none)'}. {hint}")


def column_checked(records: Callable[[], Iterator[Record]], required: dict[str, str],
                   hint: str) -> Callable[[], Iterator[Record]]:
    """A `records` callable (as adapters get it) whose every pass checks the columns."""
    return lambda: with_column_check(records(), required, hint)
