"""`curate check`: a clean run passes; one planted violation of each rule fails that rule only,
naming the rows; bad rules files exit 2; table, json and junit output."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from curate import dataset as D
from curate.inspect.check import RulesError, load_rules, parse_rules, run_checks
from curate.inspect.check_rules import RULES
from curate.report.pipeline import load_run, user_text
from tests.report_support import copy_run, eval_set, shared, small_run

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RULES = ROOT / "rules" / "default.yaml"


@pytest.fixture(scope="module")
def run_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared(tmp_path_factory, "small-run", small_run)


def final_folder(root: Path) -> Path:
    finals = load_run([root]).finals
    assert len(finals) == 1
    return finals[0].path


def kept_rows(folder: Path) -> list[dict[str, Any]]:
    return D.Dataset.open(folder).read(D.KEPT).to_pylist()


def text_rows(folder: Path) -> list[dict[str, Any]]:
    return [r for r in kept_rows(folder) if not r["images"]]


@pytest.fixture(scope="module")
def evals(tmp_path_factory: pytest.TempPathFactory, run_root: Path) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("evals")
    contaminated = text_rows(final_folder(run_root))[2]
    return {
        "clean": eval_set(base / "eval-clean", ["What is the capital of France?",
                                                "Write a haiku about autumn leaves."]),
        "dirty": eval_set(base / "eval-dirty", [  # other case, spacing and an <image> token
            "What is the capital of France?",
            "<image> " + "  ".join(user_text(contaminated["prompt"]).upper().split())]),
        "dirty_id": Path(contaminated["pair_id"]),
    }


def all_rules(eval_dir: Path, **override: dict[str, Any]) -> dict[str, Any]:
    """Every rule, with thresholds the clean run meets; `override` replaces a rule's params."""
    rules: dict[str, dict[str, Any]] = {
        "schema_valid": {}, "conservation": {}, "no_exact_duplicates": {},
        "images_decodable": {}, "no_empty_responses": {}, "chosen_differs": {},
        "row_count": {"min": 1, "max": 100_000}, "max_source_share": {"max": 0.95},
        "max_reject_fraction": {"max": 0.6}, "no_contamination": {"eval": [str(eval_dir)]},
        "reward_precision": {},
    }
    assert set(rules) == set(RULES), "a new rule needs a planted violation here"
    rules.update(override)
    return {"rules": [{"rule": k, **v} for k, v in rules.items()]}


def write_rules(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


# -- planting violations ---------------------------------------------------------------------------
def rewrite(folder: Path, part: str, fn: Callable[[pa.Table], pa.Table]) -> None:
    """`fn` over each of the part's files (one per input fragment)."""
    for f in D.Dataset.open(folder).files(part):
        pq.write_table(fn(pq.read_table(f)), f)


def refresh_manifest(folder: Path) -> None:
    """Make the manifest agree with edited files, so only the planted problem remains."""
    refresh_checksums(folder)
    ds = D.Dataset.open(folder)
    m = dict(ds.manifest)
    kept, rejected = ds.count(D.KEPT), ds.count(D.REJECTED)
    reasons = ds.read(D.REJECTED, columns=["reject_reason"])["reject_reason"].to_pylist()
    m.update(files=D.checksum_files(folder), rows_kept=kept, rows_rejected=rejected,
             rows_in=kept + rejected, rejected_by_reason=dict(sorted(Counter(reasons).items())))
    m.pop("file_rows", None)
    D.write_manifest(folder, m)


def refresh_checksums(folder: Path) -> None:
    """Only the manifest's checksums and sizes (readers verify files against them)."""
    files = D.checksum_files(folder)
    D.write_manifest(folder, {**D.Dataset.open(folder).manifest, "files": files,
                              "file_sizes": D.file_sizes(folder, files)})


def edit_kept_row(folder: Path, pair_id: str, fn: Callable[[dict[str, Any]], None]) -> None:
    def apply(table: pa.Table) -> pa.Table:
        rows = table.to_pylist()
        for r in rows:
            if r["pair_id"] == pair_id:
                fn(r)
        return pa.Table.from_pylist(rows, schema=table.schema)

    rewrite(folder, D.KEPT, apply)
    refresh_manifest(folder)


def plant_schema(folder: Path) -> str:
    rewrite(folder, D.REJECTED, lambda t: t.drop_columns(["reject_detail"]))
    refresh_manifest(folder)
    return "missing column 'reject_detail'"


def plant_conservation(folder: Path) -> str:
    """Drop a kept row (one no other plant touches) and leave the manifest's counts as
    they were (its checksums follow the file: a changed file is refused before any rule)."""
    lost = [r["pair_id"] for r in kept_rows(folder) if r["images"]][1]
    rewrite(folder, D.KEPT, lambda t: t.filter(pc.not_equal(t["pair_id"], lost)))
    refresh_checksums(folder)
    return lost


def plant_duplicate(folder: Path) -> str:
    """Let one of dedup's exact duplicates back into kept/."""
    f = next(f for f in D.Dataset.open(folder).files(D.REJECTED)
             if "exact_duplicate" in pq.read_table(f)["reject_reason"].to_pylist())
    rej = pq.read_table(f)
    idx = rej["reject_reason"].to_pylist().index("exact_duplicate")
    moved = rej.slice(idx, 1).drop_columns(["reject_stage", "reject_reason", "reject_detail"])
    pq.write_table(pa.concat_tables([rej.slice(0, idx), rej.slice(idx + 1)]), f)
    kept = D.Dataset.open(folder).files(D.KEPT)[0]
    t = pq.read_table(kept)
    pq.write_table(pa.concat_tables([t, pa.Table.from_batches([D.conform(moved, t.schema)])]),
                   kept)
    refresh_manifest(folder)
    return str(moved["pair_id"][0])


def plant_corrupt_image(folder: Path) -> str:
    pid = next(r["pair_id"] for r in kept_rows(folder) if r["images"])
    edit_kept_row(folder, pid, lambda r: r["images"][0].update(bytes=r["images"][0]["bytes"][:300]))
    return pid


def plant_empty_response(folder: Path) -> str:
    pid = text_rows(folder)[0]["pair_id"]
    edit_kept_row(folder, pid, lambda r: r.update(rejected="  \n "))
    return pid


def plant_same_responses(folder: Path) -> str:
    pid = text_rows(folder)[1]["pair_id"]
    edit_kept_row(folder, pid, lambda r: r.update(rejected=r["chosen"]))
    return pid


def plant_abstained_reward(folder: Path) -> str:
    """The manifest of a `curate reward` run whose guard abstained."""
    m = D.Dataset.open(folder).manifest
    m["reward"] = {"quality": {"abstained": True, "rejected": 0, "expected_precision": None,
                               "abstain_reason": "no better than chance"}}
    D.write_manifest(folder, m)
    return "abstained: no better than chance"


PLANTS: dict[str, Callable[[Path], str]] = {
    "schema_valid": plant_schema,
    "conservation": plant_conservation,
    "no_exact_duplicates": plant_duplicate,
    "images_decodable": plant_corrupt_image,
    "no_empty_responses": plant_empty_response,
    "chosen_differs": plant_same_responses,
    "reward_precision": plant_abstained_reward,
}
# rules whose violation is a threshold the clean run breaks, or an eval set it overlaps
THRESHOLDS: dict[str, tuple[dict[str, Any], str]] = {
    "row_count": ({"max": 10}, "kept rows"),
    "max_source_share": ({"max": 0.5}, "rlaif-v"),
    "max_reject_fraction": ({"max": 0.2}, "01-ingest-llava-critic: ambiguous"),
}


# -- tests -----------------------------------------------------------------------------------------
def test_clean_run_passes_the_default_rules(run_root: Path, run_cli) -> None:
    result = run_cli("check", run_root, "--rules", DEFAULT_RULES)
    assert "FAIL" not in result.output
    n = len(load_rules(DEFAULT_RULES))
    assert f"{n} passed, 0 failed" in result.output
    assert run_cli("check", final_folder(run_root)).exit_code == 0  # default rules file


def test_clean_run_passes_every_rule(run_root: Path, evals: dict[str, Path],
                                     tmp_path: Path) -> None:
    calls = load_rules(write_rules(tmp_path / "r.yaml", all_rules(evals["clean"])))
    results = run_checks([run_root], calls)
    assert [(r.name, r.passed) for r in results] == [(c.name, True) for c in calls]
    dup = next(r for r in results if r.rule == "no_exact_duplicates")
    assert dup.message.startswith(f"{len(kept_rows(final_folder(run_root)))} distinct")


@pytest.mark.parametrize("rule", [*PLANTS, *THRESHOLDS, "no_contamination"])
def test_one_planted_violation_fails_exactly_its_rule(rule: str, run_root: Path,
                                                      evals: dict[str, Path],
                                                      tmp_path: Path) -> None:
    root = copy_run(run_root, tmp_path / "run")
    override: dict[str, Any] = {}
    if rule in PLANTS:
        expected = PLANTS[rule](final_folder(root))
    elif rule in THRESHOLDS:
        override, expected = THRESHOLDS[rule]
    else:
        override, expected = {"eval": [str(evals["dirty"])]}, str(evals["dirty_id"])
    rules = all_rules(evals["clean"], **{rule: override} if override else {})
    results = run_checks([root], load_rules(write_rules(tmp_path / "r.yaml", rules)))
    failed = [r for r in results if not r.passed]
    assert [r.rule for r in failed] == [rule], [(r.rule, r.message, r.offending)
                                               for r in failed]
    assert failed[0].count >= 1
    assert any(expected in o for o in failed[0].offending), failed[0].offending


@pytest.fixture(scope="module")
def planted_everywhere(tmp_path_factory: pytest.TempPathFactory, run_root: Path,
                       evals: dict[str, Path]) -> tuple[Path, Path, dict[str, str]]:
    """One run with one violation of every rule, and the rules file that finds them."""
    base = tmp_path_factory.mktemp("planted")
    root = copy_run(run_root, base / "run")
    folder = final_folder(root)
    # duplicates before the schema (it reads reject_detail), conservation last (the others
    # refresh the manifest, which would hide a lost row)
    order = ["no_exact_duplicates", "images_decodable", "no_empty_responses", "chosen_differs",
             "schema_valid", "reward_precision", "conservation"]
    assert set(order) == set(PLANTS)
    expected = {rule: PLANTS[rule](folder) for rule in order}
    override: dict[str, Any] = {k: v for k, (v, _) in THRESHOLDS.items()}
    expected.update({k: e for k, (_, e) in THRESHOLDS.items()})
    override["no_contamination"] = {"eval": [str(evals["dirty"])]}
    expected["no_contamination"] = str(evals["dirty_id"])
    rules = write_rules(base / "strict.yaml", all_rules(evals["clean"], **override))
    return root, rules, expected


def test_planted_run_fails_every_rule_in_the_table(planted_everywhere, run_cli) -> None:
    root, rules, expected = planted_everywhere
    out = run_cli("check", root, "--rules", rules, expect=1).output
    assert f"0 passed, {len(RULES)} failed" in out
    for rule, needle in expected.items():
        line = next(ln for ln in out.splitlines() if f" {rule} " in ln)
        assert "FAIL" in line, line
        assert needle in out, (rule, needle)


def test_planted_run_json(planted_everywhere, run_cli) -> None:
    root, rules, expected = planted_everywhere
    data = json.loads(run_cli("check", root, "--rules", rules, "--format", "json",
                              expect=1).output)
    assert data["passed"] is False
    assert sorted(data["failed"]) == sorted(RULES)
    for r in data["results"]:
        assert any(expected[r["rule"]] in o for o in r["offending"]), r


def test_planted_run_junit_to_a_file(planted_everywhere, run_cli, tmp_path: Path) -> None:
    root, rules, expected = planted_everywhere
    out = tmp_path / "check.xml"
    result = run_cli("check", root, "--rules", rules, "--format", "junit", "--out", out,
                     expect=1)
    assert "FAIL" in result.output  # the table still prints
    suites = ET.parse(out).getroot()
    assert suites.tag == "testsuites"
    assert suites.get("tests") == suites.get("failures") == str(len(RULES))
    cases = {c.get("name"): c for c in suites.iter("testcase")}
    assert set(cases) == set(RULES)
    for name, case in cases.items():
        failure = case.find("failure")
        assert failure is not None and expected[name] in failure.text


def test_passing_run_junit_and_json(run_root: Path, run_cli) -> None:
    xml = run_cli("check", run_root, "--rules", DEFAULT_RULES, "--format", "junit").output
    suites = ET.fromstring(xml.split("\n", 1)[1])
    assert suites.get("failures") == "0"
    assert all(c.find("failure") is None for c in suites.iter("testcase"))
    data = json.loads(run_cli("check", run_root, "--format", "json").output)
    assert data["passed"] is True and data["failed"] == []


BAD_RULES = {
    "not yaml": ("rules: [schema_valid\n  - x: [", "not valid YAML"),
    "not a mapping": ("- schema_valid\n", "a mapping with one key"),
    "extra top key": ({"rules": [], "extra": 1}, "a mapping with one key"),
    "unknown rule": ({"rules": ["no_such_rule"]}, "unknown rule 'no_such_rule'"),
    "unknown param": ({"rules": [{"rule": "row_count", "minimum": 3}]}, "unknown parameter"),
    "wrong type": ({"rules": [{"rule": "row_count", "min": "ten"}]}, "min must be int"),
    "bool for int": ({"rules": [{"rule": "row_count", "min": True}]}, "min must be int"),
    "fraction": ({"rules": [{"rule": "max_source_share", "max": 1.5}]}, "fraction in [0, 1]"),
    "missing param": ({"rules": [{"rule": "max_source_share"}]}, "needs max"),
    "eval missing": ({"rules": [{"rule": "no_contamination", "eval": ["/nonexistent/ev"]}]},
                     "does not exist"),
    "repeat": ({"rules": ["schema_valid", "schema_valid"]}, "unique"),
    "item type": ({"rules": [3]}, "give a rule name"),
}


@pytest.mark.parametrize("case", list(BAD_RULES))
def test_bad_rules_file_exits_2(case: str, run_root: Path, run_cli, tmp_path: Path) -> None:
    data, message = BAD_RULES[case]
    rules = write_rules(tmp_path / "bad.yaml", data)
    result = run_cli("check", run_root, "--rules", rules, expect=2)
    assert message in " ".join(result.output.split()), result.output
    with pytest.raises(RulesError):
        load_rules(rules)


def test_repeated_rule_with_names_and_missing_rules_file(run_root: Path, run_cli,
                                                         tmp_path: Path) -> None:
    calls = parse_rules({"rules": [{"rule": "max_reject_fraction", "max": 0.5},
                                   {"rule": "max_reject_fraction", "name": "dedup_share",
                                    "stage": "dedup", "reasons": ["exact_duplicate"],
                                    "max": 0.01}]})
    results = run_checks([run_root], calls)
    assert [(r.name, r.passed) for r in results] == [("max_reject_fraction", True),
                                                     ("dedup_share", False)]
    assert "02-dedup: exact_duplicate" in results[1].offending[0]
    run_cli("check", run_root, "--rules", tmp_path / "absent.yaml", expect=2)
    run_cli("check", tmp_path / "no-such-folder", "--rules", DEFAULT_RULES, expect=2)
    run_cli("check", run_root, "--format", "xml", expect=2)


def test_list_rules(run_cli) -> None:
    out = run_cli("check", "--list-rules").output
    for name in RULES:
        assert name in out


def test_default_rules_file_is_what_the_docs_say() -> None:
    calls = load_rules(DEFAULT_RULES)
    assert {c.rule for c in calls} == set(RULES) - {"no_contamination"}
    text = DEFAULT_RULES.read_text()
    assert "no_contamination" in text  # shown, commented out: it needs eval folders
