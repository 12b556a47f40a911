"""Reward scores stored by (scorer fingerprint, pair_id), so a threshold change rescores nothing.

Two places hold them:
- the dataset folder `curate reward` wrote last time: its rows carry `chosen_reward` /
  `rejected_reward` and its manifest the scorer fingerprint (`reward.score_key`), so
  rerunning into the same `--out` with other rules reuses every score;
- optionally a cache folder shared by runs (`--score-cache DIR`): each run adds
  `DIR/<fingerprint>/scores-<sha>.parquet` (pair_id, chosen_reward, rejected_reward).
Lookups use sorted byte-string ids and `searchsorted`, so memory stays at a few dozen
bytes a pair and no per-batch hash table is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate import dataset as D

SCORE_FIELDS = [pa.field("pair_id", pa.string()), pa.field("chosen_reward", pa.float64()),
                pa.field("rejected_reward", pa.float64())]


def _ids(values: pa.Array | pa.ChunkedArray | list[str]) -> np.ndarray:
    items = values.to_pylist() if hasattr(values, "to_pylist") else values
    return np.array([s.encode() for s in items], dtype="S") if items else np.zeros(0, "S1")


class ScoreCache:
    def __init__(self, key: str, previous: str | os.PathLike[str] | None = None,
                 folder: str | os.PathLike[str] | None = None) -> None:
        self.key = key
        self.folder = Path(folder) / key if folder else None
        tables = []
        self.previous_info: dict[str, Any] = {}  # the previous run's manifest["reward"]
        if previous is not None and (Path(previous) / D.MANIFEST).is_file():
            prev = D.Dataset(Path(previous))
            if prev.manifest.get("reward", {}).get("score_key") == key:
                self.previous_info = prev.manifest["reward"]
                tables += [_read_scores(f) for part in (D.KEPT, D.REJECTED)
                           for f in prev.files(part)]
        if self.folder is not None and self.folder.is_dir():
            tables += [_read_scores(f) for f in sorted(self.folder.glob("*.parquet"))]
        tables = [t for t in tables if t is not None]
        t = pa.concat_tables(tables) if tables else pa.schema(SCORE_FIELDS).empty_table()
        ok = pc.and_(pc.is_valid(t["chosen_reward"]), pc.is_valid(t["rejected_reward"]))
        t = t.filter(ok)
        ids = _ids(t["pair_id"])
        order = np.argsort(ids, kind="stable")
        self._ids = ids[order]
        self._scores = np.stack([t["chosen_reward"].to_numpy(), t["rejected_reward"].to_numpy()],
                                axis=1)[order] if len(order) else np.zeros((0, 2))
        self._new: list[pa.Table] = []
        self.hits = 0
        self.computed = 0

    def __len__(self) -> int:
        return len(self._ids)

    def lookup(self, pair_ids: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
        """(found mask, scores (n, 2) with NaN where not found)."""
        q = _ids(pair_ids)
        out = np.full((len(q), 2), np.nan)
        if len(self._ids) == 0 or len(q) == 0:
            return np.zeros(len(q), dtype=bool), out
        pos = np.clip(np.searchsorted(self._ids, q), 0, len(self._ids) - 1)
        found = self._ids[pos] == q
        out[found] = self._scores[pos[found]]
        self.hits += int(found.sum())
        return found, out

    def covers(self, pair_ids: pa.Array | pa.ChunkedArray) -> bool:
        q = _ids(pair_ids)
        if len(q) == 0:
            return True
        if len(self._ids) == 0:
            return False
        pos = np.clip(np.searchsorted(self._ids, q), 0, len(self._ids) - 1)
        return bool(np.all(self._ids[pos] == q))

    def add(self, pair_ids: pa.Array | pa.ChunkedArray, chosen: np.ndarray,
            rejected: np.ndarray) -> None:
        self.computed += len(pair_ids)
        self._new.append(pa.table([pair_ids, pa.array(chosen, pa.float64()),
                                   pa.array(rejected, pa.float64())],
                                  schema=pa.schema(SCORE_FIELDS)))

    def save(self) -> Path | None:
        """Write this run's new scores to the cache folder (if there is one)."""
        if self.folder is None or not self._new:
            return None
        t = pa.concat_tables(self._new)
        sink = pa.BufferOutputStream()
        pq.write_table(t, sink, compression="zstd")
        data = sink.getvalue().to_pybytes()
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"scores-{hashlib.sha256(data).hexdigest()[:16]}.parquet"
        tmp = path.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        meta = self.folder / "key.json"
        if not meta.exists():
            meta.write_text(json.dumps({"score_key": self.key}) + "\n")
        return path


def _read_scores(path: Path) -> pa.Table | None:
    names = pq.read_schema(path).names
    if not all(f.name in names for f in SCORE_FIELDS):
        return None
    return pq.read_table(path, columns=[f.name for f in SCORE_FIELDS]).cast(
        pa.schema(SCORE_FIELDS))
