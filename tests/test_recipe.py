"""The SMALL Skywork-VL recipe end to end through make, twice (the second run does nothing)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from curate.dataset import read_manifest
from tests.helpers import assert_conserved

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_small_recipe_runs_end_to_end_and_reruns_nothing(tmp_path: Path) -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    work = tmp_path / "run"
    cmd = ["make", "-f", "recipes/skywork-vl.mk", "SMALL=1", f"WORK={work}",
           f"CURATE={sys.executable} -m curate.cli", "report"]
    first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    stages = ["02-dedup", "03-similar", "04-decontam", "05-reward", "05a-flag", "05b-generate",
              "05c-pairs", "05d-merge", "06-shard"]
    for name in stages:
        assert_conserved(work / name)
    m = {n: read_manifest(work / n) for n in stages}
    assert m["02-dedup"]["rejected_by_reason"]["exact_duplicate"] == 2
    assert m["04-decontam"]["rejected_by_reason"] == {"contaminated": 1}
    # the regenerate loop: flagged rows -> new responses -> new pairs -> merged before shard
    flagged = sum(m["05a-flag"]["reward"]["flagged"].values())
    assert flagged > 0 and m["05b-generate"]["rows_in"] == flagged
    assert m["05b-generate"]["generate"]["samples_generated"] == 4 * m["05b-generate"][
        "generate"]["requests"]
    assert m["05c-pairs"]["pairs"]["pairs_produced"] > 0
    assert m["05d-merge"]["rows_in"] == m["05-reward"]["rows_kept"] + m["05c-pairs"]["rows_kept"]
    assert m["06-shard"]["rows_in"] == m["05d-merge"]["rows_kept"]
    assert json.loads((work / "08-eval.json").read_text())["rewardbench"]["overall"]["pairs"] == 4
    assert (work / "report.html").stat().st_size > 10_000
    second = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert second.returncode == 0
    assert "Nothing to be done" in second.stdout, second.stdout
