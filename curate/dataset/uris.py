"""Folder locations: local paths or pyarrow filesystem URIs, with credentials redacted."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TypeGuard

import pyarrow.fs as pafs

from curate.dataset.errors import DatasetError, RemoteError

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
