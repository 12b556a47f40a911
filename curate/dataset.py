"""Dataset folders: `kept/*.parquet`, `rejected/*.parquet` and `manifest.json`.

A folder is complete only when its manifest exists; writers build the whole
folder beside the target and rename it into place at the end (atomic commit).

A folder may also be a pyarrow filesystem URI (`file://`, `s3://`, `gs://`, ...):
readers go through the filesystem; writers build the folder in a local staging
folder and upload it at the end, data files first and the manifest last, so a
folder with a manifest is complete there too.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from curate import manifest as manifest_format
from curate import schema as S
from curate.manifest import Manifest

MANIFEST = "manifest.json"
KEPT = "kept"
REJECTED = "rejected"
DEFAULT_ROWS_PER_FILE = 50_000
DEFAULT_BYTES_PER_FILE = 256 * 1024 * 1024


class ConservationError(AssertionError):
    """rows in != rows kept + rows rejected: a stage lost or invented rows."""


class DatasetError(RuntimeError):
    """A folder is not a usable dataset folder."""


class UnsafeOutputError(DatasetError):
    """An output would replace a user's files or overlap an input."""


class ChangedInputError(DatasetError):
    """A dataset folder's data file no longer matches its manifest (edited, truncated,
    removed or added after the folder was written)."""


class RemoteError(DatasetError, OSError):
    """A folder URI's filesystem failed (unreachable, no such bucket, access denied): the
    message names the URI; an OSError still, for callers that catch those."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def fingerprint_file(path: Path, chunk: int = 1 << 22) -> str:
    """A content fingerprint of an input file (xxh3-128), to tell whether it changed.

    Not a checksum for integrity (the manifest's `files` are sha256): at memory speed
    it adds well under a tenth of a second per 500 MB read before a stage starts.
    """
    import xxhash

    h = xxhash.xxh3_128()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return "xxh3-128:" + h.hexdigest()


def json_fingerprint(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


_URI_CREDENTIALS = re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^/@\s]+@", re.IGNORECASE)


def redact(text: str) -> str:
    """`text` with any credentials in a URI (`s3://KEY:SECRET@bucket/...`) masked, for
    manifests, messages and logs."""
    return _URI_CREDENTIALS.sub(r"\1***@", text)


def is_uri(location: str | os.PathLike[str]) -> TypeGuard[str]:
    """True for a filesystem URI such as `s3://bucket/x` or `file:///data/x`."""
    return isinstance(location, str) and "://" in location


def location(value: str | os.PathLike[str]) -> Path | str:
    """A dataset folder as given: a URI stays text (Path would fold its `//`), else a Path."""
    return value if is_uri(value) else Path(value)


def check_output_uri(uri: str) -> None:
    """An output URI must name a folder inside a bucket: replacing the output deletes it."""
    fs, inner = _resolve(uri)
    if fs.type_name != "local" and "/" not in inner.strip("/"):
        raise DatasetError(f"{uri}: an output must be a folder inside the bucket "
                           f"(e.g. {uri.split('?')[0].rstrip('/')}/curated), not the bucket")


def resolve_uri(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem of a folder URI and the folder's path inside it."""
    return _resolve(uri)


def _resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    try:
        fs, inner = pafs.FileSystem.from_uri(uri)
    except OSError as exc:  # e.g. s3 without ?region=: the bucket's region is looked up
        raise RemoteError(f"{uri}: {exc}") from exc
    except ValueError as exc:  # ArrowInvalid: e.g. an unknown query parameter
        raise DatasetError(f"{uri}: {exc}") from exc
    return fs, inner.rstrip("/")


def parse_manifest(text: str | bytes, where: str) -> Manifest:
    """A dataset folder's manifest from its text (see `curate.manifest`); DatasetError
    naming `where` (the manifest's path) when it is not JSON, not a curate manifest, of a
    format this curate cannot read, or damaged."""
    try:
        return manifest_format.parse(text, where)
    except manifest_format.ManifestError as exc:
        raise DatasetError(str(exc)) from None


def is_curate_manifest(manifest: Any) -> bool:
    """True for what a curate stage writes: a `stage` name and a `files` checksum table."""
    return (isinstance(manifest, dict) and isinstance(manifest.get("stage"), str)
            and isinstance(manifest.get("files"), dict)
            and all(isinstance(v, str) for v in manifest["files"].values()))


@dataclass(frozen=True)
class Dataset:
    """A committed dataset folder (read side).

    `path` is a local path, or for a URI folder the path inside `filesystem`.
    Every data file read through it is checked against the manifest (`files`: sha256,
    `file_sizes`): the size when it is opened, the sha256 as its bytes stream through
    (see `VerifyingFile`), so a file changed after it was written stops the reader with
    `ChangedInputError` naming it.
    """

    path: Path
    filesystem: pafs.FileSystem | None = None
    uri: str | None = None

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Dataset:
        if is_uri(path):
            fs, inner = _resolve(str(path))
            try:
                info = fs.get_file_info(f"{inner}/{MANIFEST}")
            except OSError as exc:
                raise RemoteError(f"{path}: {exc}") from exc
            if info.type != pafs.FileType.File:
                raise DatasetError(f"{path}: no {MANIFEST}; not a complete dataset folder")
            ds = cls(Path(inner), fs, str(path))
            ds.manifest  # noqa: B018 - parse and check it now, before anything is read
            return ds
        p = Path(path)
        recover_interrupted_commit(p)
        if not p.is_dir():
            raise DatasetError(f"{p}: no such dataset folder")
        if not (p / MANIFEST).is_file():
            raise DatasetError(
                f"{p}: no {MANIFEST}; the folder is incomplete (an interrupted run?). "
                "Rerun the stage that writes it."
            )
        ds = cls(p)
        ds.manifest  # noqa: B018 - parse and check it now, before anything is read
        return ds

    @property
    def location(self) -> str:
        """The folder as the user named it (URI or path)."""
        return self.uri or str(self.path)

    @functools.cached_property
    def manifest(self) -> Manifest:
        where = f"{self.location}/{MANIFEST}"
        if self.filesystem is not None:
            with self.filesystem.open_input_stream(f"{self.path}/{MANIFEST}") as fh:
                return parse_manifest(fh.read(), where)
        return parse_manifest((self.path / MANIFEST).read_bytes(), where)

    def relative(self, file: Path | str) -> str:
        """`file` (one of `files()`) as the manifest names it: `kept/part-00000.parquet`."""
        return Path(file).relative_to(self.path).as_posix()

    def expected(self, file: Path | str) -> tuple[str, int | None]:
        """(sha256, size or None for manifests that predate sizes) the manifest records."""
        rel = self.relative(file)
        sha = self.manifest["files"].get(rel)
        if sha is None:
            raise ChangedInputError(f"{self.location}/{rel}: not in {MANIFEST}; the folder "
                                    "was changed after it was written. Remove the file or "
                                    "rerun the stage that wrote the folder.")
        return sha, (self.manifest.get("file_sizes") or {}).get(rel)

    def verify(self) -> list[str]:
        """Every file the manifest lists, checked (size and sha256): the problems found,
        one line each naming the file (none = intact). Reads every file once."""
        problems = []
        for rel, sha in sorted(self.manifest["files"].items()):
            path = f"{self.path}/{rel}"
            try:
                got = (sha256_file(Path(path)) if self.filesystem is None
                       else _sha256_remote(self.filesystem, path))
            except FileNotFoundError:
                problems.append(f"{self.location}/{rel} is missing")
                continue
            if got != sha:
                problems.append(f"{self.location}/{rel} changed (sha256 differs from {MANIFEST})")
        for part in (KEPT, REJECTED):
            for f in self._listed(part):
                if self.relative(f) not in self.manifest["files"]:
                    problems.append(f"{self.location}/{self.relative(f)} is not in {MANIFEST}")
        return problems

    @property
    def fingerprint(self) -> str:
        """Content fingerprint: a hash of the data files' checksums."""
        return json_fingerprint(self.manifest["files"])

    def files(self, part: str = KEPT) -> list[Path]:
        """The folder's parquet files in `part`: exactly those its manifest lists, else
        `ChangedInputError` (a file removed, or one added after the folder was written)."""
        found = self._listed(part)
        listed = sorted(k for k in self.manifest["files"]
                        if k.startswith(f"{part}/") and k.endswith(".parquet")
                        and "/" not in k[len(part) + 1:])
        have = [self.relative(f) for f in found]
        if have != listed:
            missing = sorted(set(listed) - set(have))
            extra = sorted(set(have) - set(listed))
            what = (f"{self.location}/{missing[0]} is missing" if missing
                    else f"{self.location}/{extra[0]} is not in {MANIFEST}")
            raise ChangedInputError(f"{what}: the folder was changed after it was written. "
                                    "Rerun the stage that wrote it (or restore the file).")
        return found

    def _listed(self, part: str) -> list[Path]:
        if self.filesystem is not None:
            sel = pafs.FileSelector(f"{self.path}/{part}", allow_not_found=True)
            return sorted(Path(i.path) for i in self.filesystem.get_file_info(sel)
                          if i.type == pafs.FileType.File and i.path.endswith(".parquet"))
        return sorted((self.path / part).glob("*.parquet"))

    def parquet_file(self, file: Path) -> pq.ParquetFile:
        """One of `files()` opened for reading (through `filesystem` for a URI folder),
        its size checked against the manifest; reading it through `iter_batches` or
        `read` checks its sha256 too."""
        return self._open_verified(file)[0]

    def _open_verified(self, file: Path) -> tuple[pq.ParquetFile, VerifyingFile]:
        sha, size = self.expected(file)
        name = f"{self.location}/{self.relative(file)}"
        vf = VerifyingFile.open(str(file), self.filesystem, sha, size, name)
        try:
            return pq.ParquetFile(pa.PythonFile(vf, mode="r"), pre_buffer=False), vf
        except (pa.ArrowException, OSError) as exc:
            try:
                vf.finish()  # a changed file says so; else it was written unreadable
            finally:
                vf.close()
            raise DatasetError(f"{name}: not a readable parquet file ({exc})") from exc

    def schema(self, part: str = KEPT) -> pa.Schema:
        files = self.files(part)
        if not files:
            raise DatasetError(f"{self.location}: no parquet files in {part}/")
        pf, vf = self._open_verified(files[0])
        vf.close()
        return pf.schema_arrow

    def count(self, part: str = KEPT) -> int:
        return sum(self.parquet_file(f).metadata.num_rows for f in self.files(part))

    def iter_batches(
        self,
        part: str = KEPT,
        columns: list[str] | None = None,
        batch_size: int = 1024,
    ) -> Iterator[pa.RecordBatch]:
        for f in self.files(part):
            pf, vf = self._open_verified(f)
            with vf.reading():
                yield from pf.iter_batches(batch_size=batch_size, columns=columns)

    def read(self, part: str = KEPT, columns: list[str] | None = None) -> pa.Table:
        files = self.files(part)
        if not files:
            return S.empty_table()
        tables = []
        for f in files:
            pf, vf = self._open_verified(f)
            with vf.reading():
                tables.append(pf.read(columns=columns))
        return pa.concat_tables(tables, promote_options="default")


def _sha256_remote(fs: pafs.FileSystem, path: str, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with fs.open_input_stream(path) as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


# files verified in this process: (path, size, mtime_ns, ctime_ns, inode) -> sha256, so a
# stage's second pass over its input does not hash it again (a write changes ctime)
_VERIFIED: dict[tuple[str, int, int, int, int], str] = {}


class VerifyingFile:
    """A read-only file that hashes the bytes a reader (pyarrow) pulls through it and,
    at `finish()`, the bytes it skipped, then compares the sha256 with the manifest's.

    The hash covers the longest prefix read in order; what a projected or out-of-order
    read skipped is read once more at the end. A file already verified in this process
    (same size, mtime, ctime and inode) is not hashed again.
    """

    def __init__(self, raw: Any, size: int, sha256: str, name: str,
                 key: tuple[str, int, int, int, int] | None) -> None:
        self._raw = raw
        self._size = size
        self._expected = sha256
        self._name = name
        self._key = key
        self._pos = 0
        self._hashed = 0
        self._sha: Any = None if key is not None and _VERIFIED.get(key) == sha256 \
            else hashlib.sha256()

    @classmethod
    def open(cls, path: str, filesystem: pafs.FileSystem | None, sha256: str,
             size: int | None, name: str) -> VerifyingFile:
        """`path` opened, its size checked (`size`: the manifest's, None = unknown)."""
        key = None
        try:
            if filesystem is None:
                raw = open(path, "rb")  # noqa: SIM115 - closed by close()
                st = os.fstat(raw.fileno())
                actual = st.st_size
                key = (path, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
            else:
                raw = filesystem.open_input_file(path)
                actual = raw.size()
        except FileNotFoundError as exc:
            raise ChangedInputError(f"{name} is missing: the folder was changed after it was "
                                    "written. Rerun the stage that wrote it.") from exc
        if size is not None and actual != size:
            raw.close()
            raise ChangedInputError(
                f"{name}: {actual} bytes, but its manifest says {size}: the file changed "
                "after it was written (truncated or edited). Rerun the stage that wrote it.")
        return cls(raw, actual, sha256, name, key)

    # -- the file interface pyarrow's PythonFile uses -------------------------------------
    def read(self, nbytes: int = -1) -> bytes:
        data = self._raw.read() if nbytes is None or nbytes < 0 else self._raw.read(nbytes)
        end = self._pos + len(data)
        if self._sha is not None and self._pos <= self._hashed < end:
            self._sha.update(memoryview(data)[self._hashed - self._pos:])
            self._hashed = end
        self._pos = end
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        self._pos = self._raw.seek(offset, whence)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def size(self) -> int:
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    @property
    def closed(self) -> bool:
        return bool(self._raw.closed)

    def close(self) -> None:
        if not self._raw.closed:
            self._raw.close()

    # -- verification ------------------------------------------------------------------
    def finish(self) -> None:
        """Hash what the reader skipped and compare: `ChangedInputError` on a mismatch."""
        if self._sha is None:
            return
        if self._raw.closed:
            raise ChangedInputError(f"{self._name}: closed before it was verified")
        self._raw.seek(self._hashed)
        while block := self._raw.read(1 << 22):
            self._sha.update(block)
            self._hashed += len(block)
        self._raw.seek(self._pos)
        if self._sha.hexdigest() != self._expected:
            raise ChangedInputError(
                f"{self._name}: its sha256 differs from the one in its manifest: the file "
                "changed after it was written. Rerun the stage that wrote it (or restore "
                "the file); nothing was written.")
        if self._key is not None:
            _VERIFIED[self._key] = self._expected
        self._sha = None

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """Around a read of the whole file (or of the parts a reader wants): verify at the
        end; a parse error of a changed file is reported as the change; close the file."""
        try:
            try:
                yield
            except (pa.ArrowException, OSError) as exc:
                if isinstance(exc, DatasetError):
                    raise
                self.finish()
                raise DatasetError(f"{self._name}: not a readable parquet file ({exc})") from exc
            self.finish()
        finally:
            self.close()


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


def bytes_per_row(datasets: list[Dataset], column: str = "images.list.element.bytes") -> float:
    """The mean uncompressed size of parquet column `column` per kept row, from the files'
    footers (nothing read but metadata); 0.0 when no file has that column."""
    total = rows = 0
    for d in datasets:
        for f in d.files(KEPT):
            meta = d.parquet_file(f).metadata
            for g in range(meta.num_row_groups):
                rg = meta.row_group(g)
                for c in range(rg.num_columns):
                    if rg.column(c).path_in_schema == column:
                        total += rg.column(c).total_uncompressed_size
                        rows += rg.num_rows
    return total / rows if rows else 0.0


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


def open_parquet(path: str | Path, filesystem: Any = None) -> pq.ParquetFile:
    """A parquet file opened for streaming: batch by batch, in bounded memory.

    pyarrow's default `pre_buffer=True` keeps every row group it has read cached
    until the file is closed, so streaming a file of images held all of it.
    """
    return pq.ParquetFile(path, filesystem=filesystem, pre_buffer=False)


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


class HashingSink:
    """A writable file that computes the sha256 of what goes through it (so a worker
    reports its files' checksums without reading them back from remote storage), and
    that closes the stream it was given (a parquet writer leaves a given stream open)."""

    def __init__(self, stream: Any, hashing: bool = True) -> None:
        self._stream = stream
        self._sha = hashlib.sha256() if hashing else None

    def write(self, data: Any) -> int:
        if self._sha is not None:
            self._sha.update(data)
        self._stream.write(data)
        return len(data)

    def flush(self) -> None:
        self._stream.flush()

    def close(self) -> None:
        if not self._stream.closed:
            self._stream.close()

    @property
    def closed(self) -> bool:
        return bool(self._stream.closed)

    def hexdigest(self) -> str:
        assert self._sha is not None, "not hashing"
        return self._sha.hexdigest()


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


def stale_temp_folders(target: Path) -> list[Path]:
    return sorted(target.parent.glob(f".{target.name}.tmp-*"))


def read_manifest(target: str | os.PathLike[str]) -> Manifest | None:
    """The manifest of the complete folder at `target` (path or URI), else None."""
    if is_uri(target):
        fs, inner = _resolve(str(target))
        try:
            if fs.get_file_info(f"{inner}/{MANIFEST}").type == pafs.FileType.File:
                with fs.open_input_stream(f"{inner}/{MANIFEST}") as fh:
                    return manifest_format.parse(fh.read(), f"{target}/{MANIFEST}")
        except OSError as exc:  # unreachable or denied: not "no manifest"
            raise RemoteError(f"{target}: {exc}") from exc
        bucket = inner.split("/", 1)[0]
        if fs.type_name in ("s3", "gcs", "abfs"):  # say so now, not at the upload after the work
            try:
                missing = fs.get_file_info(bucket).type == pafs.FileType.NotFound
            except OSError:  # e.g. no permission to look at the bucket itself
                missing = False
            if missing:
                raise RemoteError(f"{target}: bucket {bucket!r} not found")
        return None
    path = Path(target) / MANIFEST
    return manifest_format.parse(path.read_bytes(), str(path)) if path.is_file() else None


def check_output(out: Path | str, inputs: Iterable[str | os.PathLike[str]] = ()) -> None:
    """The one rule for every folder a command writes: `UnsafeOutputError` unless `out`
    may be replaced and overlaps none of `inputs` (checked before anything is read).

    `out` may replace only nothing, an empty folder, or a folder whose manifest.json says
    it is a curate dataset folder; never a file, never a folder holding a user's files.
    """
    check_no_overlap(out, inputs)
    check_replaceable(out)


def check_replaceable(out: Path | str) -> None:
    """`UnsafeOutputError` unless `out` is absent, an empty folder or a curate dataset
    folder (its manifest.json is a curate manifest)."""
    if is_uri(out):
        _check_replaceable_uri(str(out))
        return
    target = Path(out)
    recover_interrupted_commit(target)
    if not target.exists() and not target.is_symlink():
        return
    if not target.is_dir() or target.is_symlink():
        raise UnsafeOutputError(f"{target}: exists and is not a folder; --out must name a new "
                                "or empty folder or a curate dataset folder. Nothing was "
                                "changed; choose another --out.")
    if not any(target.iterdir()):
        return
    manifest = target / MANIFEST
    try:
        ok = manifest.is_file() and is_curate_manifest(json.loads(manifest.read_bytes()))
    except (ValueError, UnicodeDecodeError):
        ok = False
    if not ok:
        why = (f"its {MANIFEST} is not a curate manifest" if manifest.exists()
               else f"no curate {MANIFEST}")
        raise UnsafeOutputError(
            f"{target}: holds files and is not a curate dataset folder ({why}); curate "
            "replaces only empty folders and its own outputs. Nothing was changed; choose "
            "another --out (or move those files away).")


def _check_replaceable_uri(uri: str) -> None:
    fs, inner = _resolve(uri)
    try:
        if fs.get_file_info(f"{inner}/{MANIFEST}").type == pafs.FileType.File:
            with fs.open_input_stream(f"{inner}/{MANIFEST}") as fh:
                text = fh.read()
            try:
                if is_curate_manifest(json.loads(text)):
                    return
            except (ValueError, UnicodeDecodeError):
                pass
        elif fs.get_file_info(inner).type == pafs.FileType.NotFound:
            return
        else:
            sel = pafs.FileSelector(inner, allow_not_found=True)
            if not fs.get_file_info(sel):
                return
    except OSError as exc:
        raise RemoteError(f"{uri}: {exc}") from exc
    raise UnsafeOutputError(f"{uri}: holds objects and is not a curate dataset folder (no "
                            f"curate {MANIFEST}); nothing was changed; choose another --out.")


def _comparable(location: str | os.PathLike[str]) -> tuple[str, ...] | None:
    """A location as path parts to compare (resolved, symlinks followed); None for a hub id."""
    text = str(location)
    if is_uri(text):
        scheme, _, rest = text.partition("://")
        if scheme == "hf":
            return None
        if scheme == "file":
            return Path(rest.split("?")[0]).resolve().parts
        return (scheme, *[p for p in rest.split("?")[0].split("/") if p])
    return Path(text).expanduser().resolve().parts


def check_no_overlap(out: Path | str, inputs: Iterable[str | os.PathLike[str]]) -> None:
    """`UnsafeOutputError` when `out` is an input, inside one, or holds one."""
    o = _comparable(out)
    for given in inputs:
        i = _comparable(given)
        if o is None or i is None:
            continue
        if o == i:
            how = "is the input"
        elif o[:len(i)] == i:
            how = "is inside the input"
        elif i[:len(o)] == o:
            how = "holds the input"
        else:
            continue
        raise UnsafeOutputError(f"--out {out} {how} {given}: writing it would destroy the "
                                "input. Nothing was read or changed; choose an --out outside "
                                "the inputs.")


def recover_interrupted_commit(target: Path) -> None:
    """Finish what a run killed inside `commit` left: its `.NAME.old-PID` folder (the
    previous output, moved aside) is put back when the new output never arrived, and
    removed when it did. Folders of a process still running are left alone."""
    if is_uri(target):
        return
    target = Path(target)
    try:
        olds = sorted(target.parent.glob(f".{target.name}.old-*"))
    except OSError:
        return
    for old in olds:
        pid = old.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or _pid_alive(int(pid)):
            continue
        if not target.exists() and (old / MANIFEST).is_file():
            os.replace(old, target)
        else:
            shutil.rmtree(old, ignore_errors=True)


def temp_folder_for(target: str | os.PathLike[str]) -> Path:
    """A fresh folder to build `target` in: beside it, or for a URI a local staging folder."""
    if is_uri(target):
        return Path(tempfile.mkdtemp(prefix="curate-staging-"))
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_interrupted_commit(target)
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


def commit(tmp: Path, target: str | os.PathLike[str],
           staged: tuple[str, list[str]] | None = None) -> None:
    """Move a finished temporary folder into place, replacing any older version.

    `staged` (URI targets): (a staging folder on the target's filesystem, the relative
    paths engine workers wrote there), moved into place with the local files."""
    if is_uri(target):
        _upload(tmp, str(target), staged)
        return
    if staged is not None:
        raise ValueError("staged files are for URI targets; workers write local ones into tmp")
    target = Path(target)
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _upload(tmp: Path, uri: str, staged: tuple[str, list[str]] | None = None) -> None:
    """Replace the folder at `uri` with `tmp`'s files (and the `staged` files, moved on the
    target's own filesystem), the manifest last; then remove `tmp`."""
    fs, inner = _resolve(uri)
    try:
        if fs.get_file_info(inner).type != pafs.FileType.NotFound:
            fs.delete_dir(inner)
        if staged is not None:
            staging, rels = staged
            for rel in rels:
                dest = f"{inner}/{rel}"
                fs.create_dir(dest.rsplit("/", 1)[0], recursive=True)
                fs.move(f"{staging}/{rel}", dest)
        local = pafs.LocalFileSystem()
        files = [p for p in sorted(tmp.rglob("*")) if p.is_file() and p.name != MANIFEST]
        for p in [*files, tmp / MANIFEST]:
            dest = f"{inner}/{p.relative_to(tmp).as_posix()}"
            fs.create_dir(dest.rsplit("/", 1)[0], recursive=True)
            pafs.copy_files(str(p), dest, source_filesystem=local, destination_filesystem=fs)
    except OSError as exc:
        raise RemoteError(f"{uri}: upload failed: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_manifest(folder: Path, manifest: Mapping[str, Any]) -> None:
    text = redact(manifest_format.dumps(manifest))  # input URIs may carry keys: never written
    (folder / MANIFEST).write_text(text)


def file_sizes(folder: Path, rels: Iterable[str]) -> dict[str, int]:
    """Size in bytes of each of `rels` (relative paths under `folder`)."""
    return {rel: (folder / rel).stat().st_size for rel in rels}


def checksum_files(folder: Path, skip: set[str] | None = None) -> dict[str, str]:
    """sha256 of every data file under `folder` (not the manifest), by relative path;
    `skip`: relative paths whose checksums are known already."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_file() and p.name != MANIFEST and rel not in (skip or ()):
            out[rel] = sha256_file(p)
    return out
