"""The pairwise (Bradley-Terry) loss and the metrics every eval step reports."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


def pairwise_loss(chosen: torch.Tensor, rejected: torch.Tensor,
                  margin: torch.Tensor | None = None, center_coef: float = 0.0) -> torch.Tensor:
    """mean(-logsigmoid(r_c - r_r - margin)) + center_coef * mean((r_c + r_r)^2).

    The centering term (Eisenstein et al. 2023) pins the reward scale's offset, which
    the pairwise term alone leaves free."""
    diff = chosen.float() - rejected.float()
    if margin is not None:
        diff = diff - margin.to(diff.device, diff.dtype)
    loss = -F.logsigmoid(diff).mean()
    if center_coef:
        loss = loss + center_coef * ((chosen.float() + rejected.float()) ** 2).mean()
    return loss


def pair_metrics(chosen: Sequence[float] | np.ndarray, rejected: Sequence[float] | np.ndarray,
                 sources: Sequence[str] | None = None,
                 margin: Sequence[float] | np.ndarray | None = None) -> dict[str, Any]:
    """loss, accuracy (a tie counts as wrong) with its 95% Wilson interval, mean margin,
    and accuracy per source."""
    from curate.train.evaluate import wilson_interval

    c = np.asarray(chosen, dtype=np.float64)
    r = np.asarray(rejected, dtype=np.float64)
    n = len(c)
    if n == 0:
        return {"pairs": 0}
    m = np.zeros(n) if margin is None else np.asarray(margin, dtype=np.float64)
    diff = c - r
    correct = diff > 0
    lo, hi = wilson_interval(int(correct.sum()), n)
    out: dict[str, Any] = {
        "pairs": n,
        "loss": float(np.mean(np.logaddexp(0.0, -(diff - m)))),  # -logsigmoid, stably
        "accuracy": float(correct.mean()),
        "accuracy_ci95": [lo, hi],
        "ties": int((diff == 0).sum()),
        "mean_margin": float(diff.mean()),
        "mean_chosen": float(c.mean()),
        "mean_rejected": float(r.mean()),
    }
    if sources is not None:
        groups: dict[str, list[bool]] = defaultdict(list)
        for s, ok in zip(sources, correct.tolist(), strict=True):
            groups[s or ""].append(ok)
        out["by_source"] = {s: {"pairs": len(v), "accuracy": float(np.mean(v))}
                            for s, v in sorted(groups.items())}
    return out
