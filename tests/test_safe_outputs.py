"""Issue 13 items 1 and 4: an output replaces only an empty folder or a curate dataset
folder, and never overlaps an input; refused with exit 2, nothing touched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curate import dataset as D
from curate.pipeline.runner import StageRun
from tests.safety_support import ingested, leftovers, snapshot, write_pairs


def _foreign(folder: Path) -> Path:
    (folder / "src").mkdir(parents=True)
    (folder / "notes.txt").write_text("precious\n")
    (folder / "src" / "main.py").write_text("print('mine')\n")
    return folder


@pytest.mark.parametrize("manifest", [None, '{"name": "my app", "version": 3}', "not json {"])
def test_ingest_refuses_an_out_that_holds_a_users_files(tmp_path: Path, run_cli,
                                                        manifest: str | None) -> None:
    mine = _foreign(tmp_path / "mydir")
    if manifest is not None:  # a manifest.json that is not curate's does not make it ours
        (mine / "manifest.json").write_text(manifest)
    before = snapshot(mine)
    src = write_pairs(tmp_path / "one.jsonl")
    res = run_cli("ingest", "generic", src, "--out", mine, expect=2)
    assert "not a curate dataset folder" in res.output and str(mine) in res.output
    assert snapshot(mine) == before
    assert leftovers(tmp_path) == []


def test_a_stage_refuses_an_out_that_holds_a_users_files(tmp_path: Path, run_cli) -> None:
    ing = ingested(tmp_path, run_cli)
    mine = _foreign(tmp_path / "mydir")
    before, before_in = snapshot(mine), snapshot(ing)
    for cmd in (["dedup"], ["shard", "--shards", "1"]):
        res = run_cli(*cmd, ing, "--out", mine, "--quiet", expect=2)
        assert "not a curate dataset folder" in res.output
    assert snapshot(mine) == before and snapshot(ing) == before_in
    assert leftovers(tmp_path) == []


def test_out_naming_a_file_is_refused_and_the_file_stays(tmp_path: Path, run_cli) -> None:
    target = tmp_path / "report.txt"
    target.write_text("keep me\n")
    src = write_pairs(tmp_path / "one.jsonl")
    res = run_cli("ingest", "generic", src, "--out", target, "--quiet", expect=2)
    assert "is not a folder" in res.output
    assert target.read_text() == "keep me\n"
    assert leftovers(tmp_path) == []


def test_empty_folders_and_curate_folders_are_replaced(tmp_path: Path, run_cli) -> None:
    src = write_pairs(tmp_path / "one.jsonl")
    empty = tmp_path / "empty"
    empty.mkdir()
    run_cli("ingest", "generic", src, "--out", empty, "--quiet")
    assert (empty / D.MANIFEST).is_file()
    ing = ingested(tmp_path, run_cli)
    run_cli("dedup", ing, "--out", tmp_path / "dd", "--quiet")
    run_cli("dedup", ing, "--out", tmp_path / "dd", "--quiet", "--force")  # replaces its own
    run_cli("dedup", ing, "--out", empty, "--quiet")  # an ingest folder is a curate folder
    assert json.loads((empty / D.MANIFEST).read_text())["stage"] == "dedup"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("where", ["same", "kept", "parent"])
def test_out_overlapping_an_input_is_refused_before_reading(tmp_path: Path, run_cli,
                                                            where: str) -> None:
    ing = ingested(tmp_path, run_cli)
    out = {"same": ing, "kept": ing / "kept", "parent": tmp_path}[where]
    before = snapshot(ing)
    res = run_cli("dedup", ing, "--out", out, "--quiet", expect=2)
    assert "would destroy the input" in res.output
    assert snapshot(ing) == before
    assert leftovers(tmp_path) == [] and leftovers(ing) == []


def test_an_input_inside_a_curate_out_folder_is_refused(tmp_path: Path, run_cli) -> None:
    outer = ingested(tmp_path, run_cli, "outer")  # a curate folder: replaceable by the rule
    inner = ingested(outer, run_cli, "inner")     # ... but it holds this input
    before = snapshot(outer)
    res = run_cli("dedup", inner, "--out", outer, "--quiet", expect=2)
    assert "holds the input" in res.output
    assert snapshot(outer) == before


def test_ingest_out_over_its_own_input_file_or_folder_is_refused(tmp_path: Path,
                                                                 run_cli) -> None:
    data = tmp_path / "data"
    data.mkdir()
    src = write_pairs(data / "one.jsonl")
    before = snapshot(data)
    for out in (src, data):
        res = run_cli("ingest", "generic", src, "--out", out, "--quiet", expect=2)
        assert "would destroy the input" in res.output
    assert snapshot(data) == before


def test_a_stage_called_from_python_keeps_the_same_rules(tmp_path: Path, run_cli) -> None:
    """StageRun checks too: the rule holds for every stage, not only through the CLI."""
    from curate.stages.dedup import dedup

    ing = ingested(tmp_path, run_cli)
    mine = _foreign(tmp_path / "mydir")
    with pytest.raises(D.UnsafeOutputError, match="not a curate dataset folder"):
        dedup([ing], mine)
    with pytest.raises(D.UnsafeOutputError, match="would destroy the input"):
        StageRun("x", ing / "kept", {}, [{"path": str(ing), "fingerprint": "f", "stage": "i"}])
    assert (mine / "notes.txt").read_text() == "precious\n"


def test_file_uri_outputs_keep_the_rule(tmp_path: Path, run_cli) -> None:
    ing = ingested(tmp_path, run_cli)
    mine = _foreign(tmp_path / "mydir")
    res = run_cli("dedup", ing, "--out", f"file://{mine}", "--quiet", expect=2)
    assert "not a curate dataset folder" in res.output
    res = run_cli("dedup", f"file://{ing}", "--out", f"file://{ing}/kept", "--quiet", expect=2)
    assert "would destroy the input" in res.output
    assert (mine / "notes.txt").read_text() == "precious\n"
