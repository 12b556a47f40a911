"""The output rule and the atomic commit: a folder is built beside its target and moved
into place whole (uploaded, data files first and the manifest last, for a URI)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import pyarrow.fs as pafs

from curate.dataset.errors import RemoteError, UnsafeOutputError
from curate.dataset.folder_manifest import is_curate_manifest
from curate.dataset.layout import MANIFEST
from curate.dataset.uris import _resolve, is_uri
from curate.processes import alive


def stale_temp_folders(target: Path) -> list[Path]:
    return sorted(target.parent.glob(f".{target.name}.tmp-*"))


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
    """Another process than this one, still running (a temp folder's writer)."""
    return pid != os.getpid() and alive(pid)


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
