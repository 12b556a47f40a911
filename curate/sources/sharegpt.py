"""LLaMA-Factory's sharegpt preference format: `conversations`, `chosen`, `rejected`, `images`."""

from __future__ import annotations

from typing import Any

from curate.sources.base import (
    Adapter,
    MalformedRow,
    RawPair,
    image_refs,
    messages_from,
    record_id,
    register_adapter,
)
from curate.sources.readers import Record


def _response(value: Any) -> Any:
    """A response turn {from, value} / {role, content}, or a bare string."""
    if isinstance(value, dict):
        return value.get("value", value.get("content"))
    return value


@register_adapter(order=50)
class ShareGPT(Adapter):
    kind = "sharegpt"
    default_source = "sharegpt"
    description = "LLaMA-Factory sharegpt-style preference rows (images as paths)"

    def convert(self, record: Record) -> RawPair:
        data = record.data
        turns = data.get("conversations", data.get("messages"))
        if turns is None:
            raise MalformedRow("needs 'conversations' (or 'messages')")
        prompt = messages_from(turns)
        system = data.get("system")
        if isinstance(system, str) and system:
            prompt = [{"role": "system", "content": system}, *prompt]
        extra = {k: v for k, v in data.items()
                 if k not in ("conversations", "messages", "chosen", "rejected", "images",
                              "system", "id")}
        return RawPair(
            source_id=record_id(record, "id"),
            prompt=prompt,
            chosen=_response(data.get("chosen")),
            rejected=_response(data.get("rejected")),
            images=image_refs(data.get("images", data.get("image"))),
            meta=extra,
        )
