"""`curate explain`: a kept pair, an exact duplicate, a near duplicate, a pair rejected at ingest,
prefixes and errors, through the functions and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curate import dataset as D
from curate.inspect.explain import PairNotFound, explain
from curate.report.pipeline import load_run, user_text
from tests.report_support import shared, small_run, stage_folders


@pytest.fixture(scope="module")
def run_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared(tmp_path_factory, "small-run", small_run)


@pytest.fixture(scope="module")
def dedup_rejects(run_root: Path) -> dict[str, list[dict]]:
    folder = stage_folders(run_root)["dedup"][0]
    rows = D.Dataset.open(folder).read(D.REJECTED).to_pylist()
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["reject_reason"], []).append(r)
    return out


def test_exact_duplicate_names_the_survivor_with_both_prompts(run_root: Path, dedup_rejects,
                                                             run_cli) -> None:
    dup = next(r for r in dedup_rejects["exact_duplicate"] if r["images"])
    survivor = dup["reject_detail"]
    e = explain(dup["pair_id"], [run_root])
    assert [(v.stage, v.outcome) for v in e.visits] == [("ingest", "kept"), ("dedup", "rejected")]
    final = e.final
    assert (final.reason, final.detail) == ("exact_duplicate", survivor)
    [rel] = final.related
    assert (rel.pair_id, rel.found, rel.outcome, rel.folder) == (survivor, True, "kept",
                                                                 "02-dedup")
    assert rel.row["source"] != e.row["source"]  # the planted copy crosses sources
    assert user_text(rel.row["prompt"]) == user_text(e.row["prompt"])

    out = run_cli("explain", dup["pair_id"], run_root).output
    assert "exact_duplicate" in out and survivor in out
    assert "this pair and " + survivor in out
    assert out.count(user_text(e.row["prompt"])) >= 3  # the header and both table columns
    assert "final: rejected at dedup (exact_duplicate)" in out


def test_kept_pair_lists_the_copies_removed_in_its_favour(run_root: Path, dedup_rejects,
                                                         run_cli) -> None:
    near = dedup_rejects["near_duplicate_image"][0]
    survivor = near["reject_detail"].split()[0]
    e = explain(survivor, [run_root])
    assert [v.outcome for v in e.visits] == ["kept", "kept"]
    assert e.final.folder == "02-dedup"
    assert "image_phash" in e.final.attached  # the column dedup attached, shown as hex
    assert all(len(h) == 16 for h in e.final.attached["image_phash"])
    removed = {r.pair_id: r for r in e.final.related}
    assert near["pair_id"] in removed
    assert removed[near["pair_id"]].reason == "near_duplicate_image"
    assert removed[near["pair_id"]].relation == "rejected in favour of this pair"

    out = run_cli("explain", survivor[:10], run_root).output  # a prefix is enough
    assert "final: kept in 02-dedup" in out
    assert f"{near['pair_id']} was near_duplicate_image in favour of this pair" in out


def test_pair_rejected_at_ingest_stops_there(run_root: Path) -> None:
    folder = stage_folders(run_root)["ingest"]
    corrupt = next(r for f in folder for r in D.Dataset.open(f).read(D.REJECTED).to_pylist()
                   if r["reject_reason"] == "corrupt_image")
    e = explain(corrupt["pair_id"], [run_root])
    assert [(v.stage, v.outcome, v.reason) for v in e.visits] == [
        ("ingest", "rejected", "corrupt_image")]
    assert e.final.related == []


def test_json_output(run_root: Path, dedup_rejects, run_cli) -> None:
    dup = dedup_rejects["exact_duplicate"][0]
    data = json.loads(run_cli("explain", dup["pair_id"], run_root, "--json").output)
    assert data["pair_id"] == dup["pair_id"]
    assert data["visits"][-1]["reason"] == "exact_duplicate"
    assert data["visits"][-1]["related"][0]["pair_id"] == dup["reject_detail"]
    assert isinstance(data["row"]["images"], list)  # sizes, never bytes


def test_missing_row_downstream_is_reported(run_root: Path, tmp_path: Path) -> None:
    """A pair kept upstream but absent downstream (a conservation break) shows as missing."""
    from tests.report_support import copy_run
    from tests.test_check import plant_conservation

    root = copy_run(run_root, tmp_path / "run")
    lost = plant_conservation(load_run([root]).finals[0].path)
    e = explain(lost, [root])
    assert [v.outcome for v in e.visits] == ["kept", "missing"]


def test_unknown_ambiguous_and_short_ids(run_root: Path, run_cli) -> None:
    with pytest.raises(PairNotFound, match="no pair"):
        explain("ffffffffffffffff", [run_root])
    with pytest.raises(PairNotFound, match="at least 6"):
        explain("abc", [run_root])
    ids = sorted(r for s in load_run([run_root]).steps for part in (D.KEPT, D.REJECTED)
                 for r in s.dataset.read(part, columns=["pair_id"])["pair_id"].to_pylist())
    shared_prefix = next((a[:6] for a, b in zip(ids, ids[1:], strict=False)
                          if a[:6] == b[:6] and a != b), None)
    if shared_prefix is not None:
        with pytest.raises(PairNotFound, match="ambiguous"):
            explain(shared_prefix, [run_root])
    assert "no pair" in run_cli("explain", "ffffffffffff", run_root, expect=2).output
    run_cli("explain", "ffffffffffff", run_root / "nope", expect=2)


def test_contaminated_pair_names_the_eval_row(run_root: Path, tmp_path: Path, run_cli) -> None:
    from curate.stages.decontam import decontam
    from tests.report_support import copy_run, eval_set

    root = copy_run(run_root, tmp_path / "run")
    evals = eval_set(tmp_path / "evals" / "eval-rb", ["how do i BAKE bread??",
                                                      "Write a limerick about a heron."])
    decontam([root / "02-dedup"], [evals], root / "03-decontam")
    rejected = D.Dataset.open(root / "03-decontam").read(D.REJECTED).to_pylist()
    [row] = [r for r in rejected if r["reject_reason"] == "contaminated"]
    assert "bake bread" in user_text(row["prompt"]).lower()
    e = explain(row["pair_id"], [root])
    assert [(v.stage, v.outcome) for v in e.visits] == [
        ("ingest", "kept"), ("dedup", "kept"), ("decontam", "rejected")]
    assert e.final.reason == "contaminated"
    assert "rewardbench:0" in e.final.detail  # the eval set and the eval row's id
    out = run_cli("explain", row["pair_id"], root).output
    assert "contaminated" in out and "rewardbench:0" in out
    assert "final: rejected at decontam (contaminated)" in out


def test_a_run_holding_a_folder_of_prompts_explains_its_pairs(run_root: Path, tmp_path: Path,
                                                               dedup_rejects, run_cli) -> None:
    """A `candidates` folder (prompts with N responses, no pair_id) beside the pair folders,
    as the README's walk-through leaves it, is passed over, not an internal error."""
    from tests.helpers import write_jsonl
    from tests.report_support import copy_run

    root = copy_run(run_root, tmp_path / "run")
    src = write_jsonl(tmp_path / "samples.jsonl", [
        {"id": "q1", "q": "Name a colour.", "s": ["Red.", "Blue.", "A car."]}])
    run_cli("ingest", "candidates", src, "--map", "prompt=q,responses=s,id=id",
            "--out", root / "cands", "--quiet")
    dup = dedup_rejects["exact_duplicate"][0]
    data = json.loads(run_cli("explain", dup["pair_id"], root, "--json").output)
    assert data["visits"][-1]["reason"] == "exact_duplicate"
