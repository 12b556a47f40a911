"""`curate report --compare RUN_A RUN_B` on two runs that differ in one dedup threshold.

Run A is the demo sample through ingest and dedup (default max distance); run B
is the same ingested folders through dedup with `--max-distance 24`, which
removes more near-duplicate images.
"""

from __future__ import annotations

import re
import shutil
from functools import partial
from pathlib import Path

import pytest

from curate import dataset as D
from curate.report.compare import compare, flatten
from tests.report_support import one_worker, shared, small_run, stage_folders


def _loose_run(root: Path, base: Path) -> None:
    """Run A's ingested folders, copied, through dedup with a looser threshold."""
    from curate.stages.dedup import dedup

    root.mkdir(parents=True)
    ingested = []
    for src in stage_folders(base)["ingest"]:
        shutil.copytree(src, root / src.name)
        ingested.append(root / src.name)
    dedup(ingested, root / "02-dedup", max_distance=24, engine=one_worker())


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = shared(tmp_path_factory, "small-run", small_run)
    loose = shared(tmp_path_factory, "small-run-loose", partial(_loose_run, base=base))
    return base, loose


@pytest.fixture(scope="module")
def comparison(runs: tuple[Path, Path]):
    return compare(*runs, examples=50)


def _manifest(root: Path, stage: str) -> dict:
    (folder,) = stage_folders(root)[stage]
    return D.Dataset.open(folder).manifest


def test_deltas_equal_the_manifests_differences(runs, comparison) -> None:
    a, b = (_manifest(r, "dedup") for r in runs)
    assert a["rejected_by_reason"] != b["rejected_by_reason"], "the threshold changed nothing"
    dedup = next(s for s in comparison.stages if s.stage == "dedup")
    assert dedup.rows_in == (a["rows_in"], b["rows_in"])
    assert dedup.kept == (a["rows_kept"], b["rows_kept"])
    reasons = set(a["rejected_by_reason"]) | set(b["rejected_by_reason"])
    assert dedup.by_reason == {r: (a["rejected_by_reason"].get(r, 0),
                                   b["rejected_by_reason"].get(r, 0)) for r in reasons}
    ingest = next(s for s in comparison.stages if s.stage == "ingest")
    assert ingest.kept[0] == ingest.kept[1]  # the same ingested folders
    assert all(x == y for x, y in ingest.by_reason.values())


def test_config_differences_name_the_changed_threshold(runs, comparison) -> None:
    a, b = (_manifest(r, "dedup") for r in runs)
    diffs = {(d.stage, k): (x, y) for d in comparison.configs for k, x, y in d.changes}
    assert diffs[("dedup", "max_distance")] == (a["config"]["max_distance"], 24)
    changed = {k for k, v in flatten(a["config"]).items() if flatten(b["config"]).get(k) != v}
    assert {k for s, k in diffs if s == "dedup"} == changed
    assert not [k for s, k in diffs if s == "ingest"]


def test_rows_kept_in_one_run_and_rejected_in_the_other(runs, comparison) -> None:
    ra, rb = runs
    kept_a = set(D.Dataset.open(ra / "02-dedup").read(D.KEPT, columns=["pair_id"])["pair_id"]
                 .to_pylist())
    rej_b = D.Dataset.open(rb / "02-dedup").read(
        D.REJECTED, columns=["pair_id", "reject_reason"]).to_pylist()
    only_b_rejects = {r["pair_id"] for r in rej_b if r["pair_id"] in kept_a}
    assert only_b_rejects, "the looser threshold rejected nothing that A kept"
    flipped_a, flipped_b = comparison.flipped
    assert flipped_a.total == len(only_b_rejects)
    assert {c.pair_id for c in flipped_a.cards} == only_b_rejects  # examples=50 shows all
    assert all(c.reason == "near_duplicate_image" and c.stage == "dedup" for c in flipped_a.cards)
    # conservation: B's final kept rows = A's - the ones B rejected + the ones A rejected
    kept_b = D.Dataset.open(rb / "02-dedup").count(D.KEPT)
    assert kept_b == len(kept_a) - flipped_a.total + flipped_b.total
    assert comparison.final_kept == (len(kept_a), kept_b)


def test_compare_page_through_the_cli(runs, run_cli, tmp_path: Path) -> None:
    out = tmp_path / "compare.html"
    result = run_cli("report", "--compare", *runs, "--out", out, "--examples", "2")
    assert "wrote" in result.output
    html = out.read_text()
    for sid in ("stages", "config", "kept-a", "kept-b"):
        assert f'<section id="{sid}">' in html
    a, b = (_manifest(r, "dedup") for r in runs)
    deltas = [int(x) for x in re.findall(r'data-delta="(-?\d+)"', html)]
    assert b["rows_kept"] - a["rows_kept"] in deltas
    assert len(re.findall(r'class="flip" data-kept-in="A"', html)) == 2  # --examples 2
    assert "max_distance" in html


def test_compare_usage_errors(runs, run_cli, tmp_path: Path) -> None:
    both = run_cli("report", runs[0], "--compare", *runs, "--out", tmp_path / "x.html",
                   expect=2)
    assert "not both" in both.output
    neither = run_cli("report", "--out", tmp_path / "x.html", expect=2)
    assert "--compare" in neither.output
    missing = run_cli("report", "--compare", runs[0], tmp_path / "nope", "--out",
                      tmp_path / "x.html", expect=2)
    assert "nope" in missing.output
    assert not (tmp_path / "x.html").exists()
