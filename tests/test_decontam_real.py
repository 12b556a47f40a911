"""Real data: VL-RewardBench prompts planted, lightly edited, into hh-rlhf pairs.

The edits (tests/similar_support.light_edit) are case, punctuation, whitespace, a word
inserted, a word dropped and a prefix sentence; half the planted rows keep the hh-rlhf
conversation before the planted question. Recall of the planted rows must be >= 0.95
and false positives among the untouched hh-rlhf rows <= 0.5%.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from curate.dataset import Dataset
from curate.engine import get_engine
from curate.models.embedder import EmbedSettings
from curate.stages.decontam import decontam
from curate.stages.ingest import ingest
from tests.conftest import shared_data
from tests.similar_support import hh_with_prompt, light_edit, read_hh, write_jsonl

N_PLANTED = 300
ONE = get_engine("local", workers=1)


@pytest.mark.slow
def test_planted_vl_rewardbench_in_hh_rlhf(tmp_path: Path) -> None:
    hh_path = shared_data("hh-rlhf/harmless-base-test.jsonl.gz")
    vl_path = shared_data("vl-rewardbench/data.jsonl")
    hh = read_hh(hh_path)
    queries = sorted({json.loads(line)["query"] for line in vl_path.open()})
    rng = random.Random(4)
    planted_q = rng.sample(queries, N_PLANTED)
    planted_at = set(rng.sample(range(len(hh)), N_PLANTED))
    rows, planted_ids = [], set()
    for i, row in enumerate(hh):
        rid = f"row{i:05d}"
        if i in planted_at:
            k = len(planted_ids)
            q = light_edit(planted_q[k], k, rng)
            row = hh_with_prompt(row, q, keep_context=k % 2 == 1)
            planted_ids.add(rid)
        rows.append({"id": rid, **row})
    train_src = write_jsonl(tmp_path / "train.jsonl", rows)
    ingest("hh-rlhf", [str(train_src)], tmp_path / "train", engine=ONE)
    ingest("vl-rewardbench", [str(vl_path)], tmp_path / "vlrb", engine=ONE)

    m = decontam([tmp_path / "train"], [tmp_path / "vlrb"], tmp_path / "out",
                 embed=EmbedSettings(cache=tmp_path / "cache"), engine=ONE)
    out = Dataset.open(tmp_path / "out")
    rej = out.read("rejected").to_pylist()
    kept = out.read("kept").to_pylist()
    flagged = {r["source_id"] for r in rej}
    train_ids = {r["source_id"] for r in kept} | flagged
    planted = planted_ids & train_ids  # (ingest keeps every planted row; checked below)
    untouched = train_ids - planted_ids
    recall = len(flagged & planted) / len(planted)
    false_pos = len(flagged & untouched) / len(untouched)
    print(f"\nplanted {len(planted)}: recall {recall:.4f}; untouched {len(untouched)}: "
          f"false positives {len(flagged & untouched)} ({false_pos:.4%}); "
          f"tests fired {m['tests_fired']}")
    everything = kept + rej
    for t in (0.85, 0.9, 0.95):  # what other embedding thresholds would give (scores are kept)
        hit = {r["source_id"] for r in everything if (r["decontam_max_sim"] or 0) >= t or (
            r.get("decontam_tests") and r["decontam_tests"] != "embedding")}
        print(f"  embed threshold {t}: recall {len(hit & planted) / len(planted):.4f}, "
              f"false positives {len(hit & untouched)}")
    missed = [r for r in kept if r["source_id"] in planted]
    for r in missed[:10]:
        print("missed:", repr(r["prompt"][-1]["content"][:90]), r["decontam_max_sim"])
    assert len(planted) == N_PLANTED
    assert recall >= 0.95
    assert false_pos <= 0.005
    for r in rej:
        assert r["reject_reason"] == "contaminated"
        assert "vl-rewardbench:" in r["reject_detail"]
        assert r["decontam_tests"] and set(r["decontam_tests"].split(",")) <= {
            "ngram", "exact", "embedding", "image"}
    assert m["rows_in"] == m["rows_kept"] + m["rows_rejected"] == len(train_ids)
