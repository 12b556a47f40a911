"""The exporter interface and registry: one class per training-framework format.

`curate shard --format NAME` hands every finished shard (canonical rows plus `split`,
`stage`, `est_tokens`, in final order) to each requested exporter, which writes its
own files under `OUT/NAME/`. A new format is one module with one `@register` class
(`curate/export/__init__.py` imports every module of the package); the shard stage and
its `--format` help do not change.

Rows are of two kinds, matching the two training stages: `vision` (the pair has
images; the `stage` column says `multimodal`) and `text`. `--only text|vision`
(`ExportOptions.only`) restricts every export to one kind; formats whose rows cannot
share one schema (TRL's: string contents for text, typed parts for vision) write the
kinds as separate subsets, `OUT/NAME/text/` and `OUT/NAME/vision/`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from curate.registry import Registry

IMAGE_TAG = "<image>"
_TAG = re.compile(r"<image>\s*")
KINDS = ("text", "vision")


@dataclass(frozen=True)
class ExportOptions:
    """`only`: write just the `text` or just the `vision` rows (None: both).
    `root`: where OUT will be once committed, for a format that writes absolute paths
    (MPO's meta file; None: paths relative to the format's folder)."""

    only: str | None = None
    root: Path | None = None

    def __post_init__(self) -> None:
        if self.only is not None and self.only not in KINDS:
            raise ValueError(f"--only must be one of {', '.join(KINDS)}, not {self.only!r}")


def is_vision(table: pa.Table) -> pa.Array:
    """Per row: does the pair have images (the shard's `stage` column, else `images`)."""
    if "stage" in table.column_names:
        return pc.fill_null(pc.equal(table["stage"], "multimodal"), False)
    return pc.greater(pc.fill_null(pc.list_value_length(table["images"]), 0), 0)


class Exporter:
    """Receives finished shards in order; writes files under `folder`."""

    name: ClassVar[str]
    description: ClassVar[str] = ""  # what it writes, for `curate shard --help`

    def __init__(self, folder: Path, *, has_images: bool,
                 options: ExportOptions | None = None) -> None:
        self.folder = folder
        self.options = options or ExportOptions()
        self.has_images = has_images and self.options.only != "text"
        folder.mkdir(parents=True, exist_ok=True)

    def subsets(self, table: pa.Table) -> list[tuple[str, pa.Table]]:
        """(kind, its rows in order) for each kind `--only` allows."""
        vision = is_vision(table)
        masks = {"text": pc.invert(vision), "vision": vision}
        return [(k, table.filter(masks[k])) for k in KINDS if self.options.only in (None, k)]

    def selected(self, table: pa.Table) -> pa.Table:
        """The rows `--only` allows, in order (for formats that hold both kinds in one file)."""
        if self.options.only is None:
            return table
        return self.subsets(table)[0][1]

    def write(self, split: str, shard: str, table: pa.Table) -> None:
        """Rows of one shard, in order (`split` is train or eval, `shard` the kept file
        name): called once or more per shard, a row group at a time, so that no shard
        is held whole; then `end_shard`."""
        raise NotImplementedError

    def end_shard(self, split: str, shard: str) -> None:
        """Every row of `shard` has been written."""

    def close(self) -> dict[str, Any]:
        """Finish the files; return a summary for the manifest."""
        return {}

    def abort(self) -> None:
        """Release open files after an error (the stage removes the folder)."""


EXPORTERS: Registry[type[Exporter]] = Registry("export format")


def register(cls: type[Exporter]) -> type[Exporter]:
    """Register an Exporter subclass under its `name`."""
    return EXPORTERS.add(cls.name, cls)


def formats() -> list[str]:
    return sorted(EXPORTERS)


def formats_help() -> str:
    """'dpo (what it writes), llamafactory (...), ...' for `curate shard --help`."""
    return ", ".join(f"{n} ({EXPORTERS[n].description})" if EXPORTERS[n].description else n
                     for n in formats())


def get_exporter(name: str) -> type[Exporter]:
    try:
        return EXPORTERS[name]
    except KeyError:
        raise ValueError(f"unknown format {name!r}; choose from {', '.join(formats())}") from None


def make_exporters(out: Path, names: list[str] | tuple[str, ...], *, has_images: bool,
                   options: ExportOptions) -> list[Exporter]:
    """One exporter per format name, each writing under `out/NAME`."""
    return [get_exporter(n)(out / n, has_images=has_images, options=options) for n in names]


def place_image_tags(messages: list[dict[str, Any]], n_images: int) -> list[dict[str, str]]:
    """Copies of `messages` whose user turns hold exactly `n_images` `<image>` tags.

    The rule the reward model's encoder uses: tags already in user turns are kept, in
    order, up to `n_images`; extra tags are removed; missing ones go before the first
    user message's text.
    """
    left = n_images
    out = []
    for m in messages:
        content = m["content"] or ""
        if m["role"] == "user":
            def sub(match: re.Match[str]) -> str:
                nonlocal left
                if left == 0:
                    return ""
                left -= 1
                return match.group(0)

            content = _TAG.sub(sub, content)
        out.append({"role": m["role"], "content": content})
    if left:
        first = next((m for m in out if m["role"] == "user"), out[0] if out else None)
        if first is None:
            out.append(first := {"role": "user", "content": ""})
        first["content"] = IMAGE_TAG * left + first["content"]
    return out


def image_suffix(fmt: str | None) -> str:
    f = (fmt or "bin").lower()
    return {"jpeg": "jpg", "tiff": "tif"}.get(f, f)
