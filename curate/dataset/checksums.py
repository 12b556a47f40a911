"""Content fingerprints and sha256 checksums of dataset files (local or on a filesystem)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from curate.dataset.layout import MANIFEST


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


def _sha256_remote(fs: pafs.FileSystem, path: str, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with fs.open_input_stream(path) as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


# files verified in this process: (path, size, mtime_ns, ctime_ns, inode) -> sha256, so a
# stage's second pass over its input does not hash it again (a write changes ctime)


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
