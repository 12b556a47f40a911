"""Any jsonl / json / parquet / csv with a column map: --map prompt=COL,chosen=COL,..."""

from __future__ import annotations

from typing import Any

from curate.sources.base import (
    Adapter,
    RawPair,
    image_refs,
    messages_from,
    record_id,
    register_adapter,
    user,
)
from curate.sources.fields import column_checked, get_path, parse_path
from curate.sources.readers import Record
from curate.sources.scores import to_score

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
        parse_path(col)  # a malformed path is a usage error now, not an empty column later
        mapping[key] = col
    return mapping


@register_adapter(order=1000)
class Generic(Adapter):
    kind = "generic"
    default_source = "generic"
    description = "any table with --map prompt=COL,chosen=COL,rejected=COL[,image=COL,id=COL,...]"
    map_fields = FIELDS
    checked_fields: tuple[str, ...] = ("prompt", "chosen", "rejected")  # columns that must exist

    @property
    def record_by_record(self) -> bool:
        return True  # `pairs` only adds a column check per file

    def pairs(self, records: Any) -> Any:
        """Every record, after checking that the mapped (or default) columns exist."""
        m = self.mapping()
        required = {f: m[f] for f in self.checked_fields}
        required.update(self.options.mapping)
        hint = (f"Name the columns with --map {','.join(f + '=COL' for f in self.checked_fields)}"
                " (nested: a.b, a[0]).")
        return super().pairs(column_checked(records, required, hint))

    def mapping(self) -> dict[str, str]:
        m = {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected", "image": "image"}
        m.update(self.options.mapping)
        return m

    def convert(self, record: Record) -> RawPair:
        m = self.mapping()
        d = record.data
        raw_prompt = get_path(d, m["prompt"])
        if isinstance(raw_prompt, list):
            prompt: Any = messages_from(raw_prompt)
        elif raw_prompt is None:
            prompt = None
        else:
            prompt = user(raw_prompt)
        system = get_path(d, m.get("system"))
        if isinstance(prompt, list) and isinstance(system, str) and system:
            prompt = [{"role": "system", "content": system}, *prompt]
        used = set(m.values())
        return RawPair(
            source_id=record_id(record, m.get("id", "id")),
            prompt=prompt,
            chosen=get_path(d, m["chosen"]),
            rejected=get_path(d, m["rejected"]),
            images=image_refs(get_path(d, m["image"])),
            chosen_score=to_score(get_path(d, m.get("chosen_score"))),
            rejected_score=to_score(get_path(d, m.get("rejected_score"))),
            category=get_path(d, m.get("category")),
            meta={k: v for k, v in d.items() if k not in used and not isinstance(v, bytes)},
        )
