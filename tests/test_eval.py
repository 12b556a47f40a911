"""`curate eval`: the benchmarks' scoring rules on hand-made scores with known answers,
on the real VL-RewardBench rows with deterministic dummy scorers, and the swap test."""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict

import pyarrow as pa
import pytest

from curate.stages.ingest import ingest
from curate.train import evaluate as E
from tests.conftest import shared_data
from tests.rm_helpers import one_torch_thread  # noqa: F401


def _scores(rows: list[tuple[str, str, float, float]]) -> pa.Table:
    return pa.Table.from_pylist([{"pair_id": f"p{i}", "source": s, "category": c,
                                  "chosen_reward": a, "rejected_reward": b}
                                 for i, (s, c, a, b) in enumerate(rows)])


def _vlrb_hand_made() -> list[tuple[str, str, float, float]]:
    """general 1/3 right, hallucination 3/4 right (one tie), reasoning 2/2 right."""
    v = "vl-rewardbench"
    return [
        (v, "vlfeedback", 1.0, 0.0), (v, "wildvision", 0.0, 1.0), (v, "wildvision", 0.5, 0.5),
        (v, "povid", 2.0, 1.0), (v, "rlhf-v", 1.0, -1.0), (v, "rlaif-v", 0.3, 0.2),
        (v, "rlaif-v", 0.7, 0.7),
        (v, "mathverse", 5.0, 4.0), (v, "mmmu-pro", 1.0, 0.0),
    ]


def test_vl_rewardbench_rules_on_hand_made_scores():
    rep = E.report(_scores(_vlrb_hand_made()))["vl-rewardbench"]
    assert rep["benchmark"] == "vl-rewardbench"
    assert rep["overall"]["correct"] == 6 and rep["overall"]["pairs"] == 9
    assert rep["overall"]["accuracy"] == pytest.approx(6 / 9)
    assert rep["groups"]["general"]["accuracy"] == pytest.approx(1 / 3)
    assert rep["groups"]["hallucination"]["accuracy"] == pytest.approx(3 / 4)
    assert rep["groups"]["reasoning"]["accuracy"] == pytest.approx(1.0)
    assert rep["macro_average"] == pytest.approx((1 / 3 + 3 / 4 + 1) / 3)
    assert rep["categories"]["rlaif-v"] == {"pairs": 2, "correct": 1, "accuracy": 0.5,
                                            "accuracy_ci95": list(E.wilson_interval(1, 2))}


def test_rewardbench_sections_use_the_official_weights():
    r = "rewardbench"
    rows = ([(r, "alpacaeval-easy", 1, 0)] * 3 + [(r, "alpacaeval-easy", 0, 1)]  # 0.75
            + [(r, "mt-bench-easy", 1, 0)] * 2  # 1.0
            + [(r, "llmbar-natural", 0, 1)] * 2  # 0.0
            + [(r, "donotanswer", 1, 0), (r, "donotanswer", 1, 1)]  # 0.5 (a tie is wrong)
            + [(r, "math-prm", 1, 0)] * 2 + [(r, "hep-python", 0, 1)] * 2)  # 1.0, 0.0
    rep = E.report(_scores(rows))["rewardbench"]
    chat = (0.75 * 100 + 1.0 * 28) / (100 + 28)
    reasoning = (1.0 * 984 + 0.0 * 164) / (984 + 164)
    assert rep["sections"] == pytest.approx({"Chat": chat, "Chat Hard": 0.0, "Safety": 0.5,
                                             "Reasoning": reasoning})
    assert rep["score"] == pytest.approx((chat + 0.0 + 0.5 + reasoning) / 4)
    assert rep["overall"]["accuracy"] == pytest.approx(8 / 14)
    assert "sections_missing" not in rep


def test_other_sources_get_plain_accuracy_and_sources_stay_apart():
    rows = _vlrb_hand_made() + [("mine", "x", 1, 0), ("mine", "y", 0, 0)]
    rep = E.report(_scores(rows))
    assert set(rep) == {"vl-rewardbench", "mine"}
    assert rep["mine"]["benchmark"] == "generic"
    assert rep["mine"]["overall"]["accuracy"] == 0.5
    assert rep["vl-rewardbench"]["overall"]["pairs"] == 9


def test_wilson_interval():
    assert E.wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = E.wilson_interval(61, 100)
    assert lo == pytest.approx(0.5121, abs=1e-3) and hi == pytest.approx(0.7002, abs=1e-3)


def test_shown_order_is_seeded_per_pair():
    ids = [f"id{i}" for i in range(2000)]
    a, b = E.chosen_first(ids, 0), E.chosen_first(ids, 1)
    assert 0.45 < a.mean() < 0.55 and (a != b).any()
    assert (E.chosen_first(ids[::-1], 0) == a[::-1]).all()  # by pair_id, not by position


def test_cli_applies_the_rules_to_a_scores_file(run_cli, tmp_path):
    f = tmp_path / "scores.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in _scores(_vlrb_hand_made()).to_pylist()))
    res = run_cli("eval", "--scores", f, "--json", "--out", tmp_path / "r.json")
    rep = json.loads(res.output)["vl-rewardbench"]
    assert rep["macro_average"] == pytest.approx((1 / 3 + 3 / 4 + 1) / 3)
    assert json.loads((tmp_path / "r.json").read_text()) == json.loads(res.output)
    res = run_cli("eval", "--scores", f)
    assert "macro average" in res.output and "69.44" in res.output  # 100 * 25/36
    assert "exactly one" in run_cli("eval", "--scores", f, "--baseline", "length",
                                    expect=2).output


# -- real VL-RewardBench rows -------------------------------------------------------------
@pytest.fixture(scope="module")
def vlrb(tmp_path_factory):
    src = shared_data("vl-rewardbench/data.jsonl")
    out = tmp_path_factory.mktemp("vlrb") / "vlrb"
    from curate.engine import get_engine

    ingest("vl-rewardbench", [str(src)], out, engine=get_engine("local", workers=1))
    raw = [json.loads(line) for line in src.read_text().splitlines() if line.strip()]
    return out, raw


def _group_of(row_id: str) -> str:
    """The paper's grouping, from the raw ids (independent of the adapter's code)."""
    for prefixes, group in ((("hallucination_pair", "RLAIF-V", "RLHF-V"), "hallucination"),
                            (("mathverse", "mmmu_pro"), "reasoning")):
        if row_id.startswith(prefixes):
            return group
    return "general"


def test_real_vl_rewardbench_with_a_length_scorer(vlrb):
    folder, raw = vlrb
    rep, scores = E.evaluate([folder], E.length_scorer, seed=0)
    got = rep["vl-rewardbench"]
    # the expected answer, straight from the file: is the preferred response longer?
    per_group: dict[str, list[bool]] = defaultdict(list)
    for r in raw:
        best = r["human_ranking"].index(min(r["human_ranking"]))
        a, b = r["response"][best], r["response"][1 - best]
        per_group[_group_of(r["id"])].append(len(a) > len(b))
    total = sum(sum(v) for v in per_group.values())
    assert got["overall"]["pairs"] == 1250 == len(raw)
    assert got["overall"]["correct"] == total
    for g, v in per_group.items():
        assert got["groups"][g]["pairs"] == len(v)
        assert got["groups"][g]["accuracy"] == pytest.approx(sum(v) / len(v))
    assert got["macro_average"] == pytest.approx(
        sum(sum(v) / len(v) for v in per_group.values()) / 3)
    assert Counter(scores["category"].to_pylist())["povid"] == 448


def test_real_vl_rewardbench_order_shuffle_defeats_a_position_bias(vlrb):
    """The file lists the preferred answer first in 1,245 of 1,250 rows: a scorer that
    favours the first-shown response would look perfect without the seeded shuffle."""
    folder, _ = vlrb

    def first_wins(items):
        n = len(items) // 2
        return [1.0] * n + [0.0] * n

    rep, scores = E.evaluate([folder], first_wins, seed=0)
    acc = rep["vl-rewardbench"]["overall"]["accuracy"]
    shown_first = sum(scores["chosen_first"].to_pylist()) / len(scores)
    assert acc == pytest.approx(shown_first)  # right exactly when chosen was shown first
    assert 0.45 < acc < 0.55
    rep1, _ = E.evaluate([folder], first_wins, seed=1)
    assert rep1["vl-rewardbench"]["overall"]["accuracy"] != acc  # the seed matters


def test_swapped_labels_give_one_minus_accuracy(vlrb):
    folder, _ = vlrb
    from curate.train.data import load_pairs

    table = load_pairs(folder)
    swapped = table.rename_columns([{"chosen": "rejected", "rejected": "chosen"}.get(c, c)
                                    for c in table.column_names])
    rep, scores = E.evaluate([table], E.length_scorer)
    rep_s, _ = E.evaluate([swapped], E.length_scorer)
    a, b = rep["vl-rewardbench"], rep_s["vl-rewardbench"]
    ties = int((scores["chosen_reward"].to_numpy() == scores["rejected_reward"].to_numpy()).sum())
    n = a["overall"]["pairs"]
    assert ties > 0  # equal lengths exist: a tie is wrong both ways
    assert a["overall"]["correct"] + b["overall"]["correct"] + ties == n

    def no_tie(items):  # length, ties broken by a hash of the text
        return [len(r) + int(hashlib.sha256(r.encode()).hexdigest()[:8], 16) / 2**33
                for _, r, _ in items]

    # without ties the swap gives exactly 1 - accuracy

    acc = E.evaluate([table], no_tie)[0]["vl-rewardbench"]["overall"]["accuracy"]
    acc_s = E.evaluate([swapped], no_tie)[0]["vl-rewardbench"]["overall"]["accuracy"]
    assert acc_s == pytest.approx(1 - acc)


def test_cli_eval_with_a_baseline_and_a_checkpoint(vlrb, run_cli, tmp_path):
    folder, _ = vlrb
    res = run_cli("eval", folder, "--baseline", "length", "--json",
                  "--scores-out", tmp_path / "s.jsonl")
    rep = json.loads(res.output)["vl-rewardbench"]
    expect = E.evaluate([folder], E.length_scorer)[0]["vl-rewardbench"]
    assert rep == expect
    lines = (tmp_path / "s.jsonl").read_text().splitlines()
    assert len(lines) == 1250 and set(E.SCORE_COLUMNS) <= set(json.loads(lines[0]))
    # the scores file goes back through the rules to the same report
    again = json.loads(run_cli("eval", "--scores", tmp_path / "s.jsonl", "--json").output)
    # (a scores file alone does not say how the folder was ingested: no text-only labels)
    labels = ("text_only", "rows_without_images")
    assert rep["text_only"] is True and rep["rows_without_images"] == 1250
    assert again["vl-rewardbench"] == {k: v for k, v in rep.items() if k not in labels}


def test_cli_eval_scores_a_checkpoint(run_cli, tmp_path):
    from curate.models.reward_model import build_reward_model
    from curate.models.tiny import TINY_NAME
    from tests.rm_helpers import synthetic_pairs

    rm = build_reward_model(TINY_NAME, max_length=128)
    rm.save(tmp_path / "ckpt")
    bench = synthetic_pairs(3, 3)
    import pyarrow.parquet as pq

    (tmp_path / "bench").mkdir()
    pq.write_table(bench, tmp_path / "bench" / "part-00000.parquet")
    res = run_cli("eval", "--model", tmp_path / "ckpt", tmp_path / "bench", "--json")
    rep = json.loads(res.output)
    chosen, rejected = rm.score_pairs(bench)
    for src in ("synth-image", "synth-text"):
        idx = [i for i, s in enumerate(bench["source"].to_pylist()) if s == src]
        assert rep[src]["overall"]["correct"] == sum(chosen[i] > rejected[i] for i in idx)
