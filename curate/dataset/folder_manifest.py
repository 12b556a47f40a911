"""A folder's `manifest.json` read and written (the record itself: `curate.manifest`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from curate import manifest as manifest_format
from curate.dataset.errors import DatasetError, RemoteError
from curate.dataset.layout import MANIFEST
from curate.dataset.uris import _resolve, is_uri, redact
from curate.manifest import Manifest


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


def write_manifest(folder: Path, manifest: Mapping[str, Any]) -> None:
    text = redact(manifest_format.dumps(manifest))  # input URIs may carry keys: never written
    (folder / MANIFEST).write_text(text)
