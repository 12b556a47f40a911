"""How far to trust a surrogate's reward margins: the noise rate and P(mislabelled).

From one margin per pair (chosen reward - rejected reward, out of fold when the scores
come from `--kfold`), and optionally the source judge's own score gap:

1. The model. Labels are flipped at an unknown rate `eps`, independently of content;
   the surrogate's evidence `z = w . x` (x: the margin[, the source gap]; no intercept,
   since swapping a pair negates it) is a calibrated log-odds that the labelled chosen is
   truly the better response. Then P(the label is as given | x) = eps + (1 - 2 eps) s,
   s = sigmoid(z): the agreement saturates at 1 - eps, not at 1, for pairs the surrogate
   is sure about. Maximum likelihood over (eps, w) on all scored pairs.
2. Whether the noise can be told apart at all. The profile likelihood of `eps` gives its
   95% interval (likelihood ratio, chi-square with one degree of freedom). A strong
   surrogate pins it down (planted 20% on separable margins: 0.21, interval
   0.175-0.245). A weak one cannot: its margins never reach the saturated region, so
   "much noise, a sharp surrogate" and "no noise, a blunt one" fit equally well (frozen
   MiniLM on hh-rlhf with 10% planted: anything from 0 to 0.42). That is a fact about
   the data, not a fitting problem, and the interval says it; confident learning, used
   here before, reads the surrogate's own errors as label noise and gave 0.45-0.50 for
   every planted rate.
3. P(mislabelled | x) = eps (1 - s) / (eps (1 - s) + (1 - eps) s), per pair, at the
   estimate; and its lower bound, the least value over the noise rates in the interval
   (each with its own fitted w). A rule that rejects only pairs whose lower bound reaches
   P has expected precision at least P (at 95%); where the interval reaches 0 the lower
   bound is 0 everywhere and nothing is rejected.

cleanlab's confident learning (`find_label_issues` on the fitted model's posteriors) is
still recorded per pair (`label_issue`) and as an upper estimate of the noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

NOISE_GRID = np.round(np.arange(0.0, 0.4951, 0.005), 4)  # the noise rates profiled
CHI2_95 = 3.841  # chi-square, one degree of freedom, 95%
IDENTIFIED_WIDTH = 0.2  # a wider interval: no point estimate is reported
FIT_PAIRS = 200_000  # the likelihood is fitted on at most this many pairs (seeded sample)
RIDGE = 1e-4  # keeps w finite when the margins separate the pairs


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
    """The fitted noise model and what it implies, one value per scored pair."""

    coef: list[float]                      # w at the estimate: margin[, source gap]
    noise_rate: float                      # eps, maximum likelihood
    noise_rate_ci95: tuple[float, float]   # its profile-likelihood interval
    p_mislabelled: np.ndarray              # P(flipped | evidence) at the estimate
    p_mislabelled_lower: np.ndarray        # its least value over the interval
    label_issue: np.ndarray                # cleanlab's find_label_issues, per pair
    confident_learning_noise_rate: float   # cleanlab's estimate_joint off-diagonal mass
    features: list[str] = field(default_factory=lambda: ["margin"])

    @property
    def identified(self) -> bool:
        """Whether the data pin the noise rate down (its interval at most 0.2 wide)."""
        lo, hi = self.noise_rate_ci95
        return hi - lo <= IDENTIFIED_WIDTH

    def describe(self) -> dict[str, Any]:
        lo, hi = self.noise_rate_ci95
        return {"method": "noisy-label likelihood", "features": self.features,
                "coef": [round(c, 6) for c in self.coef],
                "noise_rate_mle": round(self.noise_rate, 6),
                "noise_rate_ci95": [round(lo, 6), round(hi, 6)],
                "confident_learning_noise_rate": round(self.confident_learning_noise_rate, 6)}


def fit_calibration(margin: np.ndarray, *, gap: np.ndarray | None = None,
                    seed: int = 0) -> Calibration:
    """Fit the noise model to finite `margin` values (and the source's score `gap`, where
    given: NaN counts as 0); see the module docstring."""
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
    rng = np.random.default_rng(seed)
    fit = x if n <= FIT_PAIRS else x[rng.choice(n, FIT_PAIRS, replace=False)]
    loglik, weights = profile(fit / scale)
    best = int(np.argmax(loglik))
    inside = np.flatnonzero(2 * (loglik[best] - loglik) <= CHI2_95)
    eps = float(NOISE_GRID[best])
    z = x @ (weights[best] / scale)
    p = posterior_flipped(z, eps)
    lower = p  # the estimate is inside the interval; a running minimum over the rest keeps
    for i in inside:  # two arrays of n in memory, not one per noise rate
        if i != best:
            lower = np.minimum(lower, posterior_flipped(x @ (weights[i] / scale),
                                                        float(NOISE_GRID[i])))
    cl_rate, issues = _confident_learning(z, seed)
    return Calibration(
        coef=[float(c) for c in weights[best] / scale], noise_rate=eps,
        noise_rate_ci95=(float(NOISE_GRID[inside].min()), float(NOISE_GRID[inside].max())),
        p_mislabelled=p, p_mislabelled_lower=lower, label_issue=issues,
        confident_learning_noise_rate=cl_rate, features=names)


def profile(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The log-likelihood of the noise model maximised over w, at each rate of
    NOISE_GRID, and the maximising w's (rows), for standardised features `x` (n, d)."""
    from scipy.optimize import minimize
    from scipy.special import expit

    w = np.ones(x.shape[1])
    loglik, weights = [], []
    for eps in NOISE_GRID:
        def neg(w: np.ndarray, eps: float = float(eps)) -> tuple[float, np.ndarray]:
            s = expit(x @ w)
            g = eps + (1 - 2 * eps) * s
            dz = (1 - 2 * eps) * s * (1 - s) / np.maximum(g, 1e-300)
            return (float(-np.sum(np.log(np.maximum(g, 1e-300))) + 0.5 * RIDGE * w @ w),
                    -(x.T @ dz) + RIDGE * w)
        w = minimize(neg, w, jac=True, method="L-BFGS-B").x  # warm start from the last rate
        loglik.append(-neg(w)[0])
        weights.append(w)
    return np.asarray(loglik), np.asarray(weights)


def posterior_flipped(z: np.ndarray, eps: float) -> np.ndarray:
    """P(a pair's label was flipped | evidence z) under flip noise at rate `eps`."""
    from scipy.special import expit

    s = expit(np.asarray(z, dtype=np.float64))
    bad = eps * (1.0 - s)
    return bad / np.maximum(bad + (1.0 - eps) * s, 1e-300)


def _confident_learning(z: np.ndarray, seed: int) -> tuple[float, np.ndarray]:
    """cleanlab on the pairs shown in a seeded random orientation (so both classes
    exist), with the fitted posteriors: its noise estimate and label-issue mask."""
    import warnings

    from cleanlab.count import estimate_joint
    from cleanlab.filter import find_label_issues
    from scipy.special import expit

    o = np.ones(len(z))
    o[np.random.default_rng(seed).permutation(len(z))[: len(z) // 2]] = -1
    labels = (o > 0).astype(np.int64)  # 1: the first response shown is the labelled chosen
    first = expit(o * z)
    pred = np.stack([1 - first, first], axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        joint = estimate_joint(labels, pred)
        issues = find_label_issues(labels, pred)
    return float(joint[0][1] + joint[1][0]), np.asarray(issues, dtype=bool)


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
