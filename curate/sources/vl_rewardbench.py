"""VL-RewardBench: `query`, two `response`s, `human_ranking` (rank 0 = preferred)."""

from __future__ import annotations

from typing import Any

from curate.sources.base import (
    Adapter,
    MalformedRow,
    RawPair,
    image_refs,
    record_id,
    register_adapter,
    user,
)
from curate.sources.readers import Record

# id prefix -> fine category; `curate eval` groups these into general / hallucination / reasoning
_PREFIXES = (
    ("hallucination_pair", "povid"),
    ("RLAIF-V", "rlaif-v"),
    ("RLHF-V", "rlhf-v"),
    ("wildvision-battle", "wildvision"),
    ("mathverse", "mathverse"),
    ("mmmu_pro", "mmmu-pro"),
)


def category_of(row_id: str) -> str:
    for prefix, cat in _PREFIXES:
        if row_id.startswith(prefix):
            return cat
    return "vlfeedback"


@register_adapter(order=80)
class VLRewardBench(Adapter):
    kind = "vl-rewardbench"
    default_source = "vl-rewardbench"
    description = "VL-RewardBench eval set (text-only unless --image-root is given)"
    eval_set = True  # every row is kept for the official scorer (curate.sources.eval_sets)

    @property
    def text_only(self) -> bool:
        """Without --image-root the rows' relative image paths cannot be read: the whole set
        is ingested without images, and says so (see curate.sources.eval_sets)."""
        return not self.options.has_image_root

    @property
    def record_by_record(self) -> bool:
        return True  # extra_manifest only reports an option, no state across records

    def extra_manifest(self) -> dict[str, Any]:
        return {"text_only": self.text_only}

    def convert(self, record: Record) -> RawPair:
        d = record.data
        responses = d.get("response")
        ranking = d.get("human_ranking")
        if not isinstance(responses, list) or len(responses) != 2:
            raise MalformedRow("'response' must be a list of two responses")
        if not isinstance(ranking, list) or len(ranking) != 2:
            raise MalformedRow("'human_ranking' must be a list of two ranks")
        row_id = record_id(record, "id")
        meta = {k: d.get(k) for k in ("image_path", "models", "judge", "query_source",
                                      "human_error_analysis") if d.get(k) is not None}
        pair = RawPair(
            source_id=row_id,
            prompt=user(d.get("query")) if d.get("query") is not None else None,
            chosen=None,
            rejected=None,
            category=category_of(row_id),
            meta=meta,
        )
        if ranking[0] == ranking[1]:
            pair.chosen, pair.rejected = responses
            pair.reject = ("ambiguous", f"human_ranking {ranking} is a tie")
            return pair
        best = 0 if ranking[0] < ranking[1] else 1
        pair.chosen, pair.rejected = responses[best], responses[1 - best]
        pair.meta["preferred_index"] = best
        if self.options.has_image_root:
            pair.images = image_refs(d.get("image") or d.get("image_path"))
        elif d.get("image") is not None:
            pair.images = image_refs(d.get("image"))
        return pair
