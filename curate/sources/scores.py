"""Scores a source's judge gave each response, and whether they agree with its label."""

from __future__ import annotations

import math
from typing import Any

from curate.sources.base import MalformedRow

# where preference datasets keep their judge's scores (UltraFeedback-binarized and its
# TRL copy: score_chosen / score_rejected)
SCORE_COLUMNS = {"chosen_score": ("score_chosen", "chosen_score"),
                 "rejected_score": ("score_rejected", "rejected_score")}


def to_score(value: Any) -> float | None:
    """A score as a float; None when absent or empty; a non-number is a malformed row."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise MalformedRow(f"score {value!r} is not a number")
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise MalformedRow(f"score {value!r} is not a number") from exc


def source_scores(data: dict[str, Any]) -> tuple[float | None, float | None]:
    """(chosen, rejected) scores from the usual columns, when the source has them."""
    found = []
    for field in ("chosen_score", "rejected_score"):
        col = next((c for c in SCORE_COLUMNS[field] if data.get(c) is not None), None)
        found.append(to_score(data[col]) if col else None)
    return found[0], found[1]


def score_problem(chosen: float | None, rejected: float | None,
                  min_gap: float = 0.0) -> tuple[str, str] | None:
    """The rejection a pair's scores call for, if any.

    Chosen scored below rejected contradicts the label (`score_contradicts_label`); equal
    scores, or a lead under `min_gap`, are no preference at all (`ambiguous`), as a judge's
    tie is. Missing or non-finite scores are not judged here."""
    if chosen is None or rejected is None or not (math.isfinite(chosen)
                                                  and math.isfinite(rejected)):
        return None
    if chosen < rejected:
        return ("score_contradicts_label",
                f"chosen scored {chosen:g}, below rejected ({rejected:g})")
    if chosen == rejected or chosen - rejected < min_gap:
        return ("ambiguous", f"chosen scored {chosen:g}, rejected {rejected:g}: "
                f"a lead under --min-score-gap {min_gap:g}" if chosen != rejected
                else f"chosen and rejected both scored {chosen:g}")
    return None
