"""Issue 13 items 2 and 3: a stage verifies the files it reads against their manifest
(hashing while it reads), and skips only when its output and its inputs are intact."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curate import dataset as D
from curate.engine.fragments import fragments, read_fragment
from tests.safety_support import first_kept, flip_byte, ingested, leftovers, snapshot


def _assert_refused(tmp_path: Path, res, names: str, *, out: Path) -> None:
    assert names in res.output, res.output
    assert "Traceback" not in res.output
    assert not out.exists()
    assert leftovers(tmp_path) == []


def _truncate(path: Path) -> None:
    table = pq.read_table(path)
    pq.write_table(table.slice(0, table.num_rows - 10), path)


def _alter_row(path: Path) -> None:
    table = pq.read_table(path)
    rows = table.to_pylist()
    rows[0]["chosen"] = "an answer someone edited"
    pq.write_table(type(table).from_pylist(rows, schema=table.schema), path)


@pytest.mark.parametrize("change", [_truncate, _alter_row, flip_byte])
@pytest.mark.parametrize("stage", [["dedup"], ["shard", "--shards", "1"]])
def test_a_changed_input_file_stops_the_stage(tmp_path: Path, run_cli, change,
                                              stage: list[str]) -> None:
    ing = ingested(tmp_path, run_cli)
    victim = first_kept(ing)
    change(victim)
    before = snapshot(ing)
    res = run_cli(*stage, ing, "--out", tmp_path / "out", "--quiet", expect=2)
    _assert_refused(tmp_path, res, f"{ing}/kept/{victim.name}", out=tmp_path / "out")
    assert "changed after it was written" in res.output
    assert snapshot(ing) == before


def test_a_removed_or_added_file_stops_the_stage(tmp_path: Path, run_cli) -> None:
    ing = ingested(tmp_path, run_cli)
    extra = ing / "kept" / "part-00009.parquet"
    extra.write_bytes(first_kept(ing).read_bytes())
    res = run_cli("dedup", ing, "--out", tmp_path / "out", "--quiet", expect=2)
    _assert_refused(tmp_path, res, "part-00009.parquet is not in manifest.json",
                    out=tmp_path / "out")
    extra.unlink()
    first_kept(ing).unlink()
    res = run_cli("dedup", ing, "--out", tmp_path / "out", "--quiet", expect=2)
    _assert_refused(tmp_path, res, "part-00000-00000.parquet is missing", out=tmp_path / "out")


@pytest.mark.parametrize("manifest", [None, "{not json", '{"stage": "ingest"}', "[1, 2]"])
def test_a_missing_or_damaged_input_manifest_is_named(tmp_path: Path, run_cli,
                                                      manifest: str | None) -> None:
    ing = ingested(tmp_path, run_cli)
    if manifest is None:
        (ing / D.MANIFEST).unlink()
    else:
        (ing / D.MANIFEST).write_text(manifest)
    res = run_cli("dedup", ing, "--out", tmp_path / "out", "--quiet", expect=2)
    _assert_refused(tmp_path, res, str(ing), out=tmp_path / "out")
    if manifest is not None:
        assert f"{ing}/manifest.json" in res.output


def test_a_changed_byte_is_found_by_a_projected_read_and_by_fragments(
        tmp_path: Path, run_cli) -> None:
    """Reading one column skips most bytes: the skipped ones are hashed at the end."""
    ing = ingested(tmp_path, run_cli)
    flip_byte(first_kept(ing), at=0.3)
    ds = D.Dataset.open(ing)
    with pytest.raises(D.ChangedInputError, match="sha256 differs"):
        for _ in ds.iter_batches(columns=["pair_id"]):
            pass
    with pytest.raises(D.ChangedInputError):
        ds.read(columns=["source"])
    with pytest.raises(D.ChangedInputError):
        for frag in fragments([ds]):
            list(read_fragment(frag))


def test_intact_inputs_read_exactly_as_before(tmp_path: Path, run_cli) -> None:
    ing = ingested(tmp_path, run_cli)
    ds = D.Dataset.open(ing)
    plain = pq.read_table(first_kept(ing))
    assert ds.read().equals(plain)
    assert ds.verify() == []
    batches = [b for f in fragments([ds]) for b in read_fragment(f)]
    assert sum(b.num_rows for b in batches) == plain.num_rows


# -- item 3: an honest skip -------------------------------------------------------------


def test_skip_only_when_the_output_is_intact(tmp_path: Path, run_cli) -> None:
    ing = ingested(tmp_path, run_cli)
    out = tmp_path / "dd"
    run_cli("dedup", ing, "--out", out, "--quiet")
    good = snapshot(out)
    res = run_cli("dedup", ing, "--out", out)
    assert "skipped" in res.output
    for damage, why in ((lambda: first_kept(out).unlink(), "is missing"),
                        (lambda: flip_byte(first_kept(out)), "sha256 differs"),
                        (lambda: sorted((out / "rejected").glob("*.parquet"))[0].write_bytes(b"x"),
                         "sha256 differs")):
        damage()
        res = run_cli("dedup", ing, "--out", out)
        assert "skipped" not in res.output and f"redoing {out}" in res.output, res.output
        assert why in res.output
        got = snapshot(out)
        assert {k: v for k, v in got.items() if k != D.MANIFEST} == \
            {k: v for k, v in good.items() if k != D.MANIFEST}
    assert leftovers(tmp_path) == []


def test_no_skip_when_an_input_changed(tmp_path: Path, run_cli) -> None:
    ing = ingested(tmp_path, run_cli)
    out = tmp_path / "dd"
    run_cli("dedup", ing, "--out", out, "--quiet")
    before = snapshot(out)
    flip_byte(first_kept(ing))
    res = run_cli("dedup", ing, "--out", out, expect=2)
    assert "skipped" not in res.output
    assert f"{ing}/kept/part-00000-00000.parquet" in res.output
    assert snapshot(out) == before  # the old output stays as it was


def test_manifests_record_sizes(tmp_path: Path, run_cli) -> None:
    ing = ingested(tmp_path, run_cli)
    m = json.loads((ing / D.MANIFEST).read_text())
    assert set(m["file_sizes"]) == set(m["files"])
    assert all(m["file_sizes"][k] == (ing / k).stat().st_size for k in m["files"])
