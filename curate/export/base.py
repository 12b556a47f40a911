"""The exporter interface and registry: one class per training-framework format.

`curate shard --format NAME` hands every finished shard (canonical rows plus `split`,
`stage`, `est_tokens`, in final order) to each requested exporter, which writes its
own files under `OUT/NAME/`. A new format is one module with one `@register` class
(imported in `curate/export/__init__.py`); the shard stage does not change.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa

IMAGE_TAG = "<image>"
_TAG = re.compile(r"<image>\s*")


class Exporter:
    """Receives finished shards in order; writes files under `folder`."""

    name: ClassVar[str]

    def __init__(self, folder: Path, *, has_images: bool) -> None:
        self.folder = folder
        self.has_images = has_images
        folder.mkdir(parents=True, exist_ok=True)

    def write(self, split: str, shard: str, table: pa.Table) -> None:
        """One shard: `split` is train or eval, `shard` the kept file name."""
        raise NotImplementedError

    def close(self) -> dict[str, Any]:
        """Finish the files; return a summary for the manifest."""
        return {}

    def abort(self) -> None:
        """Release open files after an error (the stage removes the folder)."""


_REGISTRY: dict[str, type[Exporter]] = {}


def register(cls: type[Exporter]) -> type[Exporter]:
    _REGISTRY[cls.name] = cls
    return cls


def formats() -> list[str]:
    return sorted(_REGISTRY)


def get_exporter(name: str) -> type[Exporter]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown format {name!r}; choose from {', '.join(formats())}") from None


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
