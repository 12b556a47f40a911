"""A dataset folder's `manifest.json` as one typed record, with a format number.

Format 2 (written now) holds the core fields every stage records, a `format` number,
and the stage's own facts under one key, `facts` (dedup's groups, similar's neighbours,
reward's quality record, shard's splits...). Format 1 (no `format` key; curate up to
0.x of December 2026) merged the facts into the top level, where one could overwrite a
core key without a word; `read` upgrades it, and refuses a format newer than this
curate knows, with what to do, instead of reading it as zeros.

`Manifest` is also a mapping over the flat view a format-1 reader saw (core
fields, then each fact by its own name), so `m["rows_kept"]` and `m["reward"]` keep
working while code moves to `m.rows_kept` and `m.facts["reward"]`. A fact may not carry
a core field's name: that is refused when the manifest is built.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Generic, TypeVar, cast, overload

FORMAT = 2
V = TypeVar("V")


class ManifestError(ValueError):
    """A manifest that cannot be read: not curate's, damaged, or of an unknown format."""


class _Core(Generic[V]):
    """A core field of `Manifest`, typed for the checker, stored in the dict itself."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> _Core[V]: ...
    @overload
    def __get__(self, obj: Manifest, objtype: type | None = None) -> V: ...
    def __get__(self, obj: Manifest | None, objtype: type | None = None) -> V | _Core[V]:
        if obj is None:
            return self
        return cast(V, obj.get(self.name))

    def __set__(self, obj: Manifest, value: V) -> None:
        obj[self.name] = value


class Manifest(dict[str, Any]):
    """One stage run's record: a dict of the flat view a format-1 reader saw (core fields,
    then each fact by its own name; `json.dumps` and `==` work as they did), with the core
    fields typed as attributes (`m.rows_kept`) and the stage's own facts as `m.facts`.
    Counts are None only in format-1 manifests that lacked them (hand-made or very old
    ones); a format-2 manifest has them all."""

    stage: _Core[str] = _Core()
    files: _Core[dict[str, str]] = _Core()
    version: _Core[str] = _Core()
    config: _Core[dict[str, Any]] = _Core()
    inputs: _Core[list[dict[str, Any]]] = _Core()
    fingerprint: _Core[str] = _Core()
    rows_in: _Core[int | None] = _Core()
    rows_kept: _Core[int | None] = _Core()
    rows_rejected: _Core[int | None] = _Core()
    rejected_by_reason: _Core[dict[str, int]] = _Core()
    file_sizes: _Core[dict[str, int]] = _Core()
    file_rows: _Core[dict[str, int]] = _Core()
    engine: _Core[dict[str, Any]] = _Core()
    steps: _Core[dict[str, float]] = _Core()
    seconds: _Core[float | None] = _Core()
    inputs_consumed: _Core[dict[str, int] | None] = _Core()

    def __init__(self, stage: str, files: dict[str, str], *, version: str = "",
                 config: dict[str, Any] | None = None,
                 inputs: list[dict[str, Any]] | None = None, fingerprint: str = "",
                 rows_in: int | None = None, rows_kept: int | None = None,
                 rows_rejected: int | None = None,
                 rejected_by_reason: dict[str, int] | None = None,
                 file_sizes: dict[str, int] | None = None,
                 file_rows: dict[str, int] | None = None, engine: dict[str, Any] | None = None,
                 steps: dict[str, float] | None = None, seconds: float | None = None,
                 inputs_consumed: dict[str, int] | None = None,
                 facts: dict[str, Any] | None = None) -> None:
        facts = dict(facts or {})
        clash = sorted(set(facts) & CORE_FIELDS)
        if clash:
            raise ManifestError(f"{stage}: a stage fact may not be named like a core "
                                f"manifest field: {', '.join(clash)}")
        super().__init__(
            stage=stage, version=version, config=config or {}, inputs=inputs or [],
            fingerprint=fingerprint, rows_in=rows_in, rows_kept=rows_kept,
            rows_rejected=rows_rejected, rejected_by_reason=rejected_by_reason or {},
            files=files, file_sizes=file_sizes or {}, file_rows=file_rows or {},
            engine=engine or {}, steps=steps or {}, seconds=seconds)
        if inputs_consumed is not None:
            self["inputs_consumed"] = inputs_consumed
        self.update(facts)

    @property
    def format(self) -> int:
        """The format this record is in (read ones are upgraded): always `FORMAT`."""
        return FORMAT

    @property
    def facts(self) -> dict[str, Any]:
        """The stage's own facts (a copy): every key that is not a core field."""
        return {k: v for k, v in self.items() if k not in CORE_FIELDS}

    def to_json(self) -> dict[str, Any]:
        """The format-2 record manifest.json holds."""
        out = {k: v for k, v in self.items() if k in CORE_FIELDS}
        return {**out, "format": FORMAT, "facts": self.facts}

    def with_facts(self, **facts: Any) -> Manifest:
        """A copy with `facts` added."""
        return coerce({**self, **facts})


CORE_FIELDS = frozenset(k for k, v in vars(Manifest).items() if isinstance(v, _Core))
_COUNTS = ("rows_in", "rows_kept", "rows_rejected")
_TYPES: dict[str, type | tuple[type, ...]] = {
    "stage": str, "files": dict, "version": str, "config": dict, "inputs": list,
    "fingerprint": str, "rows_in": int, "rows_kept": int, "rows_rejected": int,
    "rejected_by_reason": dict, "file_sizes": dict, "file_rows": dict, "engine": dict,
    "steps": dict, "seconds": (int, float), "inputs_consumed": dict, "facts": dict,
}


def from_json(data: Any, where: str) -> Manifest:
    """The manifest in `data` (parsed JSON) read from `where`: validated, a format-1
    record upgraded; ManifestError naming `where` and what to do otherwise."""
    if not (isinstance(data, dict) and isinstance(data.get("stage"), str)
            and isinstance(data.get("files"), dict)
            and all(isinstance(v, str) for v in data["files"].values())):
        raise ManifestError(f"{where}: not a curate dataset manifest (no 'stage' and "
                            "'files'). Rerun the stage that wrote the folder.")
    fmt = data.get("format", 1)
    if not isinstance(fmt, int) or isinstance(fmt, bool) or fmt < 1:
        raise ManifestError(f"{where}: 'format' must be a whole number >= 1, not {fmt!r}")
    if fmt > FORMAT:
        raise ManifestError(
            f"{where}: manifest format {fmt} was written by a newer curate; this one reads "
            f"formats 1 to {FORMAT}. Upgrade curate (pip install -U curate) to read it.")
    record = dict(data)
    record.pop("format", None)
    if fmt == 1:
        facts = {k: record.pop(k) for k in list(record) if k not in CORE_FIELDS}
        record["facts"] = facts
    else:
        missing = [k for k in ("version", "config", "inputs", "fingerprint", *_COUNTS,
                               "rejected_by_reason", "file_sizes", "file_rows", "engine",
                               "steps", "seconds") if k not in record]
        if missing:
            raise ManifestError(f"{where}: format {fmt} manifest lacks {', '.join(missing)}: "
                                "the folder is damaged; run its stage again with --force")
        unknown = sorted(set(record) - CORE_FIELDS - {"facts"})
        if unknown:
            raise ManifestError(f"{where}: unknown top-level manifest keys {unknown} (a stage's "
                                "own facts belong under 'facts'); run its stage again")
    for key, want in _TYPES.items():
        value = record.get(key)
        if value is None:
            continue
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            raise ManifestError(f"{where}: '{key}' should be {_type_name(want)}, not "
                                f"{type(value).__name__} ({value!r:.60}); the folder is "
                                "damaged: run its stage again with --force")
    try:
        return Manifest(**record)
    except ManifestError as exc:
        raise ManifestError(f"{where}: {exc}") from None


def _type_name(want: type | tuple[type, ...]) -> str:
    return "a number" if isinstance(want, tuple) else f"a JSON {want.__name__}"


def parse(text: str | bytes, where: str) -> Manifest:
    """The manifest in `text` (manifest.json's bytes) from `where`."""
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{where}: not valid JSON ({exc}); the folder is damaged. "
                            "Rerun the stage that wrote it.") from None
    return from_json(data, where)


def coerce(manifest: Mapping[str, Any], where: str = "manifest") -> Manifest:
    """`manifest` as a Manifest: itself, or a flat mapping (a format-1 record, or a
    Manifest's flat view with fields replaced: `{**m, "files": ...}`) read as format 1."""
    if isinstance(manifest, Manifest):
        return manifest
    flat = {k: v for k, v in manifest.items() if k != "format"}
    if isinstance(flat.get("facts"), dict):  # a format-2 record as a plain dict
        return from_json(dict(manifest), where)
    return from_json(flat, where)


def dumps(manifest: Mapping[str, Any]) -> str:
    """manifest.json's text: sorted keys, two-space indent, a final newline."""
    return json.dumps(coerce(manifest).to_json(), indent=2, sort_keys=True,
                      ensure_ascii=False, default=str) + "\n"
