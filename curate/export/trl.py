"""TRL's conversational preference format: `prompt`, `chosen`, `rejected` as messages.

Text-only datasets use string contents (what `RewardTrainer` and `DPOTrainer` read with
a chat template). When any pair has images, every content is a list of typed parts
(`{"type": "text", "text": ...}` / `{"type": "image"}`) and an `images` column holds
the images as a `datasets` Image sequence, the layout of `trl-lib/rlaif-v`. A parquet
column has one type, so the choice is made once for the whole dataset.
"""

from __future__ import annotations

import re
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curate.export.base import IMAGE_TAG, Exporter, place_image_tags, register

_SPLIT = re.compile(f"({re.escape(IMAGE_TAG)})")


def _parts(content: str) -> list[dict[str, str | None]]:
    """`<image>` tags become image parts; the text between them is kept as is, except
    the whitespace that follows a tag."""
    out: list[dict[str, str | None]] = []
    for piece in _SPLIT.split(content):
        if piece == IMAGE_TAG:
            out.append({"type": "image", "text": None})
            continue
        if out and out[-1]["type"] == "image":
            piece = piece.lstrip()
        if piece:
            out.append({"type": "text", "text": piece})
    return out


def text_schema() -> pa.Schema:
    msgs = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    return pa.schema([("pair_id", pa.string()), ("prompt", msgs), ("chosen", msgs),
                      ("rejected", msgs)])


def vision_schema() -> pa.Schema:
    """The arrow schema with `datasets` feature metadata, so `images` load as PIL images."""
    from datasets import Features, Image, Value

    try:
        from datasets import List
    except ImportError:  # datasets < 4
        from datasets import Sequence as List

    msgs = List({"role": Value("string"),
                 "content": List({"type": Value("string"), "text": Value("string")})})
    return Features({"pair_id": Value("string"), "prompt": msgs, "chosen": msgs,
                     "rejected": msgs, "images": List(Image())}).arrow_schema


def trl_row(row: dict[str, Any], vision: bool) -> dict[str, Any]:
    """One canonical pair as a TRL conversational preference row."""
    images = row.get("images") or []
    prompt = [{"role": m["role"], "content": m["content"] or ""} for m in row["prompt"] or []]
    if not vision:
        return {"pair_id": row["pair_id"], "prompt": prompt,
                "chosen": [{"role": "assistant", "content": row["chosen"]}],
                "rejected": [{"role": "assistant", "content": row["rejected"]}]}
    prompt = place_image_tags(prompt, len(images))

    def answer(text: str) -> list[dict[str, Any]]:
        return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]

    return {
        "pair_id": row["pair_id"],
        "prompt": [{"role": m["role"], "content": _parts(m["content"])} for m in prompt],
        "chosen": answer(row["chosen"]),
        "rejected": answer(row["rejected"]),
        "images": [{"bytes": im["bytes"], "path": None} for im in images],
    }


@register
class TrlExporter(Exporter):
    """`OUT/trl/<shard>.parquet`, one file per kept shard, same names and order."""

    name = "trl"

    def __init__(self, folder: Any, *, has_images: bool) -> None:
        super().__init__(folder, has_images=has_images)
        self.schema = vision_schema() if has_images else text_schema()
        self.rows: dict[str, int] = {}

    def write(self, split: str, shard: str, table: pa.Table) -> None:
        cols = ["pair_id", "prompt", "chosen", "rejected", "images"]
        rows = [trl_row(r, self.has_images) for r in table.select(cols).to_pylist()]
        pq.write_table(pa.Table.from_pylist(rows, schema=self.schema), self.folder / shard,
                       compression="zstd", row_group_size=1024)
        self.rows[shard] = len(rows)

    def close(self) -> dict[str, Any]:
        return {"folder": self.folder.name, "vision": self.has_images, "file_rows": self.rows}
