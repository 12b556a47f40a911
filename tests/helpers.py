"""Small builders shared by tests: images, raw files, and dataset-folder checks."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from curate import dataset as D


def jpeg_bytes(size: tuple[int, int] = (64, 48), color: tuple[int, int, int] = (200, 30, 30),
               quality: int = 90, seed: int = 0) -> bytes:
    """A small JPEG with some texture (so perceptual hashes are not degenerate)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    arr = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    arr[:] = color
    arr += rng.integers(0, 40, size=arr.shape, dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def png_bytes(mode: str = "RGBA", size: tuple[int, int] = (32, 32)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format="PNG")
    return buf.getvalue()


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def assert_conserved(folder: Path) -> dict[str, Any]:
    """rows_in = kept + rejected in the manifest, and the parquet files agree with it."""
    ds = D.Dataset.open(folder)
    m = ds.manifest
    kept, rejected = ds.count(D.KEPT), ds.count(D.REJECTED)
    assert m["rows_kept"] == kept
    assert m["rows_rejected"] == rejected
    consumed = m.get("inputs_consumed", {"kept": kept, "rejected": rejected})
    assert m["rows_in"] == consumed["kept"] + consumed["rejected"]
    assert sum(m["rejected_by_reason"].values()) == rejected
    reasons = ds.read(D.REJECTED, columns=["reject_reason"])["reject_reason"].to_pylist()
    assert all(reasons), "every rejected row has a reason"
    for name, sha in m["files"].items():
        assert D.sha256_file(folder / name) == sha, name
    return m


def rows(folder: Path, part: str = D.KEPT) -> list[dict[str, Any]]:
    return D.Dataset.open(folder).read(part).to_pylist()
