"""Scorers: what `curate reward` and `curate pairs` need from a reward model, and adapters.

Every scorer has a `fingerprint` (the score-cache key: same fingerprint, same scores)
and `describe()`. It scores one of two ways, or both:
- a `PairScorer` (`curate reward`): `score(pairs)` takes canonical pair rows (a pyarrow
  Table or RecordBatch with prompt, chosen, rejected, images) and returns (chosen
  rewards, rejected rewards) as float64 arrays in row order. A pair's scores may depend
  on the row (k-fold surrogates score each pair with the model that did not see it);
- a `ResponseScorer` (`curate pairs`): `score_responses(items)` scores single (prompt,
  response, images) items, so each is scored once and cached by its content.
A `curate train` checkpoint (`RewardModelScorer`) does both. Models load lazily, on the
first call, so a run whose scores are all cached never loads one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from curate.models.encoding import Item

Scores = tuple[np.ndarray, np.ndarray]
ScoreFn = Callable[[Sequence[Item]], Sequence[float]]  # a score per (prompt, response, images)
SCORE_COLUMNS = ["pair_id", "prompt", "chosen", "rejected", "images"]


class Scorer(Protocol):
    """What every scorer has: `fingerprint` names its scores (same fingerprint, same scores)."""

    @property
    def fingerprint(self) -> str: ...

    def describe(self) -> dict[str, Any]: ...


class PairScorer(Scorer, Protocol):
    def score(self, pairs: pa.Table | pa.RecordBatch) -> Scores: ...


class ResponseScorer(Scorer, Protocol):
    def score_responses(self, items: Sequence[Item]) -> np.ndarray: ...


class _Function:
    """A plain function as a scorer: `fingerprint`, `describe()` and call counts."""

    def __init__(self, fn: Callable[..., Any], fingerprint: str, name: str = "function") -> None:
        self.fn, self._fingerprint, self.name = fn, fingerprint, name
        self.calls = 0
        self.rows_scored = 0

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def describe(self) -> dict[str, Any]:
        return {"kind": self.name, "fingerprint": self.fingerprint}


class FunctionScorer(_Function):
    """A plain function `pairs -> (chosen, rejected)` as a PairScorer (tests, heuristics)."""

    fn: Callable[[pa.Table], Scores]

    def score(self, pairs: pa.Table | pa.RecordBatch) -> Scores:
        self.calls += 1
        self.rows_scored += pairs.num_rows
        c, r = self.fn(_table(pairs))
        return np.asarray(c, dtype=np.float64), np.asarray(r, dtype=np.float64)


class ResponseFunctionScorer(_Function):
    """A plain function `items -> scores` (a `ScoreFn`) as a ResponseScorer (tests,
    heuristics, APIs)."""

    fn: ScoreFn

    def score_responses(self, items: Sequence[Item]) -> np.ndarray:
        self.calls += 1
        self.rows_scored += len(items)
        return np.asarray(self.fn(list(items)), dtype=np.float64)


def checkpoint_fingerprint(ckpt: str | os.PathLike[str]) -> str:
    """A content hash of a reward-model checkpoint, without loading it.

    `curate train` checkpoints hold the backbone's weight hash in `reward_config.json`,
    so that file plus the value head identify the model; other checkpoints (e.g.
    Skywork-VL-Reward as published) are hashed over every config and weight file.
    """
    path = Path(ckpt)
    if not (path / "value_head.safetensors").is_file():
        raise FileNotFoundError(f"{path}: no value_head.safetensors; not a reward-model "
                                "checkpoint (train one with `curate train`)")
    names = ["value_head.safetensors", "reward_config.json"]
    cfg = path / "reward_config.json"
    if not cfg.is_file() or not json.loads(cfg.read_text()).get("backbone_fingerprint"):
        names = sorted(p.name for p in path.iterdir() if p.is_file()
                       and p.suffix in (".safetensors", ".json"))
    h = hashlib.sha256()
    for name in names:
        f = path / name
        if f.is_file():
            h.update(name.encode())
            with open(f, "rb") as fh:
                while block := fh.read(1 << 20):
                    h.update(block)
    return h.hexdigest()[:32]


class RewardModelScorer:
    """Adapter: a `curate train` checkpoint (curate.models.reward_model) as a PairScorer
    (`RewardModel.score_pairs`) and a ResponseScorer (`RewardModel.score_batch`, batched
    by length).

    `feature_cache`: score through the pooled-feature cache (right when the head was
    trained on a frozen backbone: the features are already there). `"auto"` uses it when
    the checkpoint did not save its backbone, i.e. a head on a frozen base model.
    `feature_root`: that cache's root folder (None: `$CURATE_CACHE/features` or
    `~/.cache/curate/features`, read where the model loads); `spec()` fixes it, so an
    engine worker uses the driver's cache whatever its own environment says.
    `bf16`: True / False force bf16 autocast on / off; None scores in the precision the
    checkpoint was trained in, where the hardware has bf16 (`load_reward_model`'s
    choice). The feature cache keeps bf16 and fp32 features apart.
    """

    def __init__(self, ckpt: str | os.PathLike[str], batch_size: int = 16,
                 feature_cache: Any = "auto", device: str | None = None,
                 bf16: bool | None = None, feature_root: str | None = None) -> None:
        self.ckpt = Path(ckpt)
        self.feature_root = feature_root
        self.batch_size = batch_size
        self.feature_cache = feature_cache
        self.device = device
        self.bf16 = bf16  # autocast; part of the fingerprint, since it moves the scores
        fp = checkpoint_fingerprint(self.ckpt)
        self._fingerprint = fp if bf16 is None else \
            hashlib.sha256(f"{fp}:bf16={bf16}".encode()).hexdigest()[:32]
        self._model: Any = None
        self.rows_scored = 0

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def model(self) -> Any:
        if self._model is None:
            import torch

            from curate.models.reward_model import load_reward_model

            device = self.device or ("cuda" if torch.cuda.is_available() else None)
            self._model = load_reward_model(self.ckpt, device=device)
            if self.bf16 is not None:  # None: as the checkpoint was trained
                self._model.autocast_dtype = torch.bfloat16 if self.bf16 else None
        return self._model

    def _cache(self, rm: Any) -> Any:
        use = self.feature_cache
        if isinstance(use, str) and use == "auto":
            return None if rm.reward_config.backbone_saved else rm.feature_cache(self.feature_root)
        if use is None or use is False:
            return None
        return rm.feature_cache(self.feature_root if use is True else use)

    def score(self, pairs: pa.Table | pa.RecordBatch) -> Scores:
        rm = self.model()
        c, r = rm.score_pairs(_table(pairs), batch_size=self.batch_size,
                              feature_cache=self._cache(rm))
        self.rows_scored += pairs.num_rows
        return np.asarray(c, dtype=np.float64), np.asarray(r, dtype=np.float64)

    def score_responses(self, items: Sequence[Item]) -> np.ndarray:
        rm = self.model()
        scores = rm.score_batch(list(items), batch_size=self.batch_size,
                                feature_cache=self._cache(rm))
        self.rows_scored += len(items)
        return np.asarray(scores, dtype=np.float64)

    def describe(self) -> dict[str, Any]:
        return {"kind": "checkpoint", "path": str(self.ckpt), "bf16": self.bf16,
                "fingerprint": self.fingerprint}

    def spec(self) -> CheckpointSpec:
        """What an engine worker builds the same scorer from (the model is not shipped)."""
        use = self.feature_cache
        if isinstance(use, os.PathLike):
            use = str(use)
        if not (use is None or isinstance(use, bool | str)):
            raise ValueError("a scorer with a FeatureCache object cannot run in engine "
                             "workers: give its root folder")
        root = self.feature_root
        if root is None and (use is True or use == "auto"):
            from curate.models.feature_cache import default_cache_root

            root = str(default_cache_root())
        return CheckpointSpec(str(self.ckpt), self.batch_size, self.device, self.bf16, use,
                              root)


@dataclass(frozen=True)
class CheckpointSpec:
    """A picklable description of a `RewardModelScorer`: what an engine worker (a Ray actor
    under `curate pairs --engine ray`) builds its own copy from: checkpoint folder, batch
    size, device (None: a GPU where the worker has one), bf16 autocast (None: as trained),
    the feature-cache setting and root folder."""

    ckpt: str
    batch_size: int = 16
    device: str | None = None
    bf16: bool | None = None
    feature_cache: Any = "auto"
    feature_root: str | None = None

    def build(self) -> RewardModelScorer:
        return RewardModelScorer(self.ckpt, batch_size=self.batch_size,
                                 feature_cache=self.feature_cache, device=self.device,
                                 bf16=self.bf16, feature_root=self.feature_root)


def _table(pairs: pa.Table | pa.RecordBatch) -> pa.Table:
    return pa.Table.from_batches([pairs]) if isinstance(pairs, pa.RecordBatch) else pairs
