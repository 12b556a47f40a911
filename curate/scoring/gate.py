"""The guard on the score rules: reject only what the surrogate can tell apart.

`gate` takes the pairs the score rules (rm_disagrees, low_margin, low_chosen_score)
mark and keeps a mark only where the probability that the pair is mislabelled
(curate.scoring.calibration), at the least value the data allow (the lower bound over
the noise rate's 95% interval), reaches `min_precision`. It abstains (clears every mark)
when the surrogate's agreement with the labels is not significantly above chance (the
lower end of its 95% Wilson interval at or below 0.5), when its margins are consistent
with no label noise at all (the noise rate's interval reaches 0: a weak surrogate cannot
tell label noise from its own errors), or when no marked pair reaches `min_precision`.
`max_reject_fraction` then keeps at most that share of the pairs marked, the most
probably mislabelled first. `min_precision` 0 turns the guard off (the plain rules),
but the quality figures and their warnings are still computed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from curate.scoring.calibration import fit_calibration, wilson

GATED = ("rm_disagrees", "low_margin", "low_chosen_score")
MIN_PAIRS = 8  # fewer scored pairs: no calibration


def gate(hits: dict[str, np.ndarray], margin: np.ndarray, gap: np.ndarray | None, *,
         min_precision: float, max_reject_fraction: float | None, out_of_fold: bool,
         seed: int = 0, veto: str | None = None, verb: str = "rejected"
         ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Narrow `hits` (rule -> mask; the GATED ones, in place); returns (the lower
    bound of P(mislabelled) per pair: what the guard decides on; cleanlab's label-issue
    mask; the quality record for the manifest).
    `veto`: abstain for this reason (the retraining check found the filter hurts).
    `verb`: what happens to the marked pairs, for the warnings ("rejected", "flagged")."""
    n = len(margin)
    p = np.full(n, np.nan)  # the lower bound: what the guard decides on
    p_hat = np.full(n, np.nan)  # the estimate: what precision to expect
    issue = np.zeros(n, dtype=bool)
    ok = np.isfinite(margin)
    m = margin[ok]
    wins = float(np.sum(m > 0) + 0.5 * np.sum(m == 0))
    lo, hi = wilson(round(wins), int(ok.sum()))
    q: dict[str, Any] = {
        "scored_pairs": int(ok.sum()), "out_of_fold": out_of_fold,
        "oof_accuracy": round(wins / len(m), 6) if len(m) else None,
        "oof_accuracy_ci95": [round(lo, 6), round(hi, 6)],
        "better_than_chance": bool(lo > 0.5),
        "min_precision": min_precision, "max_reject_fraction": max_reject_fraction,
    }
    if ok.sum() >= MIN_PAIRS:
        cal = fit_calibration(m, gap=None if gap is None else gap[ok], seed=seed)
        p[ok], p_hat[ok] = cal.p_mislabelled_lower, cal.p_mislabelled
        issue[ok] = cal.label_issue
        q["calibration"] = cal.describe()
        q["estimated_noise_rate"] = round(cal.noise_rate, 6) if cal.identified else None
        q["estimated_noise_rate_ci95"] = [round(v, 6) for v in cal.noise_rate_ci95]
        q["noise_rate_identified"] = cal.identified
        q["label_issues"] = int(cal.label_issue.sum())  # cleanlab's find_label_issues
    else:
        q["estimated_noise_rate"] = None
        q["estimated_noise_rate_ci95"] = None
        q["noise_rate_identified"] = False
        q["label_issues"] = None
    marked = _union(hits)
    q["marked_by_rules"] = int(marked.sum())
    known = bool(q["noise_rate_identified"])  # else the estimate says nothing: no point value
    q["marked_expected_precision"] = _mean(p_hat, marked) if known else None
    q["marked_expected_precision_lower"] = _mean(p, marked)
    reason = None
    if min_precision > 0:
        reason = veto or _abstain_reason(q, p, marked, min_precision)
        for name in GATED:
            if name in hits:
                hits[name] = np.zeros(n, dtype=bool) if reason else \
                    hits[name] & (np.nan_to_num(p, nan=-1.0) >= min_precision)
    if max_reject_fraction is not None:
        _cap(hits, p, margin, max_reject_fraction, n, q)
    kept_marks = _union(hits)
    q["abstained"] = reason is not None
    q["abstain_reason"] = reason
    q["rejected"] = int(kept_marks.sum())
    q["rejected_fraction"] = round(float(kept_marks.sum()) / n, 6) if n else 0.0
    q["expected_precision"] = _mean(p_hat, kept_marks) if known else None
    q["expected_precision_lower"] = _mean(p, kept_marks)
    q["warnings"] = _warnings(q, verb)
    return p, issue, q


def validation_veto(check: dict[str, Any] | None) -> str | None:
    """Why the guard abstains after the retraining check (KFoldScorer.validate), or None:
    it abstains unless retraining without the pairs raised the surrogates' out-of-fold
    agreement significantly (the lower end of the gain's 95% interval above 0)."""
    if check is None:
        return None
    lo, hi = check["gain_ci95"]
    if lo > 0:
        return None
    return (f"retrained without the {check['dropped_from_training']} pairs it would reject, "
            f"the surrogates agree with the labels {check['accuracy_filtered']:.3f} vs "
            f"{check['accuracy_raw']:.3f} out of fold (gain 95% CI {lo:+.3f} to {hi:+.3f}): "
            "no sign that the filter helps")


def _union(hits: dict[str, np.ndarray]) -> np.ndarray:
    masks = [hits[k] for k in GATED if k in hits]
    return np.logical_or.reduce(masks) if masks else np.zeros(0, dtype=bool)


def _mean(p: np.ndarray, mask: np.ndarray) -> float | None:
    if not mask.any() or not np.isfinite(p[mask]).any():
        return None
    return round(float(np.nanmean(p[mask])), 6)


def _abstain_reason(q: dict[str, Any], p: np.ndarray, marked: np.ndarray,
                    min_precision: float) -> str | None:
    if q["estimated_noise_rate_ci95"] is None:
        return f"too few scored pairs to calibrate ({q['scored_pairs']} < {MIN_PAIRS})"
    if not q["better_than_chance"]:
        lo, hi = q["oof_accuracy_ci95"]
        return (f"the surrogate agrees with the labels on {q['oof_accuracy']:.1%} of pairs "
                f"(95% CI {lo:.1%}-{hi:.1%}): not significantly better than chance")
    lo, hi = q["estimated_noise_rate_ci95"]
    if lo <= 0:
        why = "" if q["noise_rate_identified"] else \
            ": the surrogate cannot tell label noise from its own errors"
        return (f"its margins are consistent with no label noise at all (noise rate, 95% "
                f"interval {lo:.1%}-{hi:.1%}){why}")
    best = float(np.nanmax(p[marked])) if marked.any() and np.isfinite(p[marked]).any() \
        else math.nan
    if not best >= min_precision:
        got = "no pair is marked" if math.isnan(best) else \
            f"the most probably mislabelled marked pair has P = {best:.2f}"
        return f"no pair reaches --min-precision {min_precision:g} ({got})"
    return None


def _cap(hits: dict[str, np.ndarray], p: np.ndarray, margin: np.ndarray, fraction: float,
         n: int, q: dict[str, Any]) -> None:
    marked = _union(hits)
    limit = math.floor(fraction * n + 1e-9)
    q["capped"] = bool(marked.sum() > limit)
    if not q["capped"]:
        return
    idx = np.flatnonzero(marked)
    # most probably mislabelled first; among equal probabilities (or none), lowest margin
    order = idx[np.lexsort((np.nan_to_num(margin[idx], nan=np.inf),
                            -np.nan_to_num(p[idx], nan=-1.0)))]
    allowed = np.zeros(n, dtype=bool)
    allowed[order[:limit]] = True
    for name in GATED:
        if name in hits:
            hits[name] = hits[name] & allowed


def _warnings(q: dict[str, Any], verb: str) -> list[str]:
    out = []
    if q["abstained"]:
        out.append(f"the reward filter abstained and rejected nothing: {q['abstain_reason']}")
    elif q["rejected"]:
        prec = q["expected_precision_lower"]
        if not q["better_than_chance"]:
            out.append(f"{verb} {q['rejected']} pairs on the word of a surrogate that is not "
                       "significantly better than chance")
        if prec is None or prec < 0.5:
            got = "unknown" if prec is None else f"at least {prec:.2f}"
            out.append(f"{verb} {q['rejected']} pairs with an expected precision {got}: "
                       "the data cannot rule out that most of them are labelled correctly "
                       "(raise --min-precision)")
        if not q["out_of_fold"]:
            out.append("the scores are not out of fold (--model, not --kfold): the "
                       "calibration is optimistic if the model saw these pairs")
    return out
