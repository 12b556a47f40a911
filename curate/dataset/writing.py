"""Writing parquet part files, hashed as they are written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from curate.dataset.checksums import HashingSink
from curate.dataset.layout import DEFAULT_BYTES_PER_FILE, DEFAULT_ROWS_PER_FILE
from curate.dataset.reading import conform


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
        folder: Path | str,
        schema: pa.Schema,
        rows_per_file: int = DEFAULT_ROWS_PER_FILE,
        bytes_per_file: int = DEFAULT_BYTES_PER_FILE,
        *,
        prefix: str = "part-",
        filesystem: pafs.FileSystem | None = None,
        hash_files: bool = False,
    ) -> None:
        """`filesystem` (None = local) holds `folder`; `prefix` starts every file name;
        `hash_files` records each file's sha256 in `file_sha256` as it is written."""
        self.folder = folder
        self.schema = schema
        self.rows_per_file = rows_per_file
        self.bytes_per_file = bytes_per_file
        self.prefix = prefix
        self.filesystem = filesystem
        self.hash_files = hash_files
        if filesystem is None:
            Path(folder).mkdir(parents=True, exist_ok=True)
        else:
            filesystem.create_dir(str(folder), recursive=True)
        self._writer: pq.ParquetWriter | None = None
        self._sink: HashingSink | None = None
        self._name = ""
        self._index = 0
        self._rows_in_file = 0
        self._bytes_in_file = 0
        self._buffer: list[pa.RecordBatch] = []
        self._buffer_rows = 0
        self._buffer_bytes = 0
        self.rows = 0
        self.file_rows: dict[str, int] = {}
        self.file_sha256: dict[str, str] = {}

    def _open(self) -> None:
        self._close_file()
        self._name = f"{self.prefix}{self._index:05d}.parquet"
        where: Any = f"{self.folder}/{self._name}"
        if self.hash_files or self.filesystem is not None:
            where = self._sink = HashingSink(open_output(where, self.filesystem),
                                             hashing=self.hash_files)
        self._writer = pq.ParquetWriter(
            where, self.schema, compression=parquet_compression(self.schema),
            use_dictionary=dictionary_columns(self.schema),
        )
        self.file_rows[self._name] = 0
        self._rows_in_file = 0
        self._bytes_in_file = 0
        self._index += 1

    def _close_file(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._sink is not None:
            self._sink.close()
            if self.hash_files:
                self.file_sha256[self._name] = self._sink.hexdigest()
            self._sink = None

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
            self._open()
        assert self._writer is not None
        self._writer.write_table(table, row_group_size=max(table.num_rows, 1))
        self.file_rows[self._name] += table.num_rows
        self._rows_in_file += table.num_rows
        self._bytes_in_file += table.nbytes

    def close(self, leave_a_file: bool = True) -> None:
        """Finish the last file; with no rows at all, still leave one empty file (readers
        learn the schema from it) unless `leave_a_file` is False."""
        self._flush()
        if self._writer is None and not self.file_rows and leave_a_file:
            self._open()
        self._close_file()

    def abort(self) -> None:
        self._buffer = []
        self._close_file()


def open_output(path: str, filesystem: pafs.FileSystem | None = None) -> Any:
    """A writable binary stream at `path`, on local disk or on `filesystem`."""
    if filesystem is None:
        return open(path, "wb")  # noqa: SIM115 - the caller closes it
    return filesystem.open_output_stream(path)


def file_size(path: str, filesystem: pafs.FileSystem | None = None) -> int:
    if filesystem is None:
        return Path(path).stat().st_size
    return int(filesystem.get_file_info(path).size)


def write_parquet_hashed(table: pa.Table, path: str, filesystem: pafs.FileSystem | None = None,
                         **options: Any) -> tuple[str, int]:
    """Write `table` as parquet at `path` (`options` for `pq.write_table`; by default the
    dataset folders' compression and dictionary settings); its (sha256, size)."""
    options = options or {"compression": parquet_compression(table.schema),
                          "use_dictionary": dictionary_columns(table.schema)}
    sink = HashingSink(open_output(path, filesystem))
    try:
        pq.write_table(table, sink, **options)
    finally:
        sink.close()
    return sink.hexdigest(), file_size(path, filesystem)


def _leaf_columns(schema: pa.Schema) -> list[tuple[str, bool]]:
    """(parquet column path, is binary) for every leaf column of `schema`."""
    leaves: list[tuple[str, bool]] = []

    def walk(prefix: str, typ: pa.DataType) -> None:
        if pa.types.is_struct(typ):
            for f in typ:
                walk(f"{prefix}.{f.name}", f.type)
        elif pa.types.is_list(typ) or pa.types.is_large_list(typ):
            walk(f"{prefix}.list.element", typ.value_type)
        else:
            leaves.append((prefix, pa.types.is_binary(typ) or pa.types.is_large_binary(typ)))

    for field in schema:
        walk(field.name, field.type)
    return leaves


def dictionary_columns(schema: pa.Schema) -> list[str]:
    """Parquet column paths worth dictionary-encoding: all but binary leaves.

    Dictionary-encoding image bytes costs a hash of every blob and never pays off.
    """
    return [path for path, binary in _leaf_columns(schema) if not binary]


def parquet_compression(schema: pa.Schema) -> dict[str, str]:
    """zstd for every column but binary ones (image bytes), which are stored as they are.

    JPEG, PNG and WebP are compressed already: zstd over them saves nothing and cost
    ingest about a sixth of its time.
    """
    return {path: "none" if binary else "zstd" for path, binary in _leaf_columns(schema)}
