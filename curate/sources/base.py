"""What a source adapter produces: raw pairs in canonical shape, not yet validated."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from curate.sources.readers import Record


@dataclass
class ImageRef:
    """An image as the source gives it: bytes in the data, or a path under --image-root."""

    data: bytes | None = None
    path: str | None = None


@dataclass
class RawPair:
    """One candidate row. `reject` (reason, detail) marks a row the adapter already refuses."""

    source_id: str
    prompt: Any  # list of {role, content}; validated later
    chosen: Any
    rejected: Any
    images: list[ImageRef] = field(default_factory=list)
    chosen_score: float | None = None
    rejected_score: float | None = None
    category: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    reject: tuple[str, str] | None = None
    consumed: int = 1  # input records this row stands for (pointwise pairing uses 2)


@dataclass
class AdapterOptions:
    """Options every adapter may read; `mapping` is the generic adapter's column map."""

    source: str | None = None
    mapping: dict[str, str] = field(default_factory=dict)
    config: str | None = None
    has_image_root: bool = False


class Adapter:
    """Turns the records of one source format into RawPairs.

    Subclasses set `kind` and `default_source`, and implement `convert` (one record
    -> one pair). Adapters that must see several records at once (pairing pointwise
    judgments) override `pairs` instead.
    """

    kind: str = ""
    default_source: str = ""
    description: str = ""
    id_keys: tuple[str, ...] = ("id",)  # where the source keeps its own row id

    def __init__(self, options: AdapterOptions | None = None) -> None:
        self.options = options or AdapterOptions()

    @property
    def source(self) -> str:
        return self.options.source or self.default_source

    def convert(self, record: Record) -> RawPair:
        raise NotImplementedError

    def pairs(self, records: Callable[[], Iterator[Record]]) -> Iterator[RawPair]:
        """`records` can be called again to re-read the input (two-pass adapters)."""
        for rec in records():
            try:
                yield self.convert(rec)
            except MalformedRow as exc:
                yield RawPair(
                    source_id=record_id(rec, *self.id_keys),
                    prompt=None,
                    chosen=None,
                    rejected=None,
                    meta={"raw": jsonable(rec.data), "where": rec.where},
                    reject=("malformed_row", f"{rec.where}: {exc}"),
                )

    def extra_manifest(self) -> dict[str, Any]:
        return {}

    @property
    def record_by_record(self) -> bool:
        """Whether each record becomes a pair on its own (no state across records), so
        parts of the input can be converted apart (`curate.stages.ingest_parts`)."""
        return (type(self).pairs is Adapter.pairs
                and type(self).extra_manifest is Adapter.extra_manifest)


class MalformedRow(ValueError):
    """A record whose structure the adapter cannot read; it becomes a rejected row."""


def default_source_id(rec: Record) -> str:
    from pathlib import Path

    return f"{Path(rec.file).name}:{rec.index}"


def record_id(rec: Record, *keys: str) -> str:
    """The source's own id from the first present key, else file:index."""
    for k in keys:
        v = rec.data.get(k)
        if v is not None and str(v) != "":
            return str(v)
    return default_source_id(rec)


def jsonable(obj: Any) -> Any:
    """Raw data made JSON-safe for `meta`: bytes are summarised, not copied."""
    if isinstance(obj, bytes | bytearray):
        return f"<{len(obj)} bytes>"
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    return repr(obj)


def image_ref(value: Any) -> ImageRef | None:
    """Accept bytes, a path string, or a {bytes, path} struct (HF Image, decode=False)."""
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        return ImageRef(data=bytes(value))
    if isinstance(value, str):
        return ImageRef(path=value) if value else None
    if isinstance(value, dict):
        data = value.get("bytes")
        if data:
            return ImageRef(data=bytes(data))
        path = value.get("path")
        if path:
            return ImageRef(path=str(path))
        return None
    raise MalformedRow(f"image is a {type(value).__name__}, expected bytes, a path or a struct")


def image_refs(value: Any) -> list[ImageRef]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        refs = [image_ref(v) for v in value]
        return [r for r in refs if r is not None]
    ref = image_ref(value)
    return [ref] if ref is not None else []


def user(text: Any) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


ROLE_MAP = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "bot": "assistant",
    "model": "assistant",
    "chatgpt": "assistant",
    "system": "system",
    "observation": "tool",
    "function_call": "assistant",
    "tool": "tool",
    "function": "tool",
}


def normalise_role(role: Any) -> str:
    if not isinstance(role, str):
        raise MalformedRow(f"message role is {role!r}")
    return ROLE_MAP.get(role.strip().lower(), role.strip().lower())


def messages_from(turns: Any, role_key: str = "role", content_key: str = "content") -> list[dict]:
    """Messages from a list of {role, content} or sharegpt {from, value} turns."""
    if not isinstance(turns, list):
        raise MalformedRow(f"expected a list of messages, got {type(turns).__name__}")
    out = []
    for t in turns:
        if not isinstance(t, dict):
            raise MalformedRow("a message is not an object")
        role = t.get(role_key, t.get("from", t.get("role")))
        content = t.get(content_key, t.get("value", t.get("content")))
        out.append({"role": normalise_role(role), "content": content})
    return out
