"""Reading dataset folders: every data file checked against its manifest as it streams."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from curate import schema as S
from curate.dataset.checksums import _sha256_remote, json_fingerprint, sha256_file
from curate.dataset.commit import recover_interrupted_commit
from curate.dataset.errors import ChangedInputError, DatasetError, RemoteError
from curate.dataset.folder_manifest import parse_manifest
from curate.dataset.layout import KEPT, MANIFEST, REJECTED
from curate.dataset.uris import _resolve, is_uri
from curate.manifest import Manifest


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
