"""Dataset folders: `kept/*.parquet`, `rejected/*.parquet` and `manifest.json`.

A folder is complete only when its manifest exists; writers build the whole
folder beside the target and rename it into place at the end (atomic commit).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curate import schema as S

MANIFEST = "manifest.json"
KEPT = "kept"
REJECTED = "rejected"
DEFAULT_ROWS_PER_FILE = 50_000
DEFAULT_BYTES_PER_FILE = 256 * 1024 * 1024


class DatasetError(RuntimeError):
    """A folder is not a usable dataset folder."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def json_fingerprint(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Dataset:
    """A committed dataset folder (read side)."""

    path: Path

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Dataset:
        p = Path(path)
        if not p.is_dir():
            raise DatasetError(f"{p}: no such dataset folder")
        if not (p / MANIFEST).is_file():
            raise DatasetError(
                f"{p}: no {MANIFEST}; the folder is incomplete (an interrupted run?). "
                "Rerun the stage that writes it."
            )
        return cls(p)

    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads((self.path / MANIFEST).read_text())

    @property
    def fingerprint(self) -> str:
        """Content fingerprint: a hash of the data files' checksums."""
        return json_fingerprint(self.manifest["files"])

    def files(self, part: str = KEPT) -> list[Path]:
        return sorted((self.path / part).glob("*.parquet"))

    def schema(self, part: str = KEPT) -> pa.Schema:
        files = self.files(part)
        if not files:
            raise DatasetError(f"{self.path}: no parquet files in {part}/")
        return pq.read_schema(files[0])

    def count(self, part: str = KEPT) -> int:
        return sum(pq.ParquetFile(f).metadata.num_rows for f in self.files(part))

    def iter_batches(
        self,
        part: str = KEPT,
        columns: list[str] | None = None,
        batch_size: int = 1024,
    ) -> Iterator[pa.RecordBatch]:
        for f in self.files(part):
            pf = pq.ParquetFile(f)
            yield from pf.iter_batches(batch_size=batch_size, columns=columns)

    def read(self, part: str = KEPT, columns: list[str] | None = None) -> pa.Table:
        files = self.files(part)
        if not files:
            return S.empty_table()
        return pa.concat_tables(
            [pq.read_table(f, columns=columns) for f in files], promote_options="default"
        )


def unified_schema(datasets: Iterable[Dataset], part: str = KEPT) -> pa.Schema:
    """The union of the inputs' columns, canonical ones first, in a stable order."""
    schemas = [d.schema(part) for d in datasets]
    merged = pa.unify_schemas(schemas, promote_options="permissive")
    extra = [f for f in merged if f.name not in S.PAIR_COLUMNS and f.name not in S.REJECT_COLUMNS]
    base = [merged.field(n) for n in S.PAIR_COLUMNS if merged.get_field_index(n) >= 0]
    return pa.schema(base + extra)


def conform(batch: pa.RecordBatch | pa.Table, schema: pa.Schema) -> pa.RecordBatch:
    """Reorder / null-fill `batch` so it has exactly `schema`'s columns."""
    n = batch.num_rows
    arrays = []
    for field in schema:
        idx = batch.schema.get_field_index(field.name)
        if idx < 0:
            arrays.append(pa.nulls(n, type=field.type))
        else:
            col = batch.column(idx)
            if isinstance(col, pa.ChunkedArray):
                col = col.combine_chunks()
            if not col.type.equals(field.type):
                col = col.cast(field.type)
            arrays.append(col)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def iter_inputs(
    datasets: list[Dataset],
    columns: list[str] | None = None,
    batch_size: int = 1024,
) -> Iterator[pa.RecordBatch]:
    """Stream the kept rows of several datasets, conformed to one schema."""
    schema = unified_schema(datasets)
    if columns is not None:
        schema = pa.schema([schema.field(c) for c in columns])
    for d in datasets:
        have = set(d.schema().names)
        cols = [c for c in schema.names if c in have]
        for batch in d.iter_batches(KEPT, columns=cols, batch_size=batch_size):
            yield conform(batch, schema)


class PartWriter:
    """Writes `part-00000.parquet`, `part-00001.parquet`, ... rolling by rows and bytes.

    Rows are buffered into row groups of about `ROW_GROUP_ROWS` rows or
    `ROW_GROUP_BYTES` bytes, whichever comes first, so small input batches do not
    make thousands of tiny row groups, and image-heavy ones do not hold much memory.
    """

    ROW_GROUP_ROWS = 2048
    ROW_GROUP_BYTES = 32 * 1024 * 1024

    def __init__(
        self,
        folder: Path,
        schema: pa.Schema,
        rows_per_file: int = DEFAULT_ROWS_PER_FILE,
        bytes_per_file: int = DEFAULT_BYTES_PER_FILE,
    ) -> None:
        self.folder = folder
        self.schema = schema
        self.rows_per_file = rows_per_file
        self.bytes_per_file = bytes_per_file
        folder.mkdir(parents=True, exist_ok=True)
        self._writer: pq.ParquetWriter | None = None
        self._name = ""
        self._index = 0
        self._rows_in_file = 0
        self._bytes_in_file = 0
        self._buffer: list[pa.RecordBatch] = []
        self._buffer_rows = 0
        self._buffer_bytes = 0
        self.rows = 0
        self.file_rows: dict[str, int] = {}

    def _open(self) -> None:
        self._name = f"part-{self._index:05d}.parquet"
        self._writer = pq.ParquetWriter(
            self.folder / self._name, self.schema, compression="zstd",
            use_dictionary=_dictionary_columns(self.schema),
        )
        self.file_rows[self._name] = 0
        self._rows_in_file = 0
        self._bytes_in_file = 0
        self._index += 1

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        if batch.num_rows == 0:
            return
        conformed = conform(batch, self.schema)
        self._buffer.append(conformed)
        self._buffer_rows += conformed.num_rows
        self._buffer_bytes += conformed.nbytes
        self.rows += conformed.num_rows
        if self._buffer_rows >= self.ROW_GROUP_ROWS or self._buffer_bytes >= self.ROW_GROUP_BYTES:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        table = pa.Table.from_batches(self._buffer, schema=self.schema)
        self._buffer, self._buffer_rows, self._buffer_bytes = [], 0, 0
        if self._writer is None:
            self._open()
        elif (
            self._rows_in_file >= self.rows_per_file or self._bytes_in_file >= self.bytes_per_file
        ):
            self._writer.close()
            self._open()
        assert self._writer is not None
        self._writer.write_table(table, row_group_size=max(table.num_rows, 1))
        self.file_rows[self._name] += table.num_rows
        self._rows_in_file += table.num_rows
        self._bytes_in_file += table.nbytes

    def close(self) -> None:
        self._flush()
        if self._writer is None:  # always leave one file so readers learn the schema
            self._open()
        assert self._writer is not None
        self._writer.close()
        self._writer = None

    def abort(self) -> None:
        self._buffer = []
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _dictionary_columns(schema: pa.Schema) -> list[str]:
    """Parquet column paths worth dictionary-encoding: all but binary leaves.

    Dictionary-encoding image bytes costs a hash of every blob and never pays off.
    """
    paths: list[str] = []

    def walk(prefix: str, typ: pa.DataType) -> None:
        if pa.types.is_struct(typ):
            for f in typ:
                walk(f"{prefix}.{f.name}", f.type)
        elif pa.types.is_list(typ) or pa.types.is_large_list(typ):
            walk(f"{prefix}.list.element", typ.value_type)
        elif not (pa.types.is_binary(typ) or pa.types.is_large_binary(typ)):
            paths.append(prefix)

    for field in schema:
        walk(field.name, field.type)
    return paths


def stale_temp_folders(target: Path) -> list[Path]:
    return sorted(target.parent.glob(f".{target.name}.tmp-*"))


def temp_folder_for(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in stale_temp_folders(target):
        pid = stale.name.rsplit("-", 1)[-1]
        if not (pid.isdigit() and _pid_alive(int(pid))):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def commit(tmp: Path, target: Path) -> None:
    """Move a finished temporary folder into place, replacing any older version."""
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    text = json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    (folder / MANIFEST).write_text(text + "\n")


def checksum_files(folder: Path) -> dict[str, str]:
    """sha256 of every data file under `folder` (not the manifest), by relative path."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            out[p.relative_to(folder).as_posix()] = sha256_file(p)
    return out
