"""Skywork/Skywork-Reward-Preference-80K-v0.2: chosen / rejected message lists sharing context."""

from __future__ import annotations

from curate.sources.base import (
    Adapter,
    MalformedRow,
    RawPair,
    messages_from,
    record_id,
    register_adapter,
)
from curate.sources.readers import Record
from curate.sources.scores import source_scores


@register_adapter(order=30)
class SkyworkPref(Adapter):
    kind = "skywork-pref"
    default_source = "skywork-pref"
    description = "Skywork-Reward-Preference-80K (message lists; sub-source kept as category)"

    def convert(self, record: Record) -> RawPair:
        d = record.data
        chosen = messages_from(d.get("chosen"))
        rejected = messages_from(d.get("rejected"))
        if not chosen or not rejected:
            raise MalformedRow("chosen and rejected need at least one message")
        if chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
            raise MalformedRow("chosen and rejected must end with an assistant message")
        if chosen[:-1] != rejected[:-1]:
            raise MalformedRow("chosen and rejected do not share their context")
        chosen_score, rejected_score = source_scores(d)  # when the source has them
        return RawPair(
            source_id=record_id(record, "id"),
            prompt=chosen[:-1],
            chosen=chosen[-1]["content"],
            rejected=rejected[-1]["content"],
            chosen_score=chosen_score,
            rejected_score=rejected_score,
            category=d.get("source"),
        )
