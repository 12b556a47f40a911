"""How far to trust a surrogate's reward margins: calibration, noise rate, P(mislabelled).

From one margin per pair (chosen reward - rejected reward, out of fold when the scores
come from `--kfold`), and optionally the source judge's own score gap:

1. Calibration. Each pair is shown in a seeded random orientation (chosen first or
   rejected first), so both classes exist, and a logistic regression without
   intercept (temperature scaling; with the source gap, a two-feature Platt fit) maps
   the oriented margin to P(the first response is the labelled chosen). Per pair this
   gives `g`: the calibrated probability that its label agrees with the surrogate's
   evidence.
2. Noise rate. Confident learning (`cleanlab.count.estimate_joint`) on the oriented
   labels and the calibrated probabilities estimates the joint distribution of given
   and true labels; its off-diagonal mass is the estimated label-noise rate `eps`,
   and `cleanlab.filter.find_label_issues` names the pairs it takes for mislabelled.
3. P(mislabelled). With labels flipped at rate `eps` independently of content,
   `g = eps + (1 - 2 eps) s`, where `s` is the surrogate's probability that the
   labelled chosen is truly better; so for a pair the surrogate doubts,
   P(flipped | margin) = eps (1 - s) / g = eps (1 - eps - g) / ((1 - 2 eps) g).
   A rule that rejects only pairs with this at least P has expected precision at
   least P; the mean over the pairs it rejects is its expected precision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of k successes in n trials."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    d = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return centre - half, centre + half


@dataclass
class Calibration:
    """The fitted calibration and what it implies, one value per scored pair."""

    coef: list[float]                      # logit weights: margin[, source gap]
    agree: np.ndarray                      # g: P(label agrees | evidence), per pair
    noise_rate: float                      # eps, from cleanlab's estimate_joint
    joint: list[list[float]]               # P(given label i, true label j), oriented
    label_issue: np.ndarray                # cleanlab's find_label_issues, per pair
    p_mislabelled: np.ndarray              # P(flipped | evidence), per pair
    features: list[str] = field(default_factory=lambda: ["margin"])

    def describe(self) -> dict[str, Any]:
        return {"method": "temperature" if len(self.coef) == 1 else "platt",
                "features": self.features, "coef": [round(c, 6) for c in self.coef],
                "noise_joint": [[round(v, 6) for v in row] for row in self.joint]}


def _oriented(n: int, seed: int) -> np.ndarray:
    """+1: the pair is shown chosen first; -1: rejected first (seeded, half each)."""
    o = np.ones(n)
    o[np.random.default_rng(seed).permutation(n)[: n // 2]] = -1
    return o


def fit_calibration(margin: np.ndarray, *, gap: np.ndarray | None = None,
                    seed: int = 0) -> Calibration:
    """Calibrate finite `margin` values (and the source's score `gap`, where given:
    NaN counts as 0) and estimate the noise; see the module docstring."""
    from sklearn.linear_model import LogisticRegression

    n = len(margin)
    if n < 4:
        raise ValueError("calibration needs at least 4 scored pairs")
    feats = [np.asarray(margin, dtype=np.float64)]
    names = ["margin"]
    if gap is not None:
        feats.append(np.nan_to_num(np.asarray(gap, dtype=np.float64), nan=0.0))
        names.append("source_gap")
    x = np.stack(feats, axis=1)
    scale = np.maximum(x.std(axis=0), 1e-12)
    o = _oriented(n, seed)
    y = (o > 0).astype(np.int64)  # 1: the first response is the labelled chosen
    lr = LogisticRegression(fit_intercept=False, C=1e4 if gap is None else 1.0)
    lr.fit(x / scale * o[:, None], y)
    coef = lr.coef_[0] / scale
    z = x @ coef  # calibrated log-odds that the labelled chosen is the better one
    agree = 1.0 / (1.0 + np.exp(-z))
    first = 1.0 / (1.0 + np.exp(-o * z))  # P(first shown is the labelled chosen)
    pred = np.stack([1 - first, first], axis=1)
    joint, issues = _confident_learning(y, pred)
    eps = float(joint[0][1] + joint[1][0])
    return Calibration(coef=[float(c) for c in coef], agree=agree, noise_rate=eps,
                       joint=joint, label_issue=issues,
                       p_mislabelled=p_mislabelled(agree, eps), features=names)


def _confident_learning(labels: np.ndarray, pred_probs: np.ndarray
                        ) -> tuple[list[list[float]], np.ndarray]:
    import warnings

    from cleanlab.count import estimate_joint
    from cleanlab.filter import find_label_issues

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        joint = estimate_joint(labels, pred_probs)
        issues = find_label_issues(labels, pred_probs)
    return [[float(v) for v in row] for row in joint], np.asarray(issues, dtype=bool)


def p_mislabelled(agree: np.ndarray, eps: float) -> np.ndarray:
    """P(a pair's label was flipped | g = `agree`) under flip noise at rate `eps`.

    NaN where `eps` is at least 0.5: the labels would carry no information, and the
    surrogate's evidence cannot tell a flipped pair from a correct one."""
    g = np.clip(np.asarray(agree, dtype=np.float64), 1e-12, 1.0)
    if not 0.0 <= eps < 0.5:
        return np.full(len(g), np.nan)
    return np.clip(eps * (1.0 - eps - g) / ((1.0 - 2.0 * eps) * g), 0.0, 1.0)


def temperature(margin: np.ndarray) -> float:
    """The temperature-scaling weight a of P(label agrees) = sigmoid(a x margin), fitted
    by maximum likelihood on the finite margins (Newton steps on one parameter)."""
    m = np.asarray(margin, dtype=np.float64)
    m = m[np.isfinite(m)]
    if not len(m) or not np.any(m):
        return 1.0
    a = 1.0 / max(float(np.std(m)), 1e-12)
    cap = 1e3 * a  # margins all on one side: the fit would run off to infinity
    for _ in range(100):
        s = 1.0 / (1.0 + np.exp(-a * m))
        grad = float(np.sum((1 - s) * m))
        hess = float(np.sum(s * (1 - s) * m * m)) + 1e-12
        step = grad / hess
        a = min(max(a + step, 1e-6), cap)
        if abs(step) < 1e-9 * max(1.0, abs(a)):
            break
    return a
