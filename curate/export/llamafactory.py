"""LLaMA-Factory's sharegpt preference format, with images written as files.

    OUT/llamafactory/dataset_info.json   {"train": {...}, "eval": {...}}
    OUT/llamafactory/train.json          [{"conversations": [...], "chosen": {...}, ...}]
    OUT/llamafactory/images/ab/ab12....jpg

Point LLaMA-Factory at it with `dataset_dir: OUT/llamafactory`, `dataset: train`
(`eval_dataset: eval`); image paths are relative to that folder, which is where
LLaMA-Factory looks for them (its `media_dir` defaults to `dataset_dir`). Each image
is written once, named by its sha256. Sharegpt wants strictly alternating turns, so
consecutive messages of one role are joined with a blank line.

Text-only and image pairs share the files: LLaMA-Factory decides per row (a row
without `images` is a text row, whatever the dataset's `images` column says), so a
mixed file trains both stages' data as it is; `--only text|vision` writes one kind.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import IO, Any

import pyarrow as pa

from curate.export.base import (
    Exporter,
    ExportOptions,
    image_suffix,
    place_image_tags,
    register,
)

ROLES = {"user": "human", "assistant": "gpt", "tool": "observation", "function": "observation"}


def sharegpt_row(row: dict[str, Any], image_paths: list[str]) -> dict[str, Any]:
    """One canonical pair as a sharegpt preference record (images already written)."""
    msgs = [{"role": m["role"], "content": m["content"] or ""} for m in row["prompt"] or []]
    if image_paths:
        msgs = place_image_tags(msgs, len(image_paths))
    system = None
    if msgs and msgs[0]["role"] == "system":
        system = msgs.pop(0)["content"]
    turns: list[dict[str, str]] = []
    for m in msgs:
        who = ROLES.get(m["role"], "human")
        if turns and turns[-1]["from"] == who:
            turns[-1]["value"] += "\n\n" + m["content"]
        else:
            turns.append({"from": who, "value": m["content"]})
    out: dict[str, Any] = {"conversations": turns,
                           "chosen": {"from": "gpt", "value": row["chosen"]},
                           "rejected": {"from": "gpt", "value": row["rejected"]}}
    if system is not None:
        out["system"] = system
    if image_paths:
        out["images"] = image_paths
    out["pair_id"] = row["pair_id"]
    return out


@register
class LlamaFactoryExporter(Exporter):
    name = "llamafactory"
    description = "sharegpt preference JSON, images as files"

    def __init__(self, folder: Path, *, has_images: bool,
                 options: ExportOptions | None = None) -> None:
        super().__init__(folder, has_images=has_images, options=options)
        self._files: dict[str, IO[str]] = {}
        self.rows: dict[str, int] = {}
        self.images_written = 0
        self.has_system = False

    def _image(self, im: dict[str, Any]) -> str:
        sha = im.get("sha256") or hashlib.sha256(im["bytes"]).hexdigest()
        rel = f"images/{sha[:2]}/{sha}.{image_suffix(im.get('format'))}"
        path = self.folder / rel
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(im["bytes"])
            self.images_written += 1
        return rel

    def write(self, split: str, shard: str, table: pa.Table) -> None:
        fh = self._files.get(split)
        if fh is None:
            fh = self._files[split] = open(self.folder / f"{split}.json", "w", encoding="utf-8")
            fh.write("[")
        cols = ["pair_id", "prompt", "chosen", "rejected", "images"]
        for row in self.selected(table).select(cols).to_pylist():
            paths = [self._image(im) for im in row["images"] or []]
            record = sharegpt_row(row, paths)
            self.has_system = self.has_system or "system" in record
            fh.write("\n" if self.rows.get(split, 0) == 0 else ",\n")
            fh.write(json.dumps(record, ensure_ascii=False))
            self.rows[split] = self.rows.get(split, 0) + 1

    def close(self) -> dict[str, Any]:
        for fh in self._files.values():
            fh.write("\n]\n")
            fh.close()
        columns = {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"}
        if self.has_system:
            columns["system"] = "system"
        if self.has_images:
            columns["images"] = "images"
        info = {split: {"file_name": f"{split}.json", "formatting": "sharegpt", "ranking": True,
                        "columns": columns}
                for split in self._files}
        (self.folder / "dataset_info.json").write_text(json.dumps(info, indent=2) + "\n")
        self._files = {}
        return {"folder": self.folder.name, "rows": self.rows,
                "images_written": self.images_written}

    def abort(self) -> None:
        for fh in self._files.values():
            fh.close()
        self._files = {}
