"""manifest.json as a typed record: format 2 on disk, format 1 upgraded, newer refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curate import dataset as D
from curate.manifest import CORE_FIELDS, FORMAT, Manifest, ManifestError, from_json, parse
from tests.helpers import assert_conserved
from tests.safety_support import ingested


def _dedup(tmp_path: Path, run_cli) -> Path:
    out = tmp_path / "dedup"
    run_cli("dedup", ingested(tmp_path, run_cli), "--out", out, "--quiet")
    return out


def test_a_stage_writes_format_2_with_its_facts_under_one_key(tmp_path: Path, run_cli) -> None:
    out = _dedup(tmp_path, run_cli)
    raw = json.loads((out / D.MANIFEST).read_text())
    assert raw["format"] == FORMAT == 2
    assert set(raw) == CORE_FIELDS - {"inputs_consumed"} | {"facts", "format"}
    assert set(raw["facts"]) == {"dedup"}
    m = D.read_manifest(out)
    assert isinstance(m, Manifest)
    assert m.rows_in == m.rows_kept + m.rows_rejected == raw["rows_in"]
    # the flat view a format-1 reader saw: core fields, then each fact by its name
    assert m["dedup"] == raw["facts"]["dedup"] == m.facts["dedup"]
    assert m["rows_kept"] == raw["rows_kept"] and "facts" not in m and "format" not in m


def test_a_format_1_manifest_is_upgraded_to_the_same_view(tmp_path: Path, run_cli) -> None:
    out = _dedup(tmp_path, run_cli)
    raw = json.loads((out / D.MANIFEST).read_text())
    old = {k: v for k, v in raw.items() if k not in ("format", "facts")} | raw["facts"]
    (out / D.MANIFEST).write_text(json.dumps(old))
    m = D.read_manifest(out)
    assert m is not None and m.format == FORMAT and m.facts == raw["facts"]
    assert dict(m) == dict(parse(json.dumps(raw), "x"))
    # and the folder is still a valid input, read with its facts: a rerun of dedup on it
    run_cli("dedup", out, "--out", tmp_path / "again", "--quiet")
    assert_conserved(tmp_path / "again")
    assert D.read_manifest(tmp_path / "again").rows_in == m.rows_kept


def test_a_newer_format_is_refused_with_what_to_do(tmp_path: Path, run_cli) -> None:
    out = _dedup(tmp_path, run_cli)
    raw = json.loads((out / D.MANIFEST).read_text())
    (out / D.MANIFEST).write_text(json.dumps({**raw, "format": FORMAT + 1}))
    res = run_cli("dedup", out, "--out", tmp_path / "again", "--quiet", expect=2)
    assert f"{out}/manifest.json" in res.output
    assert f"format {FORMAT + 1}" in res.output and "Upgrade curate" in res.output
    assert not (tmp_path / "again").exists()


@pytest.mark.parametrize("edit, words", [
    (lambda m: m.update(rows_kept="12"), "'rows_kept' should be a JSON int"),
    (lambda m: m.pop("rows_in"), "lacks rows_in"),
    (lambda m: m.update(reward={"a": 1}), "unknown top-level manifest keys ['reward']"),
    (lambda m: m.update(format="2"), "'format' must be a whole number"),
    (lambda m: m["facts"].update(rows_in=3), "may not be named like a core manifest field"),
])
def test_a_damaged_format_2_manifest_is_named(edit, words: str) -> None:
    m = Manifest(stage="dedup", files={}, rows_in=1, rows_kept=1, rows_rejected=0).to_json()
    edit(m)
    with pytest.raises(ManifestError, match="^where: ") as err:
        from_json(m, "where")
    assert words in str(err.value)


def test_a_fact_may_not_shadow_a_core_field() -> None:
    with pytest.raises(ManifestError, match="rows_kept"):
        Manifest(stage="x", files={}, facts={"rows_kept": 0})
    m = Manifest(stage="x", files={}, facts={"x": {"n": 1}})
    assert m.with_facts(y=2).facts == {"x": {"n": 1}, "y": 2} and m.facts == {"x": {"n": 1}}
    assert "inputs_consumed" not in m and m.get("inputs_consumed") is None
