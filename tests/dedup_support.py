"""Builders for the dedup tests: dataset folders ingested from generated raw rows, edits."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from curate import dataset as D
from curate.engine import get_engine
from curate.stages.ingest import ingest
from tests.helpers import write_parquet

QUESTION = "What is shown in this picture?"


def encode(im: Any, fmt: str = "JPEG", **kw: Any) -> bytes:
    buf = io.BytesIO()
    (im.convert("RGB") if fmt == "JPEG" else im).save(buf, format=fmt, **kw)
    return buf.getvalue()


def variants(im: Any) -> dict[str, bytes]:
    """The copies the issue asks to be found: re-encoded, resized 50-200%, cropped slightly."""
    from PIL import Image

    w, h = im.size
    out = {f"q{q}": encode(im, quality=q) for q in (30, 50, 95)}
    out["png"] = encode(im, "PNG")
    for scale in (0.5, 2.0):
        out[f"resize{scale}"] = encode(im.resize((int(w * scale), int(h * scale)),
                                                 Image.Resampling.LANCZOS), quality=90)
    for frac in (0.01, 0.02):
        dx, dy = int(w * frac), int(h * frac)
        out[f"crop{frac}"] = encode(im.crop((dx, dy, w - dx, h - dy)), quality=90)
    return out


def row(source_id: str, prompt: str = QUESTION, chosen: str = "A photo.",
        rejected: str = "A drawing of a dog.", image: bytes | list[bytes] | None = None) -> dict:
    return {"id": source_id, "prompt": prompt, "chosen": chosen, "rejected": rejected,
            "image": image}


def make_source(tmp: Path, name: str, rows: list[dict[str, Any]]) -> Path:
    """Ingest `rows` (see `row`) with the generic adapter as the dataset folder tmp/name."""
    raw = write_parquet(tmp / f"raw-{name}.parquet", rows)
    out = tmp / name
    ingest("generic", [str(raw)], out, source=name, engine=get_engine("local", workers=1))
    return out


def outcome(folder: Path) -> dict[str, tuple[str | None, str | None]]:
    """source_id -> (reject_reason, reject_detail) for every row of a dedup output."""
    ds = D.Dataset.open(folder)
    res: dict[str, tuple[str | None, str | None]] = {}
    for r in ds.read(D.KEPT, columns=["source", "source_id"]).to_pylist():
        res[f"{r['source']}/{r['source_id']}"] = (None, None)
    cols = ["source", "source_id", "reject_reason", "reject_detail"]
    for r in ds.read(D.REJECTED, columns=cols).to_pylist():
        res[f"{r['source']}/{r['source_id']}"] = (r["reject_reason"], r["reject_detail"])
    return res


def pair_ids(folder: Path) -> dict[str, str]:
    """source/source_id -> pair_id over kept and rejected rows."""
    ds = D.Dataset.open(folder)
    out = {}
    for part in (D.KEPT, D.REJECTED):
        for r in ds.read(part, columns=["source", "source_id", "pair_id"]).to_pylist():
            out[f"{r['source']}/{r['source_id']}"] = r["pair_id"]
    return out


def unchecked_folder(out: Path, images: list[bytes]) -> Path:
    """A dataset folder with one row per image, written without ingest's checks (so a
    corrupt image gets through, as it could from another tool); source 'x', ids 0, 1, ..."""
    import pyarrow as pa

    from curate import schema as S
    from curate.pipeline.runner import StageRun

    rows = [{"pair_id": f"{i:032x}", "source": "x", "source_id": str(i),
             "prompt": [{"role": "user", "content": f"Question {i}?"}], "chosen": "a",
             "rejected": "b", "images": [{"bytes": data, "format": "JPEG"}]}
            for i, data in enumerate(images)]
    with StageRun("ingest", out, {}, []) as run:
        run.open()
        run.add_in(len(rows))
        run.keep(pa.Table.from_pylist(rows, schema=S.PAIR_SCHEMA))
    return out
