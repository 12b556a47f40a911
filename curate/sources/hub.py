"""Hugging Face hub inputs (`hf://ORG/NAME`): which revision, and rows with images undecoded.

A hub dataset changes under the same name, so the input's identity is the commit sha
`datasets` resolves (`--revision` picks a branch, tag or sha; default `main`), recorded in
the manifest and in the input fingerprint: a rerun after the dataset changed is not
"up to date". Reads are pinned to that sha, so the rows match the revision recorded.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curate.sources.records import InputError, Record

OFFLINE_CACHE = "auto"  # what `datasets` answers for a dataset read from its offline cache


@dataclass(frozen=True)
class HubSpec:
    """One `hf://` input: the dataset, its config, split, revision and data folder."""

    name: str
    config: str | None = None
    split: str = "train"
    revision: str | None = None
    data_dir: str | None = None

    @property
    def label(self) -> str:
        """'hf://ORG/NAME/CONFIG[SPLIT]' (+ data dir, revision): names rows in messages."""
        return (f"hf://{self.name}" + (f"/{self.config}" if self.config else "")
                + (f"/{self.data_dir}" if self.data_dir else "") + f"[{self.split}]"
                + (f"@{self.revision}" if self.revision else ""))


def resolve_revision(spec: HubSpec) -> str:
    """The commit sha `datasets` resolves for `spec` (`--revision` or `main`).

    A local folder standing in for a hub dataset (`load_dataset` reads a relative path that
    exists before asking the hub) is identified by its files' contents instead; a dataset
    read from the offline cache by `OFFLINE_CACHE` (the hub was not asked)."""
    if os.path.isdir(spec.name):
        return _folder_fingerprint(Path(spec.name))
    try:
        return _hub_sha(spec.name, spec.revision, spec.data_dir)
    except Exception as exc:  # offline, no such dataset or revision, gated
        raise InputError(f"hf://{spec.name}: cannot resolve revision "
                         f"{spec.revision or 'main'} ({type(exc).__name__}: {exc})") from exc


@functools.lru_cache(maxsize=64)
def _hub_sha(name: str, revision: str | None, data_dir: str | None) -> str:
    """Asked once per run: the fingerprint and the read (read twice by two-pass adapters)
    must see the same commit."""
    from datasets.load import dataset_module_factory

    return str(dataset_module_factory(name, revision=revision, data_dir=data_dir).hash)


def _folder_fingerprint(folder: Path) -> str:
    from curate import dataset as D

    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return "local:" + D.json_fingerprint(
        [[str(p.relative_to(folder)), D.fingerprint_file(p)] for p in files])


def undecoded(feature: Any) -> Any:
    """`feature` with every image, top-level or nested (Sequence(Image), List(Image), a
    dict or a list of them), read as {bytes, path} instead of a decoded PIL image."""
    import datasets

    if isinstance(feature, datasets.Image):
        return datasets.Image(decode=False)
    if isinstance(feature, dict):  # Features too
        return type(feature)({k: undecoded(v) for k, v in feature.items()})
    if isinstance(feature, list | tuple):
        return type(feature)(undecoded(v) for v in feature)
    if (dataclasses.is_dataclass(feature) and not isinstance(feature, type)
            and hasattr(feature, "feature")):  # Sequence, List
        return dataclasses.replace(feature, feature=undecoded(feature.feature))
    return feature


def read_hub(spec: HubSpec, revision: str | None = None) -> Iterator[Any]:
    """Stream the records of a hub dataset at `revision` (a resolved sha), images undecoded."""
    import datasets

    pinned = revision if revision and revision != OFFLINE_CACHE and not revision.startswith(
        "local:") else spec.revision
    try:
        ds = datasets.load_dataset(spec.name, spec.config, split=spec.split, streaming=True,
                                   revision=pinned, data_dir=spec.data_dir)
    except Exception as exc:
        raise InputError(f"{spec.label}: cannot load ({type(exc).__name__}: {exc})") from exc
    features = getattr(ds, "features", None)
    if features:
        raw = undecoded(features)
        if raw != features:
            ds = ds.cast(raw)
    for i, row in enumerate(ds):
        yield Record(dict(row), spec.label, i)
