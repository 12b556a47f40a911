"""Pooled backbone features on disk, keyed by content hash.

With the backbone frozen only the head trains, so each (prompt, response, images)
sequence needs one backbone forward, ever: its pooled feature is stored under a
hash of (prompt, response, image sha256s) in a folder named by the model's
namespace, i.e. the backbone's fingerprint plus every setting that changes what the
backbone sees (layout, max length, pooling, image size). Epochs, stages, k-fold runs
and reruns with other labels or another head all read the same entries.

Layout: `ROOT/<namespace>/part-<sha>.safetensors`, each with `keys` (uint8, N x 16),
`features` (N x H) and `flags` (uint8, N: bit 0 prompt truncated, bit 1 response
truncated, bit 2 over length). Shards are written under a temporary name and
renamed, so several processes (ranks, folds) can add to one cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from curate.models.encoding import Item

PROMPT_TRUNCATED, RESPONSE_TRUNCATED, OVER_LENGTH = 1, 2, 4


def default_cache_root() -> Path:
    env = os.environ.get("CURATE_CACHE")
    base = Path(env) if env else Path.home() / ".cache" / "curate"
    return base / "features"


def model_namespace(model: Any) -> str:
    """Cache namespace of a RewardModel: backbone weights, how sequences are encoded, and the
    autocast precision the features are computed in."""
    key = json.dumps([model.backbone_fingerprint, model.reward_config.encoder_key(),
                      str(model.autocast_dtype)], sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:24]


def item_key(item: Item) -> bytes:
    """16-byte content hash of one sequence (images by their sha256)."""
    prompt, response, images = item
    payload = json.dumps(
        [[(m["role"], m["content"]) for m in prompt], response,
         [im.get("sha256") or hashlib.sha256(im["bytes"]).hexdigest() for im in images or []]],
        ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).digest()[:16]


def _size(item: Item) -> int:
    prompt, response, _ = item
    return len(response) + sum(len(m["content"]) for m in prompt)


class FeatureCache:
    """Pooled features by content key, for one model namespace."""

    def __init__(self, root: str | os.PathLike[str] | None, namespace: str) -> None:
        self.dir = Path(root or default_cache_root()) / namespace
        self.dir.mkdir(parents=True, exist_ok=True)
        self._index: dict[bytes, tuple[int, int]] = {}
        self._features: list[torch.Tensor] = []
        self._flags: list[torch.Tensor] = []
        self._seen: set[str] = set()
        self.hits = 0
        self.computed = 0
        self.refresh()

    def refresh(self) -> None:
        """Load shards that other processes wrote since we last looked."""
        from safetensors.torch import load_file

        for f in sorted(self.dir.glob("part-*.safetensors")):
            if f.name not in self._seen:
                data = load_file(str(f))
                self._add(f.name, list(map(bytes, data["keys"].numpy())), data["features"],
                          data["flags"])

    def _add(self, name: str, keys: Sequence[bytes], feats: torch.Tensor,
             flags: torch.Tensor) -> None:
        s = len(self._features)
        self._features.append(feats)
        self._flags.append(flags)
        for row, k in enumerate(keys):
            self._index.setdefault(k, (s, row))
        self._seen.add(name)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: bytes) -> bool:
        return key in self._index

    def put(self, keys: Sequence[bytes], features: torch.Tensor, flags: Sequence[int],
            dtype: torch.dtype = torch.float32) -> None:
        """Write one shard, named by its content (a rerun never duplicates one)."""
        from safetensors.torch import save_file

        if not keys:
            return
        key_arr = torch.from_numpy(np.frombuffer(b"".join(keys), dtype=np.uint8)
                                   .reshape(len(keys), 16).copy())
        feats = features.detach().to("cpu", dtype).contiguous()
        flag_arr = torch.tensor(list(flags), dtype=torch.uint8)
        name = "part-" + hashlib.sha256(b"".join(keys)).hexdigest()[:20] + ".safetensors"
        tmp = self.dir / f".{name}.tmp-{os.getpid()}"
        save_file({"keys": key_arr, "features": feats, "flags": flag_arr}, str(tmp))
        os.replace(tmp, self.dir / name)
        self._add(name, keys, feats, flag_arr)

    def compute_missing(
        self,
        items: Sequence[Item],
        compute: Callable[[list[Item]], tuple[torch.Tensor, list[int]]],
        batch_size: int = 32,
        dtype: torch.dtype = torch.float32,
        shard: tuple[int, int] = (0, 1),
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Compute and store the items not cached yet; `compute(items) -> (features (n, H),
        flags)` runs on batches. With `shard=(rank, world)` this process does its share
        only; the others' appear after a barrier and `refresh()`. Returns how many it did."""
        missing: dict[bytes, int] = {}
        for i, it in enumerate(items):
            k = item_key(it)
            if k not in self._index and k not in missing:
                missing[k] = i
        self.hits += len(items) - len(missing)
        # similar lengths batch together (little padding); the shard split comes after
        todo = sorted(missing.items(), key=lambda kv: _size(items[kv[1]]))[shard[0]::shard[1]]
        step = batch_size * 8  # several batches per shard file
        for s in range(0, len(todo), step):
            chunk = todo[s:s + step]
            feats, flags = [], []
            for b in range(0, len(chunk), batch_size):
                f, fl = compute([items[i] for _, i in chunk[b:b + batch_size]])
                feats.append(f)
                flags.extend(fl)
            self.put([k for k, _ in chunk], torch.cat(feats), flags, dtype)
            self.computed += len(chunk)
            if progress is not None:
                progress(len(chunk))
        return len(todo)

    def lookup(self, items: Sequence[Item]) -> tuple[torch.Tensor, torch.Tensor]:
        """(features float32 (n, H), flags uint8 (n,)) of items that are all cached."""
        rows = [self._index[item_key(it)] for it in items]
        if not rows:
            return torch.zeros((0, 0)), torch.zeros(0, dtype=torch.uint8)
        feats = torch.stack([self._features[s][r] for s, r in rows]).float()
        flags = torch.stack([self._flags[s][r] for s, r in rows])
        return feats, flags
