"""TRL's preference formats, as huggingface/trl docs/source/dataset_formats.md defines them.

- standard, explicit prompt:  {"prompt": str, "chosen": str, "rejected": str}
- standard, implicit prompt:  {"chosen": str, "rejected": str}; the shared prefix is the
  prompt (TRL's `extract_prompt`: the common characters, less a space before the split)
- conversational, explicit:   {"prompt": [messages], "chosen": [assistant message],
  "rejected": [assistant message]}
- conversational, implicit:   {"chosen": [messages], "rejected": [messages]}; the shared
  leading messages are the prompt (a string `prompt` column beside them, as in
  UltraFeedback-binarized, is ignored, as TRL's `maybe_extract_prompt` does)
- vision: conversational, message content a list of parts ({"type": "text", "text": ...}
  and {"type": "image"} placeholders), the images in an `images` column.

Scores are kept when the source has them (`score_chosen` / `score_rejected`, or --map).
"""

from __future__ import annotations

from typing import Any

from curate.sources.base import (
    Adapter,
    MalformedRow,
    RawPair,
    image_refs,
    normalise_role,
    record_id,
    register_adapter,
    user,
)
from curate.sources.fields import column_checked, get_path
from curate.sources.readers import Record
from curate.sources.scores import source_scores, to_score

FIELDS = ("prompt", "chosen", "rejected", "images", "id", "category", "chosen_score",
          "rejected_score")
_HINT = ("`trl` reads TRL's preference columns prompt (optional), chosen, rejected, images; "
         "name others with --map chosen=COL,rejected=COL,...")


def content_text(content: Any) -> tuple[str, int]:
    """(text, image placeholders) of a message's content: a string, or TRL's typed parts."""
    if isinstance(content, str):
        return content, 0
    if not isinstance(content, list):
        raise MalformedRow(f"message content is a {type(content).__name__}, "
                           "not a string or a list of parts")
    texts, images = [], 0
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image":
            images += 1
        else:
            raise MalformedRow(f"content part {part!r} is neither text nor an image placeholder")
    return "".join(texts), images  # chat templates join parts without a separator


def read_messages(value: Any, name: str) -> tuple[list[dict[str, str]], int]:
    """Messages with string content, and how many image placeholders they held."""
    if not isinstance(value, list) or not all(isinstance(m, dict) for m in value):
        raise MalformedRow(f"{name} is not a list of messages")
    out, images = [], 0
    for m in value:
        text, n = content_text(m.get("content"))
        out.append({"role": normalise_role(m.get("role")), "content": text})
        images += n
    return out, images


def is_conversational(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(m, dict) and "role" in m for m in value)


def extract_text_prompt(chosen: str, rejected: str) -> tuple[str, str, str]:
    """(prompt, chosen, rejected) from two strings sharing a prefix, as TRL's
    `extract_prompt` splits them (when one string contains the other, the split is at
    the shorter one's end)."""
    idx = 0
    limit = min(len(chosen), len(rejected))
    while idx < limit and chosen[idx] == rejected[idx]:
        idx += 1
    if 0 < idx < limit and chosen[idx - 1] == " ":
        idx -= 1
    return chosen[:idx], chosen[idx:], rejected[idx:]


def _final_response(messages: list[dict[str, str]], name: str) -> str:
    if len(messages) != 1 or messages[0]["role"] != "assistant":
        roles = [m["role"] for m in messages]
        raise MalformedRow(f"{name} must be one assistant message after the prompt, got {roles}")
    return messages[0]["content"]


@register_adapter(order=60)
class TRL(Adapter):
    kind = "trl"
    default_source = "trl"
    description = ("TRL preference datasets: standard or conversational, explicit or implicit "
                   "prompt, vision (typed content parts + images)")
    map_fields = FIELDS

    def field(self, name: str) -> str:
        return self.options.mapping.get(name, name)

    @property
    def record_by_record(self) -> bool:
        return True  # `pairs` only adds a column check per file

    def pairs(self, records: Any) -> Any:
        required = {f: self.field(f) for f in ("chosen", "rejected")}
        required.update({f: p for f, p in self.options.mapping.items() if f not in required})
        return super().pairs(column_checked(records, required, _HINT))

    def convert(self, record: Record) -> RawPair:
        d = record.data
        prompt_raw = get_path(d, self.field("prompt"))
        chosen_raw = get_path(d, self.field("chosen"))
        rejected_raw = get_path(d, self.field("rejected"))
        prompt: list[dict[str, Any]] | None
        if is_conversational(chosen_raw) or is_conversational(rejected_raw):
            prompt, chosen, rejected, placeholders = self._conversational(prompt_raw, chosen_raw,
                                                                          rejected_raw)
        elif isinstance(prompt_raw, list):
            raise MalformedRow("prompt is a message list but chosen / rejected are not")
        elif prompt_raw is None:
            text, chosen, rejected = extract_text_prompt(*self._strings(chosen_raw, rejected_raw))
            prompt, placeholders = (user(text) if text else None), 0
        else:
            prompt, placeholders = user(prompt_raw), 0
            chosen, rejected = chosen_raw, rejected_raw
        images = image_refs(get_path(d, self.field("images")))
        if placeholders and placeholders != len(images):
            raise MalformedRow(f"the messages hold {placeholders} image placeholder(s) but "
                               f"'images' holds {len(images)}")
        chosen_score, rejected_score = source_scores(d)
        if "chosen_score" in self.options.mapping:
            chosen_score = to_score(get_path(d, self.options.mapping["chosen_score"]))
        if "rejected_score" in self.options.mapping:
            rejected_score = to_score(get_path(d, self.options.mapping["rejected_score"]))
        used = {self.field(f) for f in FIELDS} | {"messages", "score_chosen", "score_rejected"}
        return RawPair(
            source_id=record_id(record, self.field("id")),
            prompt=prompt,
            chosen=chosen,
            rejected=rejected,
            images=images,
            chosen_score=chosen_score,
            rejected_score=rejected_score,
            category=get_path(d, self.options.mapping.get("category")),
            meta={k: v for k, v in d.items()
                  if k not in used and isinstance(v, str | int | float | bool)},
        )

    @staticmethod
    def _strings(chosen: Any, rejected: Any) -> tuple[str, str]:
        if not isinstance(chosen, str) or not isinstance(rejected, str):
            raise MalformedRow("without a prompt, chosen and rejected must both be strings or "
                               "both be message lists")
        return chosen, rejected

    @staticmethod
    def _conversational(prompt_raw: Any, chosen_raw: Any, rejected_raw: Any
                        ) -> tuple[list[dict[str, str]], str, str, int]:
        chosen, n_chosen = read_messages(chosen_raw, "chosen")
        rejected, n_rejected = read_messages(rejected_raw, "rejected")
        explicit = is_conversational(prompt_raw)
        if explicit:
            prompt, n_prompt = read_messages(prompt_raw, "prompt")
        else:  # implicit: the shared leading messages
            k = 0
            while k < min(len(chosen), len(rejected)) and chosen[k] == rejected[k]:
                k += 1
            prompt, chosen, rejected = chosen[:k], chosen[k:], rejected[k:]
            n_prompt = sum(content_text(m.get("content"))[1] for m in chosen_raw[:k])
        if n_chosen + n_rejected != (0 if explicit else 2 * n_prompt):
            raise MalformedRow("an image placeholder in a response; images belong to the prompt")
        return (prompt, _final_response(chosen, "chosen"), _final_response(rejected, "rejected"),
                n_prompt)
