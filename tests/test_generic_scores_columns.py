"""`generic` with scores that contradict the label, and files whose columns are not mapped.

Issue 14 item 5 (a tie in scores is `ambiguous`, chosen scored below rejected is
`score_contradicts_label`, `--min-score-gap`) and issue 22 item 5 (a mapped or default
column the file does not have is a schema error naming what is missing and what exists).
"""

from __future__ import annotations

from pathlib import Path

from curate.sources.scores import score_problem
from tests.helpers import assert_conserved, rows, write_jsonl


def _scored(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "scored.jsonl", [
        {"id": "tie", "q": "Why?", "a": "Because.", "b": "Dunno.", "sa": 8.5, "sb": 8.5},
        {"id": "contra", "q": "Why?", "a": "Because!", "b": "Dunno!", "sa": 3, "sb": 9},
        {"id": "close", "q": "How?", "a": "Thus.", "b": "Somehow.", "sa": 7.2, "sb": 7.0},
        {"id": "clear", "q": "Who?", "a": "Ada.", "b": "Bob.", "sa": 9, "sb": 2},
        {"id": "unscored", "q": "When?", "a": "Now.", "b": "Later."},
    ])


MAP = "prompt=q,chosen=a,rejected=b,chosen_score=sa,rejected_score=sb"


def test_scores_that_contradict_the_label_are_rejected(tmp_path: Path, run_cli) -> None:
    out = tmp_path / "out"
    run_cli("ingest", "generic", _scored(tmp_path), "--map", MAP, "--out", out, "--quiet")
    m = assert_conserved(out)
    assert sorted(r["source_id"] for r in rows(out)) == ["clear", "close", "unscored"]
    by_id = {r["source_id"]: r for r in rows(out, "rejected")}
    assert by_id["tie"]["reject_reason"] == "ambiguous"
    assert by_id["contra"]["reject_reason"] == "score_contradicts_label"
    assert "3" in by_id["contra"]["reject_detail"] and "9" in by_id["contra"]["reject_detail"]
    assert m["rejected_by_reason"] == {"ambiguous": 1, "score_contradicts_label": 1}


def test_min_score_gap(tmp_path: Path, run_cli) -> None:
    out = tmp_path / "out"
    run_cli("ingest", "generic", _scored(tmp_path), "--map", MAP, "--min-score-gap", "0.5",
            "--out", out, "--quiet")
    assert_conserved(out)
    assert sorted(r["source_id"] for r in rows(out)) == ["clear", "unscored"]
    reasons = {r["source_id"]: r["reject_reason"] for r in rows(out, "rejected")}
    assert reasons == {"tie": "ambiguous", "close": "ambiguous",
                       "contra": "score_contradicts_label"}


def test_score_problem_rules() -> None:
    assert score_problem(None, 3.0) is None
    assert score_problem(2.0, 1.0) is None
    assert score_problem(1.0, 1.0)[0] == "ambiguous"
    assert score_problem(1.0, 2.0)[0] == "score_contradicts_label"
    assert score_problem(1.2, 1.0, min_gap=0.5)[0] == "ambiguous"
    assert score_problem(1.5, 1.0, min_gap=0.5) is None
    assert score_problem(float("nan"), 1.0) is None  # left to the score validator


def test_unmapped_columns_are_a_schema_error(tmp_path: Path, run_cli) -> None:
    src = write_jsonl(tmp_path / "qa.jsonl", [{"question": "Why?", "good": "A.", "bad": "B."}])
    out = tmp_path / "out"
    res = run_cli("ingest", "generic", src, "--out", out, expect=2)
    assert "qa.jsonl" in res.output
    assert "'prompt'" in res.output and "'chosen'" in res.output and "'rejected'" in res.output
    assert "question, good, bad" in res.output and "Traceback" not in res.output
    assert not (out / "manifest.json").exists()
    # a mapped column that does not exist is named with the field it was mapped to
    res = run_cli("ingest", "generic", src, "--map", "prompt=question,chosen=good,rejected=worse",
                  "--out", out, expect=2)
    assert "'worse' (rejected)" in res.output
    # mapped right, it ingests
    run_cli("ingest", "generic", src, "--map", "prompt=question,chosen=good,rejected=bad",
            "--out", out, "--quiet")
    assert [r["chosen"] for r in rows(out)] == ["A."]


def test_every_kind_is_listed_when_a_kind_is_unknown(tmp_path: Path, run_cli) -> None:
    from curate.sources import ADAPTERS

    res = run_cli("ingest", "nosuch", tmp_path / "x.jsonl", "--out", tmp_path / "o", expect=2)
    for kind in [*ADAPTERS, "candidates"]:
        assert kind in res.output
    assert "candidates" in run_cli("ingest", "--help").output


def test_skywork_pref_keeps_and_checks_scores_when_the_source_has_them(tmp_path: Path) -> None:
    """Skywork-Reward-Preference-80K rows (chosen / rejected message lists sharing their
    context, `source`), here with UltraFeedback's score columns added."""
    from curate.stages.ingest import ingest

    ctx = [{"role": "user", "content": "2+2?"}]
    src = write_jsonl(tmp_path / "sky.jsonl", [
        {"chosen": ctx + [{"role": "assistant", "content": "4"}],
         "rejected": ctx + [{"role": "assistant", "content": "5"}], "source": "s",
         "score_chosen": 9.0, "score_rejected": 2.0},
        {"chosen": ctx + [{"role": "assistant", "content": "four"}],
         "rejected": ctx + [{"role": "assistant", "content": "five"}], "source": "s",
         "score_chosen": 3.0, "score_rejected": 9.0},
    ])
    out = tmp_path / "out"
    ingest("skywork-pref", [str(src)], out)
    assert_conserved(out)
    [row] = rows(out)
    assert (row["chosen_score"], row["rejected_score"]) == (9.0, 2.0)
    assert [r["reject_reason"] for r in rows(out, "rejected")] == ["score_contradicts_label"]
