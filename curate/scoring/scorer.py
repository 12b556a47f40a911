"""What `curate reward` needs from a reward model, and adapters to `curate train`'s models.

A scorer has a `fingerprint` (the score-cache key: same fingerprint, same scores) and
`score(pairs)`, which takes canonical pair rows (a pyarrow Table or RecordBatch with
prompt, chosen, rejected, images) and returns (chosen rewards, rejected rewards) as
float64 arrays in row order. Models load lazily, on the first `score` call, so a run
whose scores are all cached never loads one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

Scores = tuple[np.ndarray, np.ndarray]
SCORE_COLUMNS = ["pair_id", "prompt", "chosen", "rejected", "images"]


class Scorer(Protocol):
    @property
    def fingerprint(self) -> str: ...

    def score(self, pairs: pa.Table | pa.RecordBatch) -> Scores: ...

    def describe(self) -> dict[str, Any]: ...


class FunctionScorer:
    """A plain function `pairs -> (chosen, rejected)` as a scorer (tests, heuristics)."""

    def __init__(self, fn: Callable[[pa.Table], Scores], fingerprint: str,
                 name: str = "function") -> None:
        self.fn, self._fingerprint, self.name = fn, fingerprint, name
        self.calls = 0
        self.rows_scored = 0

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def score(self, pairs: pa.Table | pa.RecordBatch) -> Scores:
        self.calls += 1
        self.rows_scored += pairs.num_rows
        c, r = self.fn(_table(pairs))
        return np.asarray(c, dtype=np.float64), np.asarray(r, dtype=np.float64)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.name, "fingerprint": self.fingerprint}


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
    """Adapter: a `curate train` checkpoint (curate.models.reward_model) as a scorer.

    `feature_cache`: score through the pooled-feature cache (right when the head was
    trained on a frozen backbone: the features are already there). `"auto"` uses it when
    the checkpoint did not save its backbone, i.e. a head on a frozen base model.
    `bf16`: True / False force bf16 autocast on / off; None scores in the precision the
    checkpoint was trained in, where the hardware has bf16 (`load_reward_model`'s
    choice). The feature cache keeps bf16 and fp32 features apart.
    """

    def __init__(self, ckpt: str | os.PathLike[str], batch_size: int = 16,
                 feature_cache: Any = "auto", device: str | None = None,
                 bf16: bool | None = None) -> None:
        self.ckpt = Path(ckpt)
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
            return rm.feature_cache(None) if not rm.reward_config.backbone_saved else None
        if use is None or use is False:
            return None
        return rm.feature_cache(None if use is True else use)

    def score(self, pairs: pa.Table | pa.RecordBatch) -> Scores:
        rm = self.model()
        c, r = rm.score_pairs(_table(pairs), batch_size=self.batch_size,
                              feature_cache=self._cache(rm))
        self.rows_scored += pairs.num_rows
        return np.asarray(c, dtype=np.float64), np.asarray(r, dtype=np.float64)

    def describe(self) -> dict[str, Any]:
        return {"kind": "checkpoint", "path": str(self.ckpt), "bf16": self.bf16,
                "fingerprint": self.fingerprint}


def _table(pairs: pa.Table | pa.RecordBatch) -> pa.Table:
    return pa.Table.from_batches([pairs]) if isinstance(pairs, pa.RecordBatch) else pairs
