"""Anthropic HH-RLHF: `chosen` / `rejected` transcripts.

Each is `\\n\\nHuman: ...\\n\\nAssistant: ...`; the shared prefix becomes the prompt.
"""

from __future__ import annotations

import re

from curate.sources.base import Adapter, MalformedRow, RawPair, record_id, register_adapter
from curate.sources.readers import Record

_TURN = re.compile(r"\n\n(Human|Assistant):[ ]?")


def parse_transcript(text: str) -> list[dict[str, str]]:
    """Split a transcript into messages; text before the first marker is refused."""
    if not isinstance(text, str):
        raise MalformedRow(f"transcript is a {type(text).__name__}, not a string")
    parts = _TURN.split(text)
    if parts[0].strip():
        raise MalformedRow("transcript does not start with '\\n\\nHuman:'")
    msgs = []
    for speaker, content in zip(parts[1::2], parts[2::2], strict=True):
        msgs.append({"role": "user" if speaker == "Human" else "assistant", "content": content})
    if not msgs:
        raise MalformedRow("transcript has no Human/Assistant turns")
    return msgs


@register_adapter(order=40)
class HHRLHF(Adapter):
    kind = "hh-rlhf"
    default_source = "hh-rlhf"
    description = "Anthropic HH-RLHF transcripts; the shared prefix becomes the prompt"

    def convert(self, record: Record) -> RawPair:
        data = record.data
        if "chosen" not in data or "rejected" not in data:
            raise MalformedRow("needs 'chosen' and 'rejected' transcripts")
        chosen = parse_transcript(data["chosen"])
        rejected = parse_transcript(data["rejected"])
        if chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
            raise MalformedRow("a transcript does not end with an Assistant turn")
        prompt = chosen[:-1]
        if rejected[:-1] != prompt:
            raise MalformedRow("chosen and rejected differ before their last Assistant turn "
                              "(the transcripts do not share one context)")
        return RawPair(
            source_id=record_id(record, "id"),
            prompt=prompt,
            chosen=chosen[-1]["content"],
            rejected=rejected[-1]["content"],
        )
