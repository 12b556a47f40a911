"""Out-of-fold scores from K surrogate reward models trained with `curate train`.

Pairs are split into K folds, stratified by source (seeded, independent of input
order); surrogate k trains on the other K-1 folds and scores fold k, so no pair is
scored by a model that saw its label. Each surrogate's rewards are centred on its
fold's mean (pairwise training fixes rewards only up to a constant), so chosen
rewards from different folds can share one quantile threshold; margins are
unchanged. With `freeze: backbone` the backbone features come from the on-disk
feature cache, computed once for all folds.

`ensemble` N > 1 repeats the whole k-fold run N times, member e with fold-split seed
and training seed shifted by e (so each pair is still scored only by models that did
not see it), and averages the members' calibrated log-odds: each member's centred
rewards are scaled by its temperature (the logistic fit of its out-of-fold margins,
curate.scoring.calibration.temperature) before the mean, so a member with sharper
margins does not outvote a better-calibrated one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate import dataset as D
from curate.scoring.scorer import RewardModelScorer, Scores, _table
from curate.splits import shuffle_rank

# settings that change where files go or what is logged, not the trained model
_NOT_IN_KEY = ("feature_cache", "eval_every", "save_every", "keep_state", "num_workers",
               "eval_batch_size", "feature_batch_size")


def assign_folds(pair_ids: pa.Array | pa.ChunkedArray, sources: Sequence[str], k: int,
                 seed: int) -> np.ndarray:
    """Fold of each row: the seeded shuffle (curate.splits.shuffle_rank, as `curate shard`
    deals), dealt round-robin within each source, so every fold has each source's share."""
    rank = shuffle_rank(pair_ids, seed)
    src = np.asarray(sources, dtype=object)
    folds = np.empty(len(rank), dtype=np.int64)
    for s in sorted(set(sources)):
        idx = np.flatnonzero(src == s)
        folds[idx[np.argsort(rank[idx], kind="stable")]] = np.arange(len(idx)) % k
    return folds


class KFoldScorer:
    """Trains K surrogates on first use, then answers every pair from their OOF scores.

    `data`: the dataset folders whose kept rows are scored (all of them: out-of-fold
    scores need the whole set). `surrogates`: where fold checkpoints go (kept); None:
    a temporary folder, removed after scoring.
    """

    def __init__(self, data: Sequence[str | os.PathLike[str]], model: str, k: int,
                 train_config: Any = None, *, seed: int = 0, freeze: str | None = None,
                 surrogates: str | os.PathLike[str] | None = None, batch_size: int = 16,
                 quiet: bool = True, ensemble: int = 1, device: str | None = None,
                 bf16: bool | None = None) -> None:
        from curate.train.config import load_config

        if k < 2:
            raise ValueError("--kfold needs at least 2 folds")
        if ensemble < 1:
            raise ValueError("--ensemble needs at least 1 member")
        self.ensemble = ensemble
        self.datasets = [D.Dataset.open(p) for p in data]
        self.model, self.k, self.seed = model, k, seed
        self.cfg = load_config(train_config, freeze=freeze, bf16=bf16)
        self.device = device  # not in the key: the device does not move the scores
        self.surrogates = Path(surrogates) if surrogates else None
        self.batch_size, self.quiet = batch_size, quiet
        self._scores: dict[str, tuple[float, float]] | None = None
        self.folds: list[dict[str, Any]] = []
        self.rows_scored = 0
        cfg = {k_: v for k_, v in self.cfg.to_dict().items() if k_ not in _NOT_IN_KEY}
        key = {"kfold": k, "seed": seed, "model": model, "train_config": cfg,
               "inputs": [d.fingerprint for d in self.datasets]}
        if ensemble > 1:  # a single member keeps the fingerprint (and caches) it had
            key["ensemble"] = ensemble
        self._fingerprint = D.json_fingerprint(key)[:32]

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def describe(self) -> dict[str, Any]:
        return {"kind": "kfold", "k": self.k, "seed": self.seed, "model": self.model,
                "ensemble": self.ensemble, "train_config": self.cfg.to_dict(),
                "fingerprint": self.fingerprint}

    def score(self, pairs: pa.Table | pa.RecordBatch) -> Scores:
        if self._scores is None:
            self._fit()
        assert self._scores is not None
        ids = _table(pairs)["pair_id"].to_pylist()
        missing = [p for p in ids if p not in self._scores]
        if missing:
            raise KeyError(f"k-fold scores cover the input datasets only; {len(missing)} "
                           f"pairs are not in them (first: {missing[0]})")
        self.rows_scored += len(ids)
        got = np.array([self._scores[p] for p in ids], dtype=np.float64).reshape(-1, 2)
        return got[:, 0], got[:, 1]

    def _fit(self) -> None:
        from curate.scoring.calibration import temperature

        table = pa.concat_tables([d.read() for d in self.datasets], promote_options="default")
        work = self.surrogates or Path(tempfile.mkdtemp(prefix="curate-kfold-"))
        ids = table["pair_id"].to_pylist()
        total = np.zeros((len(ids), 2))
        try:
            for e in range(self.ensemble):
                folder = work if self.ensemble == 1 else work / f"member-{e}"
                scores = self._fit_member(table, folder, e)
                got = np.array([scores[p] for p in ids], dtype=np.float64).reshape(-1, 2)
                if self.ensemble > 1:
                    t = temperature(got[:, 0] - got[:, 1])
                    for f in self.folds[-self.k:]:
                        f["temperature"] = round(t, 6)
                    got = got * t
                total += got / self.ensemble
        finally:
            if self.surrogates is None:
                shutil.rmtree(work, ignore_errors=True)
        self._scores = {p: (float(c), float(r)) for p, (c, r) in zip(ids, total, strict=True)}

    def validate(self, drop: set[str], margins: dict[str, float]) -> dict[str, Any]:
        """Would training without `drop` make a better model? Retrains each fold's
        surrogate (member 0's split) without the `drop` pairs and scores its held-out
        fold, all of it, against the given labels; `margins`: the unfiltered out-of-fold
        margins by pair_id. Under label noise independent of content, agreement with
        the noisy labels rises and falls with accuracy on the true ones, so a filter
        that lowers it would hurt."""
        from curate.train import train_reward_model

        table = pa.concat_tables([d.read() for d in self.datasets], promote_options="default")
        folds = assign_folds(table["pair_id"], table["source"].to_pylist(), self.k, self.seed)
        ids = np.asarray(table["pair_id"].to_pylist(), dtype=object)
        dropped = np.isin(ids, list(drop))
        before, after = [], []
        work = Path(tempfile.mkdtemp(prefix="curate-validate-"))
        t0 = time.perf_counter()
        try:
            for f in range(self.k):
                held = folds == f
                train_t = table.filter(pa.array(~held & ~dropped))
                eval_t = table.filter(pa.array(held))
                ckpt = work / f"fold-{f}"
                metrics = train_reward_model(train_t, self.model, ckpt, self.cfg,
                                             eval_data=eval_t, quiet=True,
                                             device=self.device)
                frozen = self.cfg.freeze == "backbone"
                scorer = RewardModelScorer(
                    ckpt, self.batch_size,
                    feature_cache=(self.cfg.feature_cache or True) if frozen else None,
                    device=self.device, bf16=bool(metrics.get("bf16")))
                c, r = scorer.score(eval_t)
                after.append(c - r > 0)
                before.append(np.array([margins[p] > 0 for p in ids[held]]))
                del scorer
        finally:
            shutil.rmtree(work, ignore_errors=True)
        out = paired_gain(np.concatenate(before), np.concatenate(after))
        out["dropped_from_training"] = int(dropped.sum())
        out["seconds"] = round(time.perf_counter() - t0, 3)
        return out

    def _fit_member(self, table: pa.Table, work: Path, member: int
                    ) -> dict[str, tuple[float, float]]:
        import dataclasses

        from curate.progress import console
        from curate.train import train_reward_model

        folds = assign_folds(table["pair_id"], table["source"].to_pylist(), self.k,
                             self.seed + member)
        cfg = dataclasses.replace(self.cfg, seed=self.cfg.seed + member)
        scores: dict[str, tuple[float, float]] = {}
        for f in range(self.k):
            t0 = time.perf_counter()
            held = pc.equal(pa.array(folds), f)
            train_t, eval_t = table.filter(pc.invert(held)), table.filter(held)
            if not self.quiet:
                who = f"member {member + 1}/{self.ensemble}, " if self.ensemble > 1 else ""
                console().print(f"{who}fold {f + 1}/{self.k}: training on {train_t.num_rows} "
                                f"pairs, scoring {eval_t.num_rows}", highlight=False)
            ckpt = work / f"fold-{f}"
            metrics = train_reward_model(train_t, self.model, ckpt, cfg,
                                         eval_data=eval_t, quiet=True, device=self.device)
            # a frozen backbone: the trainer cached every feature, held-out fold included
            frozen = cfg.freeze == "backbone"
            scorer = RewardModelScorer(
                ckpt, self.batch_size,
                feature_cache=(cfg.feature_cache or True) if frozen else None,
                device=self.device,
                bf16=bool(metrics.get("bf16")))  # the precision it was trained in
            c, r = scorer.score(eval_t) if eval_t.num_rows else (np.zeros(0), np.zeros(0))
            offset = float(np.mean(np.concatenate([c, r]))) if len(c) else 0.0
            c, r = c - offset, r - offset
            for pid, cv, rv in zip(eval_t["pair_id"].to_pylist(), c.tolist(), r.tolist(),
                                   strict=True):
                scores[pid] = (cv, rv)
            record: dict[str, Any] = {
                "fold": f, "train_pairs": train_t.num_rows, "scored_pairs": eval_t.num_rows,
                "oof_accuracy": float(np.mean(c > r)) if len(c) else None,
                "train_accuracy": _last(metrics, "train_accuracy"),
                "offset": round(offset, 6), "seconds": round(time.perf_counter() - t0, 3),
                "checkpoint": str(ckpt) if self.surrogates else None}
            if self.ensemble > 1:
                record["member"] = member
            self.folds.append(record)
            del scorer
        return scores


def paired_gain(before: np.ndarray, after: np.ndarray) -> dict[str, Any]:
    """Per-pair correctness of two models on the same pairs: accuracies, the difference
    and its 95% interval (normal approximation of the paired difference)."""
    d = after.astype(np.float64) - before.astype(np.float64)
    n = len(d)
    half = 1.96 * float(np.std(d, ddof=1)) / np.sqrt(n) if n > 1 else float("inf")
    mean = float(np.mean(d)) if n else 0.0
    return {"pairs": n, "accuracy_raw": round(float(np.mean(before)), 6) if n else None,
            "accuracy_filtered": round(float(np.mean(after)), 6) if n else None,
            "gain": round(mean, 6), "gain_ci95": [round(mean - half, 6), round(mean + half, 6)]}


def _last(metrics: dict[str, Any], key: str) -> float | None:
    for point in reversed(metrics.get("history", [])):
        if key in point:
            return float(point[key])
    return None
