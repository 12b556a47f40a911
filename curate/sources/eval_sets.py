"""Eval sets keep every row their official scorer scores.

A benchmark's score is correct / total over all its rows, so a row dropped at ingest
changes the denominator against the official numbers. For an eval set (an adapter with
`eval_set = True`), what would reject a training row is recorded in the row's `meta`
(`eval_issues`) and the row kept: an empty or identical response, a prompt with no text
(the scorer still scores the pair; a tie counts as wrong), and an image that cannot be
used (the row is kept without it). What the adapter itself refuses (a malformed row, a
tie in the human ranking) stays rejected, and `curate eval` refuses a folder that lost
rows, so a shrunk eval set is never scored silently.

Images: without `--image-root`, VL-RewardBench is ingested text-only as a whole (its rows
name image files by relative path): the manifest says `text_only: true` and `curate eval`
labels the score text-only. This is the rule for eval sets; `generic` rejects a training
row whose relative image path cannot be resolved (`no_image_root`), since a training pair
without its image is a different pair.
"""

from __future__ import annotations

from typing import Any

# reasons a training row is rejected for that an official scorer still scores
TOLERATED = frozenset({"empty_response", "identical_responses", "no_prompt"})


def note(meta: dict[str, Any], reason: str, detail: str) -> None:
    meta.setdefault("eval_issues", []).append(f"{reason}: {detail}")


def tolerated(problem: tuple[str, str] | None, adapter_reject: tuple[str, str] | None,
              prompt: Any, meta: dict[str, Any]) -> tuple[str, str] | None:
    """`problem`, or None (noted in `meta`) when an eval set keeps the row anyway."""
    if problem is None or problem is adapter_reject or problem[0] not in TOLERATED:
        return problem
    if problem[0] == "no_prompt" and not prompt:
        return problem  # nothing to show the scorer
    note(meta, *problem)
    return None
