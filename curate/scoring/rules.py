"""The rules `curate reward` applies to scored pairs; pure functions over compact keys.

Keys: one row per pair with `pair_id`, `chosen_reward`, `rejected_reward`, `source`,
`category`, `chosen_score`, `rejected_score`. Each rule marks pairs; a pair that
several rules mark gets the first in RULES order as its reason, and every match in
its detail.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

RULES = ("ambiguous", "rm_disagrees", "low_margin", "low_chosen_score", "not_top_margin")
DEFAULT_GROUP = "*"


@dataclass(frozen=True)
class RewardRules:
    """min_margin: margin below it -> low_margin. min_chosen: a quantile q; chosen reward
    below the q-quantile of all chosen rewards -> low_chosen_score. keep_top: group ->
    fraction F (group `*`: every group not named); within each group of `by` (category
    or source) the ceil(F x n) pairs with the largest margins stay, the rest ->
    not_top_margin. disagree: margin < 0 -> rm_disagrees. min_source_gap: the source's
    own chosen_score - rejected_score below it (where both exist) -> ambiguous.

    min_precision: rm_disagrees, low_margin and low_chosen_score reject only pairs whose
    calibrated probability of being mislabelled is at least P, and nothing when the
    surrogate cannot tell (curate.scoring.gate); 0: the plain rules. max_reject_fraction:
    those rules reject at most this share of the pairs. source_scores: the calibration
    also weighs the source's own score gap. seed: the calibration's orientation seed.
    validate: with k-fold surrogates, retrain them without the pairs the guard would
    reject and abstain unless that raises their out-of-fold agreement (the stage does
    it: it needs the surrogates)."""

    min_margin: float | None = None
    min_chosen: float | None = None
    keep_top: dict[str, float] = field(default_factory=dict)
    by: str = "category"
    disagree: bool = False
    min_source_gap: float | None = None
    min_precision: float = 0.6
    max_reject_fraction: float | None = None
    source_scores: bool = False
    seed: int = 0
    validate: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.min_precision <= 1:
            raise ValueError("--min-precision is a probability in [0, 1]")
        if self.max_reject_fraction is not None and not 0 <= self.max_reject_fraction <= 1:
            raise ValueError("--max-reject-fraction is a fraction in [0, 1]")
        if self.min_chosen is not None and not 0 < self.min_chosen < 1:
            raise ValueError("--min-chosen is a quantile in (0, 1)")
        if self.by not in ("category", "source"):
            raise ValueError("--by must be category or source")
        for g, f in self.keep_top.items():
            if not 0 < f <= 1:
                raise ValueError(f"--keep-top {g}={f}: a fraction in (0, 1]")

    @property
    def needs_scores(self) -> bool:
        return (self.min_margin is not None or self.min_chosen is not None
                or bool(self.keep_top) or self.disagree)

    @property
    def gated(self) -> bool:
        """Whether a rule that the precision guard narrows is on."""
        return self.disagree or self.min_margin is not None or self.min_chosen is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_keep_top(values: list[str] | None) -> dict[str, float]:
    """['0.1', 'math=0.3', 'code=0.3'] -> {'*': 0.1, 'math': 0.3, 'code': 0.3}."""
    out: dict[str, float] = {}
    for v in values or []:
        group, _, frac = v.rpartition("=")
        try:
            out[group.strip() or DEFAULT_GROUP] = float(frac)
        except ValueError:
            raise ValueError(f"--keep-top {v!r}: expected F or GROUP=F") from None
    return out


def _col(keys: pa.Table, name: str) -> np.ndarray:
    if name not in keys.column_names:
        return np.full(keys.num_rows, np.nan)
    return np.asarray(keys[name].cast(pa.float64()).to_numpy(zero_copy_only=False),
                      dtype=np.float64)


def _groups(keys: pa.Table, by: str) -> list[str]:
    if by not in keys.column_names:
        return [""] * keys.num_rows
    return [g or "" for g in keys[by].to_pylist()]


@dataclass
class RuleResult:
    """Per pair: the first matching rule (None: none) and a detail naming every match."""

    reasons: list[str | None]
    details: list[str | None]
    summary: dict[str, Any]
    p_mislabelled: np.ndarray | None = None  # per pair, where the guard ran
    label_issue: np.ndarray | None = None    # cleanlab's find_label_issues, per pair


def apply_rules(keys: pa.Table, rules: RewardRules, *, out_of_fold: bool = False,
                veto: str | None = None, flagging: bool = False) -> RuleResult:
    """`out_of_fold`: the scores come from k-fold surrogates (recorded, and warned of
    when not). `veto`: the precision guard abstains for this reason. `flagging`: the
    marked pairs are flagged, not removed (what the warnings say)."""
    n = keys.num_rows
    c, r = _col(keys, "chosen_reward"), _col(keys, "rejected_reward")
    margin = c - r
    hits: dict[str, np.ndarray] = {}
    notes: dict[str, list[str]] = {}
    summary: dict[str, Any] = {}
    with np.errstate(invalid="ignore"):
        if rules.min_source_gap is not None:
            gap = _col(keys, "chosen_score") - _col(keys, "rejected_score")
            hits["ambiguous"] = gap < rules.min_source_gap
            notes["ambiguous"] = [f"source score gap {g:.4g} < {rules.min_source_gap:g}"
                                  for g in gap]
        if rules.disagree:
            hits["rm_disagrees"] = margin < 0
            notes["rm_disagrees"] = [f"reward margin {m:.4g} < 0" for m in margin]
        if rules.min_margin is not None:
            hits["low_margin"] = margin < rules.min_margin
            notes["low_margin"] = [f"reward margin {m:.4g} < {rules.min_margin:g}"
                                   for m in margin]
        if rules.min_chosen is not None:
            finite = c[np.isfinite(c)]
            q = float(np.quantile(finite, rules.min_chosen)) if len(finite) else math.nan
            summary["min_chosen_threshold"] = q
            hits["low_chosen_score"] = c < q
            notes["low_chosen_score"] = [
                f"chosen reward {v:.4g} < {q:.4g} (the {rules.min_chosen:g}-quantile)"
                for v in c]
        if rules.keep_top:
            hits["not_top_margin"], notes["not_top_margin"], summary["keep_top"] = _keep_top(
                keys, margin, rules)
    p = issue = None
    if rules.gated:
        from curate.scoring.gate import gate

        gap = _col(keys, "chosen_score") - _col(keys, "rejected_score") \
            if rules.source_scores else None
        p, issue, summary["quality"] = gate(
            hits, margin, gap, min_precision=rules.min_precision,
            max_reject_fraction=rules.max_reject_fraction, out_of_fold=out_of_fold,
            seed=rules.seed, veto=veto, verb="flagged" if flagging else "rejected")
        for name in ("rm_disagrees", "low_margin", "low_chosen_score"):
            if name in notes and rules.min_precision > 0:  # 0: the plain rules' details
                notes[name] = [f"{t}; P(mislabelled) >= {v:.2f}" if np.isfinite(v) else t
                               for t, v in zip(notes[name], p, strict=True)]
    reasons: list[str | None] = [None] * n
    details: list[str | None] = [None] * n
    for i in range(n):
        matched = [name for name in RULES if name in hits and hits[name][i]]
        if matched:
            reasons[i] = matched[0]
            details[i] = "; ".join(f"{name}: {notes[name][i]}" for name in matched)
    counts = {name: int(h.sum()) for name, h in hits.items()}
    summary["matched_by_rule"] = dict(sorted(counts.items()))
    summary["reason_counts"] = dict(sorted(Counter(x for x in reasons if x).items()))
    return RuleResult(reasons, details, summary, p, issue)


def _keep_top(keys: pa.Table, margin: np.ndarray, rules: RewardRules
              ) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    groups = _groups(keys, rules.by)
    ids = keys["pair_id"].to_pylist()
    hit = np.zeros(len(groups), dtype=bool)
    notes = [""] * len(groups)
    report: dict[str, Any] = {}
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    for g in sorted(members):
        frac = rules.keep_top.get(g, rules.keep_top.get(DEFAULT_GROUP))
        if frac is None:
            continue
        idx = members[g]
        # largest margin first; NaN last; ties by pair_id
        idx.sort(key=lambda i: (-(margin[i]) if np.isfinite(margin[i]) else math.inf, ids[i]))
        keep = math.ceil(frac * len(idx) - 1e-9)
        for rank, i in enumerate(idx):
            if rank >= keep:
                hit[i] = True
                notes[i] = (f"margin {margin[i]:.4g} ranks {rank + 1} of {len(idx)} in "
                            f"{rules.by} {g or '(none)'!r}, which keeps the top {keep} ({frac:g})")
        report[g or "(none)"] = {"pairs": len(idx), "fraction": frac, "kept": min(keep, len(idx))}
    return hit, notes, report
