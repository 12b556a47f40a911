"""What a source adapter produces: raw pairs in canonical shape, not yet validated."""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from curate.registry import Registry
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
    where: str = ""  # file:line of the record, for messages about the row


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
            yield self.convert_safely(rec)

    def convert_safely(self, rec: Record) -> RawPair:
        """The per-row boundary: `convert`, where any exception a record raises (not only
        MalformedRow: a RecursionError, an OSError, a TypeError on a value of a type
        nobody expected) becomes that row's rejection, `malformed_row` with the file,
        line and the exception's message, and never the end of the run."""
        if rec.problem is not None:
            return rejected_record(rec, "malformed_row", rec.problem, self.id_keys)
        try:
            pair = self.convert(rec)
        except Exception as exc:  # noqa: BLE001 - one row's failure is that row's rejection
            return rejected_record(rec, "malformed_row", describe(exc), self.id_keys)
        pair.where = pair.where or rec.where
        return pair

    def extra_manifest(self) -> dict[str, Any]:
        return {}

    @property
    def record_by_record(self) -> bool:
        """Whether each record becomes a pair on its own (no state across records), so
        parts of the input can be converted apart (`curate.stages.ingest_parts`)."""
        return (type(self).pairs is Adapter.pairs
                and type(self).extra_manifest is Adapter.extra_manifest)


# KIND -> adapter class, filled by `@register_adapter` as each module of curate.sources is
# imported (`curate/sources/__init__.py` imports them all): the help text, the KIND check
# and the contract tests iterate it
ADAPTERS: Registry[type[Adapter]] = Registry("source adapter")
A = TypeVar("A", bound=type[Adapter])


def register_adapter(order: float = 500) -> Callable[[A], A]:
    """Register an Adapter subclass under its `kind`; `order` places it in help and errors
    (the built-in training sources first, the eval sets, the catch-all `generic` last)."""
    def wrap(cls: A) -> A:
        if not cls.kind:
            raise ValueError(f"{cls.__name__} has no kind")
        ADAPTERS.add(cls.kind, cls, order=order)
        return cls
    return wrap


class MalformedRow(ValueError):
    """A record whose structure the adapter cannot read; it becomes a rejected row."""


class UnsafeValue(MalformedRow):
    """A value that cannot be stored as it is: text with a lone surrogate
    (`invalid_unicode`), or nesting deeper than `MAX_DEPTH` (`malformed_row`)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def describe(exc: BaseException) -> str:
    """An exception as one line for a reject detail (its type, unless MalformedRow)."""
    text = str(exc) if isinstance(exc, MalformedRow) else f"{type(exc).__name__}: {exc}"
    return safe_text(text)[:500]


def rejected_record(rec: Record, reason: str, detail: str,
                    id_keys: tuple[str, ...] = ("id",)) -> RawPair:
    """A record refused as a whole; its raw data (made storable) is kept in `meta.raw`."""
    try:
        source_id = safe_text(record_id(rec, *id_keys))
    except Exception:  # noqa: BLE001 - an id whose str() fails: name the row by file:line
        source_id = default_source_id(rec)
    return RawPair(source_id=source_id, prompt=None, chosen=None, rejected=None,
                   meta={"raw": jsonable(rec.data), "where": rec.where},
                   reject=(reason, f"{safe_text(rec.where)}: {detail}"), where=rec.where)


def default_source_id(rec: Record) -> str:
    from pathlib import Path

    return safe_text(f"{Path(rec.file).name}:{rec.index}")


def record_id(rec: Record, *keys: str) -> str:
    """The source's own id from the first present key, else file:index."""
    for k in keys:
        v = rec.data.get(k)
        if v is not None and str(v) != "":
            return str(v)
    return default_source_id(rec)


_SURROGATE = re.compile("[\ud800-\udfff]")
MAX_DEPTH = 100  # nesting levels `jsonable` keeps (real data nests a handful)


def lone_surrogate(text: str) -> str | None:
    """The first lone surrogate in `text` (JSON's "\\ud800" escapes make them; they are
    not Unicode text and cannot be written as UTF-8), or None."""
    if text.isascii():
        return None
    m = _SURROGATE.search(text)
    return m.group() if m else None


def safe_text(text: str) -> str:
    """`text` with any lone surrogate written as its escape (`\\ud800`)."""
    if lone_surrogate(text) is None:
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def jsonable(obj: Any, strict: bool = False, _depth: int = 0) -> Any:
    """Raw data made JSON-safe for `meta`: bytes are summarised, not copied; text with a
    lone surrogate is escaped, NaN and infinities become text, and nesting deeper than
    `MAX_DEPTH` is cut. `strict`: raise UnsafeValue instead of escaping or cutting."""
    if isinstance(obj, str):
        if strict and lone_surrogate(obj) is not None:
            raise UnsafeValue("invalid_unicode", "a text value holds a lone surrogate "
                              f"({ascii(lone_surrogate(obj))}), which is not Unicode text")
        return safe_text(obj)
    if obj is None or isinstance(obj, bool | int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else repr(obj)
    if isinstance(obj, bytes | bytearray):
        return f"<{len(obj)} bytes>"
    if _depth >= MAX_DEPTH and isinstance(obj, dict | list | tuple):
        if strict:
            raise UnsafeValue("malformed_row", f"a value is nested deeper than {MAX_DEPTH} levels")
        return f"<nested deeper than {MAX_DEPTH} levels>"
    if isinstance(obj, dict):
        return {jsonable(str(k), strict): jsonable(v, strict, _depth + 1) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v, strict, _depth + 1) for v in obj]
    return safe_text(repr(obj))


_DATA_URI = re.compile(r"data:image/[\w.+-]+;base64,", re.I)


def image_bytes(value: Any) -> bytes:
    """The bytes of an inline image: bytes as they are; text (JSON cannot hold bytes, so
    exports write them as base64, sometimes as a `data:image/...;base64,` URI) decoded
    when it is valid base64, else refused."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        text = "".join(value.split())  # MIME base64 breaks lines
        m = _DATA_URI.match(text)
        if m:
            text = text[m.end():]
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise MalformedRow(f"image bytes are text that is not valid base64 ({exc})") from exc
    raise MalformedRow(f"image bytes are a {type(value).__name__}, expected bytes or base64 text")


def image_ref(value: Any) -> ImageRef | None:
    """Accept bytes, a path string (or a base64 `data:image/` URI), or a {bytes, path}
    struct (HF Image, decode=False; `bytes` may be base64 text)."""
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        return ImageRef(data=bytes(value))
    if isinstance(value, str):
        if _DATA_URI.match(value):
            return ImageRef(data=image_bytes(value))
        return ImageRef(path=value) if value else None
    if isinstance(value, dict):
        data = value.get("bytes")
        if data:
            return ImageRef(data=image_bytes(data))
        path = value.get("path")
        if path:
            if not isinstance(path, str):
                raise MalformedRow(f"image path is a {type(path).__name__}, not text")
            return ImageRef(path=path)
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
