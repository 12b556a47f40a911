"""The local engine's shuffle keeps its blocks on disk (`curate.engine.spill`), in a
folder under `spill_dir` that goes however the shuffle ends; `curate shard` puts that
folder in its output's temporary folder (the output's disk)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from curate.engine import get_engine

MAPS, REDUCES = 5, 3


def cut(item: int) -> list[pa.Table]:
    """Map item `item`: the numbers 10 x item .. 10 x item + 9, cut by their value mod 3."""
    xs = range(10 * item, 10 * item + 10)
    return [pa.table({"x": pa.array([x for x in xs if x % 3 == s], pa.int64())})
            for s in range(REDUCES)]


def gather(s: int, blocks: list[pa.Table]) -> list[int]:
    return [x for b in blocks for x in b["x"].to_pylist()]


def expected() -> list[list[int]]:
    return [[x for i in range(MAPS) for x in range(10 * i, 10 * i + 10) if x % 3 == s]
            for s in range(REDUCES)]


@pytest.mark.parametrize("workers", [1, 2])
def test_every_reducer_gets_its_blocks_in_map_order_and_the_spill_goes(
        workers: int, tmp_path: Path) -> None:
    seen: list[int] = []

    def count_spilled(s: int, blocks: list[pa.Table]) -> list[int]:
        seen.append(len(list(tmp_path.glob(".shuffle-*/map-*.arrow"))))
        return gather(s, blocks)

    engine = get_engine("local", workers=workers)
    got = list(engine.shuffle(cut, range(MAPS), count_spilled, list(range(REDUCES)),
                              spill_dir=str(tmp_path)))
    assert got == expected()
    assert seen == [MAPS] * REDUCES, "the blocks wait on disk, one file a map task"
    assert list(tmp_path.iterdir()) == []


def _fail_on_3(item: int) -> list[pa.Table]:
    if item == 3:
        raise ValueError("map 3 failed")
    return cut(item)


def _fail_reduce(s: int, blocks: list[pa.Table]) -> list[int]:
    if s == 1:
        raise ValueError("reduce 1 failed")
    return gather(s, blocks)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("where", ["map", "reduce"])
def test_the_spill_goes_when_a_task_fails(where: str, workers: int, tmp_path: Path) -> None:
    engine = get_engine("local", workers=workers)
    map_fn, reduce_fn = (_fail_on_3, gather) if where == "map" else (cut, _fail_reduce)
    with pytest.raises(ValueError, match=f"{where} . failed"):
        list(engine.shuffle(map_fn, range(MAPS), reduce_fn, list(range(REDUCES)),
                            spill_dir=str(tmp_path)))
    assert list(tmp_path.iterdir()) == []


def test_the_spill_goes_when_the_caller_stops_early(tmp_path: Path) -> None:
    results = get_engine("local", workers=2).shuffle(cut, range(MAPS), gather,
                                                     list(range(REDUCES)),
                                                     spill_dir=str(tmp_path))
    assert next(results) == expected()[0]
    assert list(tmp_path.glob(".shuffle-*"))
    results.close()  # type: ignore[attr-defined]
    assert list(tmp_path.iterdir()) == []


def test_shard_spills_in_its_outputs_temporary_folder(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import curate.engine.spill as spill
    from curate.stages.ingest import ingest
    from curate.stages.shard import shard
    from tests.helpers import write_parquet

    src = write_parquet(tmp_path / "src.parquet", [
        {"id": f"r{i}", "prompt": f"p {i}", "chosen": "c" * i, "rejected": "r"}
        for i in range(30)])
    ingest("generic", [str(src)], tmp_path / "in", source="s",
           engine=get_engine("local", workers=1))
    folders: list[Path] = []
    real = spill.spill_folder

    @contextmanager
    def recorded(parent: Any) -> Iterator[Path]:
        with real(parent) as folder:
            folders.append(folder)
            yield folder

    monkeypatch.setattr(spill, "spill_folder", recorded)
    out = tmp_path / "out"
    shard([tmp_path / "in"], out, shards=2, engine=get_engine("local", workers=2))
    assert len(folders) == 1
    assert folders[0].parent.parent == tmp_path and folders[0].parent.name.startswith(".out.")
    assert not folders[0].exists() and not list(out.rglob(".shuffle-*"))
