"""The write pass on an engine's workers (`curate.pipeline.fragment_writes`): same rows as the
driver's write pass, files cut per fragment, checksums from the workers, and a clear
error when the driver cannot see what a worker wrote.

A process-pool engine that declares `writes_in_workers` runs the same code path as
the Ray engine (tests/test_ray.py covers Ray itself), in seconds.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from curate import dataset as D
from curate.engine import get_engine
from curate.stages.dedup import dedup
from curate.stages.ingest import ingest
from tests.helpers import (
    WorkerWritesEngine,
    assert_conserved,
    assert_same_files,
    assert_same_output,
    canonical_sha256,
)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two ingested sources with planted duplicates, in row groups of 32 rows (so each
    holds several fragments once ROWS_PER_FRAGMENT is small)."""
    from bench.bench_ray import make_raw

    tmp = tmp_path_factory.mktemp("fw")
    raw = make_raw(tmp / "raw", 240)
    mp = pytest.MonkeyPatch()
    mp.setattr(D.PartWriter, "ROW_GROUP_ROWS", 32)
    folders = [tmp / f"in{k}" for k in range(len(raw))]
    try:
        for k, (path, folder) in enumerate(zip(raw, folders, strict=True)):
            ingest("generic", [str(path)], folder, source=f"src{k}",
                   engine=get_engine("local", workers=1))
    finally:
        mp.undo()
    return folders


@pytest.fixture
def small_fragments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("curate.engine.fragments.ROWS_PER_FRAGMENT", 50)


def _dedup(inputs: list[Path], out: Any, engine: Any) -> dict[str, Any]:
    return dedup(inputs, out, engine=engine, prefer=["src1"])


def test_workers_write_the_drivers_rows(inputs: list[Path], tmp_path: Path,
                                        small_fragments: None) -> None:
    driver, workers = tmp_path / "driver", tmp_path / "workers"
    m1 = _dedup(inputs, driver, get_engine("local", workers=2))
    m2 = _dedup(inputs, workers, WorkerWritesEngine(workers=2))
    assert_same_output(driver, workers)  # same rows, counts and reasons; conserved
    assert m1["rows_rejected"] > 0 and m2["rows_kept"] == m1["rows_kept"]
    names = sorted(m2["files"])
    assert len(names) > 4, "several fragments, each with its own files"
    assert all(re.fullmatch(r"(kept|rejected)/part-\d{5}-\d{5}\.parquet", n) for n in names)
    assert set(m2["file_rows"]) == set(names)
    assert sum(m2["file_rows"].values()) == m2["rows_in"]
    # order kept too: fragment files in name order hold the rows in input order
    ids = D.Dataset.open(workers).read(D.KEPT, columns=["pair_id"])["pair_id"].to_pylist()
    assert ids == D.Dataset.open(driver).read(D.KEPT, columns=["pair_id"])["pair_id"].to_pylist()


def test_workers_write_a_file_uri_output_through_a_staging_prefix(
        inputs: list[Path], tmp_path: Path, small_fragments: None) -> None:
    out, ref = tmp_path / "out", tmp_path / "ref"
    m = _dedup(inputs, out.as_uri(), WorkerWritesEngine(workers=2))
    _dedup(inputs, ref, get_engine("local", workers=1))
    assert_conserved(out)
    for part in (D.KEPT, D.REJECTED):
        assert canonical_sha256(out, part) == canonical_sha256(ref, part)
    assert any(n.startswith("kept/part-00001-") for n in m["files"])
    assert not list(tmp_path.glob(".out.tmp*")), "the staging prefix is gone"


def test_a_stage_with_nothing_rejected_still_leaves_a_rejected_file(
        inputs: list[Path], tmp_path: Path) -> None:
    """Readers learn a folder's schema from its files: the driver leaves an empty one."""
    once = tmp_path / "once"
    _dedup(inputs, once, get_engine("local", workers=1))
    again = tmp_path / "again"
    m = _dedup([once], again, WorkerWritesEngine(workers=2))
    assert m["rows_rejected"] == 0
    assert D.Dataset.open(again).schema(D.REJECTED).get_field_index("reject_reason") >= 0
    assert_conserved(again)


def test_a_file_the_driver_cannot_see_fails_the_stage_and_commits_nothing(
        inputs: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a multi-node cluster writing to a path that is not shared."""
    import curate.pipeline.fragment_writes as FW

    real = FW.write_fragment

    def lost(job: FW.FragmentWrite) -> FW.WrittenPart:
        part = real(job)
        for rel in part.files:
            Path(job.target.root, rel).unlink()
        return part

    monkeypatch.setattr(FW, "write_fragment", lost)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="a path every node shares"):
        _dedup(inputs, out, WorkerWritesEngine(workers=1))
    assert not out.exists() and not list(tmp_path.glob(".out.tmp-*"))


def test_shard_writes_the_same_files_inline_and_on_a_pool(
        inputs: list[Path], tmp_path: Path, small_fragments: None) -> None:
    """The shuffle (one block per fragment and shard, one reduce per shard) writes the
    very same files, byte for byte and name for name, exports included, whether its
    tasks run inline (one worker) or on a pool whose workers write their own files."""
    from curate.stages.shard import shard

    kw: dict[str, Any] = {"shards": 3, "eval_fraction": 0.2, "seed": 3,
                          "formats": ["trl", "llamafactory"]}
    a = shard(inputs, tmp_path / "inline", engine=get_engine("local", workers=1), **kw)
    b = shard(inputs, tmp_path / "workers", engine=WorkerWritesEngine(workers=2), **kw)
    assert b["shards"] == a["shards"] and len(a["shards"]) == 4  # 3 train + 1 eval
    assert b["files"] == a["files"]
    assert b["exports"] == a["exports"]
    assert b["steps"].keys() >= {"plan", "shuffle"}
    assert_conserved(tmp_path / "workers")
    assert_same_files(tmp_path / "inline", tmp_path / "workers")


# -- ingest: workers read, validate and write their own parts -------------------------------
@pytest.fixture
def raw_with_repeats(tmp_path: Path) -> list[Path]:
    """A parquet source in row groups of 16 (several parts once ROWS_PER_PART is small)
    whose rows repeat earlier ones (same id and content: `duplicate_pair_id`), within a
    part and across parts, plus a JSON lines file of text pairs with a malformed row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bench.bench_ray import raw_rows

    rows = raw_rows(120, seed=5)
    rows += [dict(rows[3]), dict(rows[40]), dict(rows[41]), dict(rows[119]), dict(rows[3])]
    rows.insert(20, dict(rows[18]))  # a repeat inside one part
    rows[50] = {**rows[50], "image": rows[50]["image"][:100]}  # a truncated JPEG
    rows[70] = {**rows[70], "chosen": " "}
    src = tmp_path / "raw.parquet"
    pq.write_table(pa.Table.from_pylist(rows), src, row_group_size=16)
    text = tmp_path / "text.jsonl"
    text.write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": "t1", "prompt": "Hello?", "chosen": "Hi.", "rejected": "Go away."},
        {"id": "t2", "prompt": "Name a colour.", "chosen": "Red.", "rejected": 7},
        {"id": "t1", "prompt": "Hello?", "chosen": "Hi.", "rejected": "Go away."},
    ]))
    return [src, text]


def test_ingest_on_workers_gives_the_drivers_rows(raw_with_repeats: list[Path], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("curate.stages.ingest_parts.ROWS_PER_PART", 40)
    src = [str(p) for p in raw_with_repeats]
    driver, workers = tmp_path / "driver", tmp_path / "workers"
    ingest("generic", src, driver, engine=get_engine("local", workers=1))
    m = ingest("generic", src, workers, engine=WorkerWritesEngine(workers=2))
    assert_same_output(driver, workers)
    assert m["rejected_by_reason"]["duplicate_pair_id"] == 7  # 6 in the parquet, 1 jsonl
    assert {"corrupt_image", "empty_response", "response_not_string"} <= set(
        m["rejected_by_reason"])
    moved = {n.split("-")[1] for n in m["files"] if n.startswith("rejected/") and "-d" in n}
    assert moved == {"00000", "00002", "00003"}, \
        "repeats within part 0, of earlier parts in part 2, and in the jsonl moved out"
    ids = D.Dataset.open(workers).read(D.KEPT, columns=["pair_id"])["pair_id"]
    assert ids.equals(D.Dataset.open(driver).read(D.KEPT, columns=["pair_id"])["pair_id"])
    assert {n.split("-")[1] for n in m["files"] if n.startswith("kept/")} >= {
        "00000", "00001", "00002", "00003"}, "several parquet parts and the jsonl file"


def test_ingest_on_workers_names_an_unreadable_file(tmp_path: Path, run_cli) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{not json\n')
    out = tmp_path / "out"
    with pytest.raises(Exception, match="bad.jsonl:2"):
        ingest("generic", [str(bad)], out, engine=WorkerWritesEngine(workers=1))
    assert not out.exists() and not list(tmp_path.glob(".out.tmp-*"))


def test_only_record_by_record_adapters_over_files_run_on_workers(tmp_path: Path) -> None:
    from curate.sources import AdapterOptions, make_adapter
    from curate.stages.ingest_parts import runs_in_workers

    f = tmp_path / "x.jsonl"
    f.write_text("{}\n")
    assert runs_in_workers(make_adapter("generic", AdapterOptions()), [str(f)])
    assert runs_in_workers(make_adapter("hh-rlhf", AdapterOptions()), [str(f)])
    pointwise = make_adapter("llava-critic", AdapterOptions(config="pointwise"))
    assert not runs_in_workers(pointwise, [str(f)])
    assert runs_in_workers(make_adapter("llava-critic", AdapterOptions(config="pairwise")),
                           [str(f)])
    assert not runs_in_workers(make_adapter("generic", AdapterOptions()), ["hf://org/name"])


@given(st.lists(st.integers(0, 50), max_size=30), st.integers(1, 120))
def test_row_group_runs_cover_every_group_once_in_order(sizes: list[int], per: int) -> None:
    from curate.engine.fragments import row_group_runs

    runs = row_group_runs(sizes, per)
    assert [g for groups, _, _ in runs for g in groups] == list(range(len(sizes)))
    first = 0
    for k, (groups, start, rows) in enumerate(runs):
        assert start == first and rows == sum(sizes[g] for g in groups)
        assert rows >= per or k == len(runs) - 1
        first += rows
