"""Pairs -> one batch: the chosen responses, then the rejected ones, in a single forward.

A pair's images go through the image processor once and feed both of its
sequences. Sequences are fitted to max_length by `PairEncoder` (the prompt loses
tokens from the left first); the batch says which pairs were truncated so the
trainer can report how many, and no pair is ever dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass
class PairItem:
    """One training example: a row index into the table plus its margin."""

    index: int
    row: dict[str, Any]
    margin: float = 0.0


class PairDataset(torch.utils.data.Dataset):
    """Rows of a `PairRows` in an order the trainer sets per epoch (same on every rank)."""

    def __init__(self, rows: Any, indices: np.ndarray, margins: np.ndarray,
                 lengths: np.ndarray | None = None) -> None:
        self.rows = rows
        self.indices = np.asarray(indices)
        self.order = np.arange(len(self.indices))
        self.margins = margins
        self.lengths = None if lengths is None else np.asarray(lengths)[self.indices]

    def set_order(self, seed: int, batch_size: int = 1, group: int = 32) -> None:
        """A seeded shuffle; with lengths, each run of `batch_size * group` shuffled pairs is
        sorted by length so a batch holds similar lengths (less padding), and the batches
        are shuffled again."""
        rng = np.random.default_rng(seed)
        perm = rng.permutation(len(self.indices))
        if self.lengths is None or batch_size <= 1:
            self.order = perm
            return
        mega = batch_size * group
        chunks = [perm[s:s + mega] for s in range(0, len(perm), mega)]
        chunks = [c[np.argsort(-self.lengths[c], kind="stable")] for c in chunks]
        flat = np.concatenate(chunks)
        batches = [flat[s:s + batch_size] for s in range(0, len(flat), batch_size)]
        # shuffle full batches only, so the last (short) one stays last
        full = len(flat) // batch_size
        order = list(rng.permutation(full)) + list(range(full, len(batches)))
        self.order = np.concatenate([batches[i] for i in order])

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> PairItem:
        idx = int(self.indices[self.order[i]])
        return PairItem(idx, self.rows[idx], float(self.margins[idx]))


class PairCollator:
    """PairItems -> model inputs for 2B sequences plus `margin`, `pair_index` and flags."""

    def __init__(self, model: Any) -> None:
        self.model = model  # a RewardModel (its encoder and padding settings)

    def __call__(self, items: Sequence[PairItem]) -> dict[str, torch.Tensor]:
        model = self.model
        enc = model.encoder
        chosen, rejected, images = [], [], []
        for it in items:
            ii = enc.encode_images(it.row.get("images"))
            images.append(ii)
            chosen.append(enc.encode(it.row["prompt"], it.row["chosen"], ii))
            rejected.append(enc.encode(it.row["prompt"], it.row["rejected"], ii))
        n = len(items)
        batch = model.collate(chosen + rejected, images, image_of_seq=list(range(n)) * 2)
        flags = [(c.prompt_truncated or r.prompt_truncated,
                  c.response_truncated or r.response_truncated,
                  c.over_length or r.over_length) for c, r in zip(chosen, rejected, strict=True)]
        batch["margin"] = torch.tensor([it.margin for it in items], dtype=torch.float32)
        batch["pair_index"] = torch.tensor([it.index for it in items], dtype=torch.long)
        batch["truncation"] = torch.tensor(flags, dtype=torch.bool).reshape(n, 3)
        return batch


MODEL_KEYS = ("input_ids", "attention_mask", "token_type_ids", "pixel_values",
              "image_grid_thw", "image_order")


def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: batch[k] for k in MODEL_KEYS if k in batch}
