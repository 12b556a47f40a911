"""Real data: does `curate pairs --strategy best-worst` reproduce human preferences?

The 300 LLaMA-Factory demo pairs become 2-candidate prompts (chosen and rejected in a
seeded random order, the label kept aside), scored by a MiniLM reward model trained
with `curate train --freeze backbone` on hh-rlhf harmless-base. Agreement = the share
of prompts whose pair puts the human-chosen response first. The reward model is
trained on another data set (harmlessness red-teaming, not the demo's helpfulness
questions), so this measures transfer, not fit; the test pins what the pipeline must
guarantee (every prompt accounted for, each pair's order is the scores' order, the
agreement printed with its 95% interval) and that the agreement is not below chance.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from curate import dataset as D
from curate.train.evaluate import wilson_interval
from tests.conftest import shared_data
from tests.helpers import assert_conserved, rows, write_jsonl

pytestmark = pytest.mark.slow


def _two_candidate_prompts(tmp_path: Path, run_cli) -> tuple[Path, dict[str, str]]:
    """A candidates file from the demo pairs and the human-chosen response of each prompt."""
    lf = tmp_path / "lf"
    run_cli("ingest", "sharegpt", shared_data("llamafactory/dpo_en_demo.json"), "--out", lf)
    records, human, swapped = [], {}, 0
    for r in rows(lf):
        swap = hashlib.sha256(r["source_id"].encode()).digest()[0] % 2 == 1
        pair = [r["rejected"], r["chosen"]] if swap else [r["chosen"], r["rejected"]]
        records.append({"id": r["source_id"], "messages": r["prompt"], "samples": pair,
                        "policy": "llamafactory-demo"})
        human[r["source_id"]] = r["chosen"]
        swapped += swap
    assert len(records) == 300 and 100 < swapped < 200  # position says nothing of the label
    return write_jsonl(tmp_path / "candidates.jsonl", records), human


def test_best_worst_reproduces_human_labels(tmp_path: Path, run_cli,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CURATE_CACHE", str(tmp_path / "cache"))
    hh, rm = tmp_path / "hh", tmp_path / "rm"
    run_cli("ingest", "hh-rlhf", shared_data("hh-rlhf/harmless-base-test.jsonl.gz"),
            "--out", hh)
    run_cli("train", hh, "--model", "minilm", "--out", rm, "--freeze", "backbone",
            "--max-length", "128", "--eval-fraction", "0.1")
    hh_eval = json.loads((rm / "metrics.json").read_text())["eval"]

    src, human = _two_candidate_prompts(tmp_path, run_cli)
    cands, prs = tmp_path / "cands", tmp_path / "pairs"
    run_cli("ingest", "candidates", src, "--out", cands, "--map",
            "prompt=messages,responses=samples,model=policy,id=id")
    assert D.Dataset.open(cands).count() == 300
    run_cli("pairs", cands, "--model", rm, "--out", prs)
    m = assert_conserved(prs)
    info = m["pairs"]
    assert m["rows_in"] == 300 == info["prompts_with_pairs"] + m["rows_rejected"]

    kept = rows(prs)
    for r in kept:
        assert r["chosen_score"] > r["rejected_score"]
    agree = sum(r["chosen"] == human[r["source_id"].split("#")[0]] for r in kept)
    n = 300  # a prompt without a pair (a tie, near-identical responses) counts as a miss
    lo, hi = wilson_interval(agree, n)
    print(f"\nbest-worst reproduces the human label on {agree}/{n} prompts = {agree / n:.3f} "
          f"(95% CI {lo:.3f}-{hi:.3f}); {len(kept)} pairs, rejected "
          f"{m['rejected_by_reason']}; hh-rlhf held-out accuracy {hh_eval['accuracy']:.3f} "
          f"{hh_eval['accuracy_ci95']}")

    # a second strategy over the same scores: nothing is scored again
    again = run_cli("pairs", cands, "--model", rm, "--out", tmp_path / "pairs-all",
                    "--strategy", "all").output
    assert "scores: 0 computed" in again
    assert agree / n >= 0.5 or hi >= 0.5  # not worse than chance
