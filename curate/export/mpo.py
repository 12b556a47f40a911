"""`--format mpo`: InternVL's MPO preference data (the MMPR layout).

    OUT/mpo/train.jsonl       {"image": "images/ab/ab12....jpg", "question": "<image>\\n...",
                               "chosen": "...", "rejected": "...", "pair_id": "..."}
    OUT/mpo/eval.jsonl        (with --eval-fraction)
    OUT/mpo/meta.json         {"curate-train": {"root": "/abs/OUT/mpo/",
                                               "annotation": "/abs/OUT/mpo/train.jsonl", ...}}
    OUT/mpo/meta_eval.json    the eval split, kept apart so it is never trained on
    OUT/mpo/images/ab/ab12....jpg

Give InternVL's MPO script `--meta_path OUT/mpo/meta.json`. Its loader
(OpenGVLab/InternVL, internvl_chat/internvl/train/internvl_chat_mpo.py) opens
`annotation` as given, relative to the working directory, and joins each `image`
onto `root` (`os.path.join`; for a list, in its error message, `root + path`), and
InternVL's scripts run from `internvl_chat/`. So with `--absolute-paths` (the default
when OUT is a local folder) `root`, `annotation` and every `image` are absolute paths
of where OUT is committed (`root` ends in `/`); with `--no-absolute-paths` they are
relative to OUT/mpo (`root` "."), for a folder that moves or is uploaded, and the
script must run from OUT/mpo. `image` is one path, a list for several images, and
absent for text-only pairs; InternVL picks per row (text rows go through its
pure-text path), so both kinds share the files. MPO data is one
question and one answer: a system message and earlier turns are written into the
question ("System: ...", "User: ...", "Assistant: ..." paragraphs before the last
user message); the summary counts those rows. Images get `<image>` tags at the start
of the question, one per image, unless the user turns already hold them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa

from curate.export.base import IMAGE_TAG, ExportOptions, place_image_tags, register
from curate.export.llamafactory import LlamaFactoryExporter

COLUMNS = ["pair_id", "prompt", "chosen", "rejected", "images"]


def question_text(prompt: list[dict[str, Any]] | None, n_images: int) -> tuple[str, bool]:
    """(the question InternVL reads, whether earlier turns were folded into it)."""
    msgs = [{"role": m["role"], "content": m["content"] or ""} for m in prompt or []]
    present = sum(m["content"].count(IMAGE_TAG) for m in msgs if m["role"] == "user")
    msgs = place_image_tags(msgs, min(present, n_images))  # drops surplus tags only
    last = max((i for i, m in enumerate(msgs) if m["role"] == "user"), default=len(msgs) - 1)
    context = [f"{m['role'].capitalize()}: {m['content']}" for m in msgs[:last]]
    question = "\n\n".join([*context, msgs[last]["content"] if msgs else ""])
    question = (IMAGE_TAG + "\n") * (n_images - min(present, n_images)) + question
    return question, bool(context)


def mpo_row(row: dict[str, Any], image_paths: list[str]) -> tuple[dict[str, Any], bool]:
    question, folded = question_text(row["prompt"], len(image_paths))
    out: dict[str, Any] = {}
    if image_paths:
        out["image"] = image_paths[0] if len(image_paths) == 1 else image_paths
    out.update(question=question, chosen=row["chosen"], rejected=row["rejected"],
               pair_id=row["pair_id"])
    return out, folded


@register
class MpoExporter(LlamaFactoryExporter):
    """JSON lines per split plus InternVL meta files; images as files named by sha256, in
    the LLaMA-Factory exporter's layout (whose image writer and file handling it reuses)."""

    name = "mpo"
    description = "InternVL's MPO jsonl + meta.json, images as files"

    def __init__(self, folder: Path, *, has_images: bool,
                 options: ExportOptions | None = None) -> None:
        super().__init__(folder, has_images=has_images, options=options)
        self.folded = 0
        root = self.options.root
        # where this folder will be once OUT is committed (we write in a temporary folder)
        self.final: Path | None = None if root is None else root / folder.name

    def _path(self, rel: str) -> str:
        """A path for InternVL: absolute under the final folder, or relative to it."""
        return rel if self.final is None else str(self.final / rel)

    def write(self, split: str, shard: str, table: pa.Table) -> None:
        fh = self._files.get(split)
        if fh is None:
            fh = self._files[split] = open(self.folder / f"{split}.jsonl", "w", encoding="utf-8")
        for row in self.selected(table).select(COLUMNS).to_pylist():
            paths = [self._path(self._image(im)) for im in row["images"] or []]
            record, folded = mpo_row(row, paths)
            self.folded += folded
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            self.rows[split] = self.rows.get(split, 0) + 1

    def close(self) -> dict[str, Any]:
        for fh in self._files.values():
            fh.close()
        for split in self._files:
            root = "." if self.final is None else f"{self.final}/"
            entry = {"root": root, "annotation": self._path(f"{split}.jsonl"),
                     "data_augment": False, "repeat_time": 1, "length": self.rows.get(split, 0)}
            name = "meta.json" if split == "train" else f"meta_{split}.json"
            (self.folder / name).write_text(
                json.dumps({f"curate-{split}": entry}, indent=2) + "\n")
        self._files = {}
        return {"folder": self.folder.name, "rows": self.rows,
                "images_written": self.images_written, "multi_turn_folded": self.folded,
                "absolute_paths": self.final is not None}
