"""Read raw records from local files (jsonl/json/parquet/csv, .gz too) or `hf://` datasets.

Each record comes with where it was read from, so an error names the file and line.
"""

from __future__ import annotations

import csv
import glob
import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curate.dataset import open_parquet
from curate.sources.hf_local import SavedDataset, is_saved_dataset, read_arrow, read_saved
from curate.sources.hub import HubSpec, read_hub, resolve_revision

SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".ndjson", ".arrow")


class InputError(Exception):
    """A file that cannot be read at all; the CLI turns it into exit code 2."""


@dataclass(frozen=True)
class Record:
    """One raw row and where it came from (`where` is 'file:line' or 'file:row')."""

    data: dict[str, Any]
    file: str
    index: int  # 1-based line (json lines) or 0-based row (others)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.index}"


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


def _open_text(path: str) -> io.TextIOBase:
    if path.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")  # type: ignore[return-value]
    return open(path, encoding="utf-8")  # noqa: SIM115


def _read_jsonl(path: str) -> Iterator[Record]:
    try:
        with _open_text(path) as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InputError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
                if not isinstance(obj, dict):
                    raise InputError(f"{path}:{lineno}: a JSON line must be an object")
                yield Record(obj, path, lineno)
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except (gzip.BadGzipFile, EOFError) as exc:
        raise InputError(f"{path}: not a readable gzip file ({exc})") from exc


def _read_json(path: str) -> Iterator[Record]:
    try:
        with _open_text(path) as fh:
            text = fh.read()
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except (gzip.BadGzipFile, EOFError) as exc:
        raise InputError(f"{path}: not a readable gzip file ({exc})") from exc
    stripped = text.lstrip()
    if stripped.startswith("{") and "\n{" in stripped.rstrip():
        # a .json file that is really JSON lines
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            yield from _read_jsonl(path)
            return
    else:
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"{path}:{exc.lineno}: not valid JSON ({exc.msg}, column {exc.colno})"
            ) from exc
    if isinstance(obj, dict):
        lists = [v for v in obj.values() if isinstance(v, list)]
        if len(lists) == 1:
            obj = lists[0]
        else:
            obj = [obj]
    if not isinstance(obj, list):
        raise InputError(f"{path}: expected a JSON list of objects")
    for i, row in enumerate(obj):
        if not isinstance(row, dict):
            raise InputError(f"{path}: item {i} is not a JSON object")
        yield Record(row, path, i)


def _read_parquet(path: str) -> Iterator[Record]:
    return read_parquet_rows(path)


def parquet_row_groups(path: str) -> list[int]:
    """Rows in each row group of a parquet input (InputError if it is not parquet)."""
    meta = _parquet_file(path).metadata
    return [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]


def read_parquet_rows(path: str, row_groups: list[int] | None = None,
                      first_index: int = 0) -> Iterator[Record]:
    """The records of `row_groups` (default: all) of a parquet input; `first_index` is
    the file-wide index of the first one (it names rows in ids and messages)."""
    pf = _parquet_file(path)
    i = first_index
    for batch in pf.iter_batches(batch_size=64, row_groups=row_groups):  # rows hold images
        for row in batch.to_pylist():
            yield Record(row, path, i)
            i += 1


def _parquet_file(path: str) -> Any:
    try:
        return open_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise InputError(f"{path}: not a readable parquet file ({exc})") from exc


def _read_csv(path: str) -> Iterator[Record]:
    try:
        with _open_text(path) as fh:
            for i, row in enumerate(csv.DictReader(fh)):
                yield Record(dict(row), path, i)
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except csv.Error as exc:
        raise InputError(f"{path}: not readable CSV ({exc})") from exc


def read_file(path: str) -> Iterator[Record]:
    name = _strip_gz(path)
    if name.endswith((".jsonl", ".ndjson")):
        return _read_jsonl(path)
    if name.endswith(".json"):
        return _read_json(path)
    if name.endswith(".parquet"):
        return _read_parquet(path)
    if name.endswith(".csv"):
        return _read_csv(path)
    if path.endswith(".arrow"):
        return read_arrow(path)
    raise InputError(
        f"{path}: unknown file type; use .jsonl, .json, .parquet, .csv (.gz allowed), .arrow "
        "or a save_to_disk folder"
    )


def iter_records(
    inputs: list[str], config: str | None = None, split: str = "train",
    revision: str | None = None, data_dir: str | None = None,
) -> Iterator[Record]:
    for item in expand_inputs(inputs):
        if isinstance(item, HubSpec):
            spec = HubSpec(item.name, config, split, revision, data_dir)
            yield from read_hub(spec, resolve_revision(spec))
        elif isinstance(item, SavedDataset):
            yield from read_saved(SavedDataset(item.path, split))
        else:
            yield from read_file(item)
