"""allenai/reward-bench: prompt, chosen, rejected, subset (an eval set)."""

from __future__ import annotations

from curate.sources.base import Adapter, RawPair, record_id, register_adapter, user
from curate.sources.readers import Record


@register_adapter(order=70)
class RewardBench(Adapter):
    kind = "rewardbench"
    default_source = "rewardbench"
    description = "RewardBench eval set (subset kept as category)"
    eval_set = True  # every row is kept for the official scorer (curate.sources.eval_sets)

    def convert(self, record: Record) -> RawPair:
        d = record.data
        return RawPair(
            source_id=record_id(record, "id"),
            prompt=user(d.get("prompt")) if d.get("prompt") is not None else None,
            chosen=d.get("chosen"),
            rejected=d.get("rejected"),
            category=d.get("subset"),
            meta={k: d.get(k) for k in ("chosen_model", "rejected_model") if d.get(k) is not None},
        )
