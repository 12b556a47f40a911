"""Compact per-row keys shared by `similar` and `decontam`: text hashes, hashes of
normalised words and of their n-grams (the words themselves: `curate.text`), and the
perceptual hashes of a row's images.

Everything here is pure and cheap, so it runs in the engine's per-batch step; the
stages' global steps see only these keys, never the texts or image bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import xxhash

TEXT_HASH = pa.binary(16)  # xxh3-128 of the UTF-8 text: the embedding cache key
PHASH_COLUMN = "image_phash"  # written by `curate dedup`; reused here when present
_WORD_MEMO: dict[str, int] = {}
_WORD_MEMO_LIMIT = 1_000_000
_MULT = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit multiplier of the rolling n-gram hash


def text_hash(text: str) -> bytes:
    """The 16-byte key of a text (exact text, not normalised)."""
    return xxhash.xxh3_128_digest(text.encode("utf-8"))


def prompt_view(prompt: Sequence[dict[str, Any]] | None) -> str:
    """The prompt as `similar` embeds it: the last user message first, then the earlier
    messages newest first. The model reads only its first 256 word pieces, so this way it
    sees the question being answered and the most recent context, and two conversations
    that share an opening but ask different things do not look alike."""
    msgs = list(prompt or [])
    last = next((i for i in range(len(msgs) - 1, -1, -1) if msgs[i].get("role") == "user"),
                len(msgs) - 1)
    order = [last, *[i for i in range(len(msgs) - 1, -1, -1) if i != last]] if msgs else []
    return "\n".join((msgs[i].get("content") or "") for i in order)


def _word_hash(word: str) -> int:
    h = _WORD_MEMO.get(word)
    if h is None:
        if len(_WORD_MEMO) >= _WORD_MEMO_LIMIT:
            _WORD_MEMO.clear()
        h = _WORD_MEMO[word] = xxhash.xxh3_64_intdigest(word.encode("utf-8"))
    return h


def words_key(key: str) -> int:
    """A 64-bit key of one of `curate.text.prompt_keys` (for whole-prompt matches)."""
    return xxhash.xxh3_64_intdigest(key.encode("utf-8"))


def ngram_hashes(words: Sequence[str], n: int) -> np.ndarray:
    """Rolling 64-bit hashes of every run of `n` consecutive words (empty if fewer)."""
    if len(words) < n or n < 1:
        return np.empty(0, dtype=np.uint64)
    w = np.fromiter((_word_hash(x) for x in words), dtype=np.uint64, count=len(words))
    m = len(words) - n + 1
    h = np.zeros(m, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for i in range(n):
            h = h * _MULT + w[i:i + m]
    return h


def row_phashes(batch: pa.RecordBatch) -> list[list[int] | None]:
    """Each row's image pHashes: the `image_phash` column when the input has one, else
    computed from the bytes. A row whose image cannot be hashed gets None (matches nothing)."""
    names = batch.schema.names
    if PHASH_COLUMN in names:
        return [None if v is None else [int(c) for c in v]
                for v in batch.column(PHASH_COLUMN).to_pylist()]
    if "images" not in names:
        return [[] for _ in range(batch.num_rows)]
    from curate.hashing import perceptual_hash

    out: list[list[int] | None] = []
    images = batch.column("images")
    for i in range(batch.num_rows):
        codes: list[int] | None = []
        for data in images[i].values.field("bytes").to_pylist() if images[i].is_valid else []:
            try:
                codes.append(perceptual_hash(data, "phash"))  # type: ignore[union-attr]
            except Exception:  # undecodable: ingest rejects these, but never crash here
                codes = None
                break
        out.append(codes)
    return out


def image_columns(schema: pa.Schema) -> list[str]:
    """The columns `row_phashes` needs from an input with this schema."""
    return [PHASH_COLUMN] if schema.get_field_index(PHASH_COLUMN) >= 0 else ["images"]
