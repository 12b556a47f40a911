"""TRL's conversational preference format: `prompt`, `chosen`, `rejected` as messages.

    OUT/trl/text/train-00000-of-00004.parquet ...    text-only pairs: string contents
    OUT/trl/vision/train-00000-of-00004.parquet ...  pairs with images: typed parts + images

Text pairs use string contents, what `RewardTrainer` and `DPOTrainer` render with any
chat template (TRL's dataset-formats docs, "conversational" preference rows). Pairs
with images use lists of typed parts (`{"type": "text", "text": ...}` /
`{"type": "image"}`) and an `images` column of `datasets` Images, the layout of
`trl-lib/rlaif-v`. The two cannot share a file: a parquet column has one type, and
typed parts on a text-only row break text chat templates (Qwen2.5's concatenates the
list and fails, Qwen3's renders an empty turn, Llama 3.1's a Python repr). So the
kinds are two subsets, one per training stage (vision: stage 1; both: stage 2); each
file keeps its kept shard's name and rows keep their shard order. A subset with no
rows in a shard writes no file for it.
"""

from __future__ import annotations

import re
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curate.export.base import IMAGE_TAG, Exporter, ExportOptions, place_image_tags, register

COLUMNS = ["pair_id", "prompt", "chosen", "rejected", "images"]
ROW_GROUP = 1024  # rows per row group of an exported file
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
    """`OUT/trl/{text,vision}/<shard>.parquet`, one file per kept shard and kind."""

    name = "trl"
    description = "TRL's conversational prompt/chosen/rejected parquet, text/ and vision/ subsets"
    columns: tuple[str, ...] = tuple(COLUMNS)

    def __init__(self, folder: Any, *, has_images: bool,
                 options: ExportOptions | None = None) -> None:
        super().__init__(folder, has_images=has_images, options=options)
        self._schemas: dict[str, pa.Schema] = {}
        self.rows: dict[str, dict[str, int]] = {}  # kind -> shard file -> rows
        # the shard being written: per kind its file's writer (opened at its first row
        # group) and the records not yet written
        self._writers: dict[str, pq.ParquetWriter] = {}
        self._pending: dict[str, list[dict[str, Any]]] = {}

    def schema(self, kind: str) -> pa.Schema:
        if kind not in self._schemas:
            self._schemas[kind] = vision_schema() if kind == "vision" else text_schema()
        return self._schemas[kind]

    def record(self, row: dict[str, Any], kind: str) -> dict[str, Any]:
        return trl_row(row, kind == "vision")

    def write(self, split: str, shard: str, table: pa.Table) -> None:
        """Rows go out in row groups of ROW_GROUP, the bytes `pq.write_table` of the
        whole subset would write, with at most one row group's records held."""
        for kind, part in self.subsets(table):
            if part.num_rows == 0:
                continue
            pending = self._pending.setdefault(kind, [])
            pending += [self.record(r, kind) for r in part.select(list(self.columns)).to_pylist()]
            files = self.rows.setdefault(kind, {})
            files[shard] = files.get(shard, 0) + part.num_rows
            while len(pending) >= ROW_GROUP:
                self._flush(kind, shard, pending[:ROW_GROUP])
                del pending[:ROW_GROUP]

    def end_shard(self, split: str, shard: str) -> None:
        for kind, pending in self._pending.items():
            if pending:
                self._flush(kind, shard, pending)
        self._pending = {}
        self._close_writers()

    def _flush(self, kind: str, shard: str, records: list[dict[str, Any]]) -> None:
        writer = self._writers.get(kind)
        if writer is None:
            (self.folder / kind).mkdir(exist_ok=True)
            writer = self._writers[kind] = pq.ParquetWriter(
                self.folder / kind / shard, self.schema(kind), compression="zstd")
        writer.write_table(pa.Table.from_pylist(records, schema=self.schema(kind)),
                           row_group_size=ROW_GROUP)

    def _close_writers(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers = {}

    def abort(self) -> None:
        self._pending = {}
        self._close_writers()

    def close(self) -> dict[str, Any]:
        """Per subset: rows per file and the `data_files` patterns of its splits."""
        subsets = {}
        for kind, files in sorted(self.rows.items()):
            splits = sorted({name.split("-", 1)[0] for name in files})
            subsets[kind] = {
                "rows": sum(files.values()), "file_rows": files,
                "data_files": {s: f"{self.folder.name}/{kind}/{s}-*.parquet" for s in splits}}
        return {"folder": self.folder.name, "subsets": subsets}
