"""Any jsonl / json / parquet / csv with a column map: --map prompt=COL,chosen=COL,..."""

from __future__ import annotations

from typing import Any

from curate.sources.base import (
    Adapter,
    MalformedRow,
    RawPair,
    image_refs,
    messages_from,
    record_id,
    user,
)
from curate.sources.readers import Record

FIELDS = ("prompt", "chosen", "rejected", "image", "id", "category",
          "chosen_score", "rejected_score", "system")


def parse_mapping(text: str | None, fields: tuple[str, ...] = FIELDS) -> dict[str, str]:
    """'prompt=question,chosen=good' -> {'prompt': 'question', 'chosen': 'good'}; keys must be
    in `fields` (another adapter's own fields, e.g. the candidates adapter's)."""
    mapping: dict[str, str] = {}
    if not text:
        return mapping
    for part in text.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise ValueError(f"--map entry {part!r} is not FIELD=COLUMN")
        key, col = (s.strip() for s in part.split("=", 1))
        if key not in fields:
            raise ValueError(f"--map field {key!r} is not one of {', '.join(fields)}")
        mapping[key] = col
    return mapping


def _get(data: dict[str, Any], col: str | None) -> Any:
    """A column value; dotted names reach into nested objects (`chosen.value`)."""
    if col is None:
        return None
    if col in data:
        return data[col]
    cur: Any = data
    for part in col.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _score(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise MalformedRow(f"score {value!r} is not a number") from exc


class Generic(Adapter):
    kind = "generic"
    default_source = "generic"
    description = "any table with --map prompt=COL,chosen=COL,rejected=COL[,image=COL,id=COL,...]"

    def mapping(self) -> dict[str, str]:
        m = {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected", "image": "image"}
        m.update(self.options.mapping)
        return m

    def convert(self, record: Record) -> RawPair:
        m = self.mapping()
        d = record.data
        raw_prompt = _get(d, m["prompt"])
        if isinstance(raw_prompt, list):
            prompt: Any = messages_from(raw_prompt)
        elif raw_prompt is None:
            prompt = None
        else:
            prompt = user(raw_prompt)
        system = _get(d, m.get("system"))
        if isinstance(prompt, list) and isinstance(system, str) and system:
            prompt = [{"role": "system", "content": system}, *prompt]
        used = set(m.values())
        return RawPair(
            source_id=record_id(record, m.get("id", "id")),
            prompt=prompt,
            chosen=_get(d, m["chosen"]),
            rejected=_get(d, m["rejected"]),
            images=image_refs(_get(d, m["image"])),
            chosen_score=_score(_get(d, m.get("chosen_score"))),
            rejected_score=_score(_get(d, m.get("rejected_score"))),
            category=_get(d, m.get("category")),
            meta={k: v for k, v in d.items() if k not in used and not isinstance(v, bytes)},
        )
