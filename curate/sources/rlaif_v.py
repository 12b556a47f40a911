"""openbmb/RLAIF-V-Dataset: one image, a question, chosen and rejected answers."""

from __future__ import annotations

import json

from curate.sources.base import Adapter, RawPair, image_refs, record_id, register_adapter, user
from curate.sources.readers import Record


@register_adapter(order=10)
class RLAIFV(Adapter):
    kind = "rlaif-v"
    default_source = "rlaif-v"
    description = "openbmb/RLAIF-V-Dataset (image {bytes, path}, question, chosen, rejected)"
    id_keys = ("idx", "id")

    def convert(self, record: Record) -> RawPair:
        d = record.data
        split = d.get("origin_split")
        if isinstance(split, str):
            try:
                split = json.loads(split)
            except json.JSONDecodeError:
                pass
        meta = {
            "ds_name": d.get("ds_name"),
            "origin_dataset": d.get("origin_dataset"),
            "origin_split": split,
            "image_path": d.get("image_path"),
        }
        refs = image_refs(d.get("image"))
        if not refs and d.get("image_path"):
            refs = image_refs(d.get("image_path"))
        return RawPair(
            source_id=record_id(record, *self.id_keys),
            prompt=user(d.get("question")) if d.get("question") is not None else None,
            chosen=d.get("chosen"),
            rejected=d.get("rejected"),
            images=refs,
            category=d.get("ds_name"),
            meta={k: v for k, v in meta.items() if v is not None},
        )
