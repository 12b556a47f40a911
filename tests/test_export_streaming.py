"""Exporters receive a shard a row group at a time (`Exporter.write` then `end_shard`), so
that `curate shard` never holds a whole shard of photos on the driver. The files must be
those of one `write` of the whole shard, byte for byte."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.export.base import get_exporter
from curate.export.trl import ROW_GROUP
from tests.helpers import jpeg_bytes

MSG = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
IMAGES = pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())]))


def shard_table(n: int) -> pa.Table:
    """`n` pairs, every third one with a photo (so both TRL subsets span row groups)."""
    photo = jpeg_bytes()
    return pa.table({
        "pair_id": [f"p{i:05d}" for i in range(n)],
        "prompt": [[{"role": "user", "content": f"<image>question {i}" if i % 3 == 0
                     else f"question {i}"}] for i in range(n)],
        "chosen": [f"good answer {i}" for i in range(n)],
        "rejected": [f"bad answer {i}" for i in range(n)],
        "images": [[{"bytes": photo, "path": None}] if i % 3 == 0 else [] for i in range(n)],
        "chosen_score": [1.0] * n,
        "rejected_score": [0.0] * n,
    }, schema=pa.schema([("pair_id", pa.string()), ("prompt", MSG), ("chosen", pa.string()),
                         ("rejected", pa.string()), ("images", IMAGES),
                         ("chosen_score", pa.float64()), ("rejected_score", pa.float64())]))


def export(folder: Path, fmt: str, shards: list[tuple[str, pa.Table]], step: int) -> dict:
    """Every shard handed over `step` rows at a time; the files' sha256 and the summary
    (written to `folder`/out: the summary names the folder)."""
    folder = folder / "out"
    e = get_exporter(fmt)(folder, has_images=True)
    for name, table in shards:
        for start in range(0, table.num_rows, step):
            e.write(name.split("-")[0], name, table.slice(start, step))
        e.end_shard(name.split("-")[0], name)
    summary = e.close()
    files = {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(folder.rglob("*")) if p.is_file()}
    return {"files": files, "summary": summary}


@pytest.mark.parametrize("fmt", ["trl", "dpo", "llamafactory"])
def test_a_shard_in_pieces_writes_the_files_of_the_whole_shard(fmt: str, tmp_path: Path) -> None:
    big, small = shard_table(2 * ROW_GROUP + 700), shard_table(5)
    shards = [("train-00000-of-00002.parquet", big), ("eval-00000-of-00001.parquet", small)]
    whole = export(tmp_path / "whole", fmt, shards, step=10**9)
    for step in (1000, ROW_GROUP, 333):
        assert export(tmp_path / f"step{step}", fmt, shards, step) == whole, step
    assert len(whole["files"]) >= 2


def test_trl_files_keep_row_groups_of_row_group_rows(tmp_path: Path) -> None:
    table = shard_table(3 * ROW_GROUP)
    export(tmp_path, "trl", [("train-00000-of-00001.parquet", table)], step=500)
    text = pq.ParquetFile(tmp_path / "out" / "text" / "train-00000-of-00001.parquet")
    vision = pq.ParquetFile(tmp_path / "out" / "vision" / "train-00000-of-00001.parquet")
    assert text.metadata.num_rows == 2 * ROW_GROUP and vision.metadata.num_rows == ROW_GROUP
    assert [text.metadata.row_group(k).num_rows for k in range(text.num_row_groups)] == [
        ROW_GROUP, ROW_GROUP]
    got = text.read().column("pair_id").to_pylist()
    assert got == [f"p{i:05d}" for i in range(3 * ROW_GROUP) if i % 3]  # shard order kept
