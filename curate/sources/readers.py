"""Read raw records from local files (jsonl/json/parquet/csv, .gz too) or `hf://` datasets.

Each record comes with where it was read from, so an error names the file and line.
"""

from __future__ import annotations

import csv
import glob
import gzip
import io
import json
import os
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curate.dataset import open_parquet
from curate.sources.hf_local import SavedDataset, is_saved_dataset, read_arrow, read_saved
from curate.sources.hub import HubSpec, read_hub, resolve_revision
from curate.sources.records import InputError, Record

SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".ndjson", ".arrow")


def _strip_gz(name: str) -> str:
    return name[:-3] if name.endswith(".gz") else name


def expand_inputs(inputs: list[str]) -> list[str | HubSpec | SavedDataset]:
    """Files, folders (their data files, sorted) and globs; `hf://ORG/NAME` kept as a hub
    spec, a `save_to_disk` folder as a saved dataset."""
    out: list[str | HubSpec | SavedDataset] = []
    for item in inputs:
        if item.startswith("hf://"):
            out.append(HubSpec(item[len("hf://") :]))
            continue
        p = Path(item)
        if p.is_dir() and is_saved_dataset(p):
            out.append(SavedDataset(str(p)))
        elif p.is_dir():
            found = sorted(
                str(f) for f in p.rglob("*") if f.is_file() and _strip_gz(f.name).endswith(SUFFIXES)
            )
            if not found:
                raise InputError(f"{item}: folder holds no .jsonl/.json/.parquet/.csv/.arrow "
                                 "files and is not a save_to_disk folder")
            out.extend(found)
        elif p.is_file():
            out.append(str(p))
        else:
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                raise InputError(f"{item}: no such file, folder or glob match")
            out.extend(m for m in matches if Path(m).is_file())
    return out


@dataclass
class ReadProgress:
    """How far the readers are through the input files, in bytes of the files as stored
    (compressed bytes of a .gz), for a progress bar with an ETA; `total` is None when an
    input (a hub dataset, a save_to_disk folder) is not read by byte offsets."""

    total: int | None = None
    done: int = 0
    _base: int = field(default=0, repr=False)
    _size: int = field(default=0, repr=False)

    @classmethod
    def of(cls, inputs: list[str]) -> ReadProgress:
        items = expand_inputs(inputs)
        if any(isinstance(i, HubSpec | SavedDataset) for i in items):  # no byte offsets
            return cls(None)
        return cls(sum(os.path.getsize(str(i)) for i in items))

    def restart(self) -> None:
        self.done = self._base = self._size = 0

    def start_file(self, size: int) -> None:
        self._size = size

    def at(self, offset: int) -> None:
        self.done = self._base + min(offset, self._size)

    def end_file(self) -> None:
        self._base += self._size
        self.done = self._base


_NO_PROGRESS = ReadProgress()
EVERY = 64  # rows between progress updates (a tell() each)


class _TextFile:
    """A text file (gzip-compressed or not) whose stored bytes read so far are known."""

    def __init__(self, path: str) -> None:
        self.raw = open(path, "rb")  # noqa: SIM115 - closed by close()
        stream: Any = gzip.GzipFile(fileobj=self.raw) if path.endswith(".gz") else self.raw
        self.text = io.TextIOWrapper(stream, encoding="utf-8")

    def offset(self) -> int:
        return self.raw.tell()

    def close(self) -> None:
        self.text.close()
        self.raw.close()


def _text_errors(path: str, where: str, exc: Exception) -> InputError:
    """The file-level error for a failure while reading a text file."""
    if isinstance(exc, UnicodeDecodeError):
        return InputError(f"{path}{where}: not UTF-8 text ({exc.reason} at byte {exc.start})")
    kind = "zlib.error" if isinstance(exc, zlib.error) else type(exc).__name__
    if path.endswith(".gz"):
        return InputError(f"{path}{where}: not a readable gzip file "
                          f"({kind}: {exc}); the file is corrupt or truncated")
    return InputError(f"{path}{where}: cannot be read ({type(exc).__name__}: {exc})")


_FILE_ERRORS = (UnicodeDecodeError, OSError, EOFError, zlib.error)


def _json_row(obj: Any, path: str, index: int, what: str) -> Record:
    """A parsed JSON value as a Record; a non-object becomes a problem record."""
    if isinstance(obj, dict):
        return Record(obj, path, index)
    return Record({"value": obj}, path, index,
                  problem=f"{what} is a JSON {_json_type(obj)}, not an object")


def _json_type(obj: Any) -> str:
    names = {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if obj is None else names.get(type(obj), type(obj).__name__)


def _jsonl_record(line: str, path: str, lineno: int) -> Record | None:
    """The record of one JSON line (None for a blank line); InputError for broken JSON."""
    if not line.strip():
        return None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
    except RecursionError:
        return Record({"line": line}, path, lineno,
                      problem="the JSON line is nested too deep to read")
    except ValueError as exc:  # valid JSON Python refuses: an int of 4,300+ digits
        return Record({"line": line[:1000]}, path, lineno,
                      problem=f"the JSON line cannot be read ({exc})")
    return _json_row(obj, path, lineno, "the line")


def _jsonl_records(path: str, lines: Iterator[tuple[int, str]], close: Callable[[], None]
                   ) -> Iterator[Record]:
    """The records of numbered JSON `lines` of `path`; `close()` at the end, and a
    file-level InputError (naming the last line read) for a read that fails."""
    lineno = 0
    try:
        for lineno, line in lines:  # noqa: B007 - read in the except
            rec = _jsonl_record(line, path, lineno)
            if rec is not None:
                yield rec
    except _FILE_ERRORS as exc:
        raise _text_errors(path, f" (after line {lineno})", exc) from exc
    finally:
        close()


def _read_jsonl(path: str, progress: ReadProgress = _NO_PROGRESS) -> Iterator[Record]:
    try:
        f = _TextFile(path)
    except OSError as exc:
        raise InputError(f"{path}: cannot be opened ({exc.strerror or exc})") from exc

    def lines() -> Iterator[tuple[int, str]]:
        for lineno, line in enumerate(f.text, start=1):
            if lineno % EVERY == 0:
                progress.at(f.offset())
            yield lineno, line

    yield from _jsonl_records(path, lines(), f.close)


@dataclass(frozen=True)
class LineSpan:
    """Bytes [start, end) of an uncompressed JSON lines file, from line `first_line` on."""

    start: int
    end: int
    first_line: int


SCAN_BLOCK = 1 << 24


def jsonl_spans(path: str, lines_per_span: int, bytes_per_span: int) -> list[LineSpan] | None:
    """An uncompressed JSON lines file cut at line starts into spans of at most
    `lines_per_span` lines (or about `bytes_per_span` bytes), for readers in parallel;
    None where it must be read whole: a .gz, or lines ended by a lone CR (which the
    text reader splits on, as Python's universal newlines do, and a byte reader cannot)."""
    if path.endswith(".gz"):
        return None
    spans: list[LineSpan] = []
    start = pos = 0
    line = first = 1
    with open(path, "rb") as fh:
        prev_cr = False
        while block := fh.read(SCAN_BLOCK):
            lone_cr = block.count(b"\r") - block.count(b"\r\n") - block.endswith(b"\r")
            if lone_cr or (prev_cr and not block.startswith(b"\n")):
                return None
            prev_cr = block.endswith(b"\r")
            at = 0
            while (nl := block.find(b"\n", at)) >= 0:
                at = nl + 1
                line += 1
                end = pos + at
                if line - first >= lines_per_span or end - start >= bytes_per_span:
                    spans.append(LineSpan(start, end, first))
                    start, first = end, line
            pos += len(block)
    if prev_cr:
        return None
    if pos > start or not spans:
        spans.append(LineSpan(start, pos, first))
    return spans


def read_jsonl_span(path: str, span: LineSpan) -> Iterator[Record]:
    """The records of `span` of an uncompressed JSON lines file (see `jsonl_spans`): the
    same records, with the same line numbers, as `read_file` gives for those lines."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed by _jsonl_records
    except OSError as exc:
        raise InputError(f"{path}: cannot be opened ({exc.strerror or exc})") from exc

    def lines() -> Iterator[tuple[int, str]]:
        fh.seek(span.start)
        left = span.end - span.start
        lineno = span.first_line - 1
        while left > 0 and (raw := fh.readline(left)):
            left -= len(raw)
            lineno += 1
            if raw.endswith(b"\r\n"):  # as the text reader's universal newlines give it
                raw = raw[:-2] + b"\n"
            yield lineno, raw.decode("utf-8")

    yield from _jsonl_records(path, lines(), fh.close)


def _read_json(path: str, progress: ReadProgress = _NO_PROGRESS) -> Iterator[Record]:
    try:
        f = _TextFile(path)
        try:
            text = f.text.read()
        finally:
            f.close()
    except _FILE_ERRORS as exc:
        raise _text_errors(path, "", exc) from exc
    stripped = text.lstrip()
    if not stripped:
        return  # an empty file holds no rows (the rule for every text format)
    if stripped.startswith("{") and "\n{" in stripped.rstrip():
        # a .json file that is really JSON lines
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError):  # JSONDecodeError is a ValueError
            yield from _read_jsonl(path, progress)
            return
    else:
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"{path}:{exc.lineno}: not valid JSON ({exc.msg}, column {exc.colno})"
            ) from exc
        except RecursionError as exc:
            raise InputError(f"{path}: JSON nested too deep to read (one file is one JSON "
                             "value; JSON lines would make it one row)") from exc
        except ValueError as exc:  # an int of 4,300+ digits
            raise InputError(f"{path}: JSON that cannot be read ({exc})") from exc
    if isinstance(obj, dict):
        lists = [v for v in obj.values() if isinstance(v, list)]
        if len(lists) == 1:
            obj = lists[0]
        else:
            obj = [obj]
    if not isinstance(obj, list):
        raise InputError(f"{path}: expected a JSON list of objects")
    for i, row in enumerate(obj):
        yield _json_row(row, path, i, f"item {i}")


def _read_parquet(path: str, progress: ReadProgress = _NO_PROGRESS) -> Iterator[Record]:
    return read_parquet_rows(path, progress=progress)


def parquet_row_groups(path: str) -> list[int]:
    """Rows in each row group of a parquet input (InputError if it is not parquet)."""
    meta = _parquet_file(path).metadata
    return [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]


def parquet_row_group_bytes(path: str) -> list[int]:
    """Bytes (uncompressed) in each row group of a parquet input."""
    meta = _parquet_file(path).metadata
    return [meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)]


def read_parquet_rows(path: str, row_groups: list[int] | None = None,
                      first_index: int = 0, progress: ReadProgress = _NO_PROGRESS
                      ) -> Iterator[Record]:
    """The records of `row_groups` (default: all) of a parquet input; `first_index` is
    the file-wide index of the first one (it names rows in ids and messages).

    A page that cannot be decoded (a corrupt file with an intact footer) is an
    InputError naming the file and the row it stopped at."""
    pf = _parquet_file(path)
    i = first_index
    rows = max(1, pf.metadata.num_rows)
    size = os.path.getsize(path) if progress is not _NO_PROGRESS else 0
    batches = pf.iter_batches(batch_size=64, row_groups=row_groups)  # rows hold images
    while True:
        try:
            batch = next(batches, None)
            if batch is None:
                return
            pylist = batch.to_pylist()
        except Exception as exc:  # pyarrow raises OSError, ArrowInvalid, ... for bad pages
            raise InputError(f"{path}: rows from {i} cannot be read "
                             f"({type(exc).__name__}: {exc}); the file is corrupt") from exc
        for row in pylist:
            yield Record(row, path, i)
            i += 1
        progress.at(size * (i - first_index) // rows)


def _parquet_file(path: str) -> Any:
    try:
        return open_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise InputError(f"{path}: not a readable parquet file ({exc})") from exc


def _read_csv(path: str, progress: ReadProgress = _NO_PROGRESS) -> Iterator[Record]:
    # a long field is a row (with a long text), not a broken file: lift csv's 128 KiB limit
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    i = 0
    try:
        f = _TextFile(path)
    except OSError as exc:
        raise InputError(f"{path}: cannot be opened ({exc.strerror or exc})") from exc
    try:
        for i, row in enumerate(csv.DictReader(f.text)):  # noqa: B007 - read in the except
            if i % EVERY == 0:
                progress.at(f.offset())
            yield Record(dict(row), path, i)
    except csv.Error as exc:
        raise InputError(f"{path}: row {i}: not readable CSV ({exc})") from exc
    except _FILE_ERRORS as exc:
        raise _text_errors(path, f" (after row {i})", exc) from exc
    finally:
        f.close()


def read_file(path: str, progress: ReadProgress = _NO_PROGRESS) -> Iterator[Record]:
    name = _strip_gz(path)
    if name.endswith((".jsonl", ".ndjson")):
        return _read_jsonl(path, progress)
    if name.endswith(".json"):
        return _read_json(path, progress)
    if name.endswith(".parquet"):
        return _read_parquet(path, progress)
    if name.endswith(".csv"):
        return _read_csv(path, progress)
    if path.endswith(".arrow"):
        return read_arrow(path)
    raise InputError(
        f"{path}: unknown file type; use .jsonl, .json, .parquet, .csv (.gz allowed), .arrow "
        "or a save_to_disk folder"
    )


def iter_records(
    inputs: list[str], config: str | None = None, split: str = "train",
    revision: str | None = None, data_dir: str | None = None,
    progress: ReadProgress = _NO_PROGRESS,
) -> Iterator[Record]:
    """Every record of `inputs`, in order; `progress` follows the bytes read."""
    progress.restart()  # a two-pass adapter reads the input twice
    for item in expand_inputs(inputs):
        if isinstance(item, HubSpec):
            spec = HubSpec(item.name, config, split, revision, data_dir)
            yield from read_hub(spec, resolve_revision(spec))
        elif isinstance(item, SavedDataset):
            yield from read_saved(SavedDataset(item.path, split))
        else:
            progress.start_file(os.path.getsize(item) if progress.total is not None else 0)
            yield from read_file(item, progress)
            progress.end_file()
