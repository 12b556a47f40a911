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


@dataclass
class EncodedPair:
    item: PairItem
    chosen: Any  # Encoded
    rejected: Any
    images: Any  # ImageInputs | None

    @property
    def tokens(self) -> int:
        return len(self.chosen.input_ids) + len(self.rejected.input_ids)

    @property
    def longest(self) -> int:
        return max(len(self.chosen.input_ids), len(self.rejected.input_ids))


class PairCollator:
    """PairItems -> model inputs for 2B sequences plus `margin`, `pair_index`, flags and token
    counts (`real_tokens`, `computed_tokens`, `seq_lengths`).

    With `max_tokens` the items are one optimizer step's pairs and the result is a list of
    micro-batches, each holding at most `max_tokens` computed tokens (both sequences of a
    pair always together; a pair over the budget alone goes in a micro-batch of its own)."""

    def __init__(self, model: Any, max_tokens: int | None = None) -> None:
        self.model = model  # a RewardModel (its encoder, padding and packing settings)
        self.max_tokens = max_tokens

    def encode(self, items: Sequence[PairItem]) -> list[EncodedPair]:
        enc = self.model.encoder
        out = []
        for it in items:
            ii = enc.encode_images(it.row.get("images"))
            out.append(EncodedPair(it, enc.encode(it.row["prompt"], it.row["chosen"], ii),
                                   enc.encode(it.row["prompt"], it.row["rejected"], ii), ii))
        return out

    def __call__(self, items: Sequence[PairItem]
                 ) -> dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]:
        pairs = self.encode(items)
        if self.max_tokens is None:
            return self.batch(pairs)
        return [self.batch(group) for group in
                token_budget_groups(pairs, self.max_tokens, packed=self.model.packing)]

    def batch(self, pairs: Sequence[EncodedPair]) -> dict[str, torch.Tensor]:
        n = len(pairs)
        seqs = [p.chosen for p in pairs] + [p.rejected for p in pairs]
        batch = self.model.collate(seqs, [p.images for p in pairs],
                                   image_of_seq=list(range(n)) * 2, packed=self.model.packing)
        flags = [(p.chosen.prompt_truncated or p.rejected.prompt_truncated,
                  p.chosen.response_truncated or p.rejected.response_truncated,
                  p.chosen.over_length or p.rejected.over_length) for p in pairs]
        batch["margin"] = torch.tensor([p.item.margin for p in pairs], dtype=torch.float32)
        batch["pair_index"] = torch.tensor([p.item.index for p in pairs], dtype=torch.long)
        batch["truncation"] = torch.tensor(flags, dtype=torch.bool).reshape(n, 3)
        lengths = [len(s.input_ids) for s in seqs]
        batch["real_tokens"] = torch.tensor(sum(lengths))
        batch["computed_tokens"] = torch.tensor(batch["input_ids"].numel())
        batch.setdefault("seq_lengths", torch.tensor(lengths, dtype=torch.long))
        return batch


def batch_tokens(pairs: Sequence[EncodedPair], packed: bool) -> int:
    """Tokens a micro-batch of these pairs computes: the sum of its sequences' lengths when
    packed, 2 x pairs x the longest sequence when padded."""
    if packed:
        return sum(p.tokens for p in pairs)
    return 2 * len(pairs) * max((p.longest for p in pairs), default=0)


def token_budget_groups(pairs: Sequence[EncodedPair], max_tokens: int, packed: bool
                        ) -> list[list[EncodedPair]]:
    """Split one step's pairs into micro-batches of at most `max_tokens` computed tokens:
    sorted by length (so padded batches hold similar lengths), filled greedily."""
    ordered = sorted(pairs, key=lambda p: (p.longest, p.tokens))
    groups: list[list[EncodedPair]] = []
    for p in ordered:
        if groups and batch_tokens([*groups[-1], p], packed) <= max_tokens:
            groups[-1].append(p)
        else:
            groups.append([p])
    return groups


MODEL_KEYS = ("input_ids", "attention_mask", "token_type_ids", "pixel_values",
              "image_grid_thw", "image_order", "position_ids")


def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    out = {k: batch[k] for k in MODEL_KEYS if k in batch}
    if "attention_mask" not in batch:  # a packed row: its sequences' lengths
        out["seq_lengths"] = batch["seq_lengths"]
    return out
