"""`curate reward`: rules on hand-made scores, the score cache, --action flag, the CLI."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from curate import dataset as D
from curate.engine import get_engine
from curate.scoring.rules import RewardRules, parse_keep_top
from curate.scoring.scorer import FunctionScorer
from curate.stages.ingest import ingest
from curate.stages.reward import reward
from tests.helpers import assert_conserved, rows, write_jsonl

ONE = get_engine("local", workers=1)

# i: (chosen reward, rejected reward, category, chosen_score, rejected_score)
PAIRS = [
    (2.0, 1.0, "math", None, None),  # 0 margin 1.0
    (1.0, 1.5, "math", None, None),  # 1 margin -0.5
    (0.5, 0.4, "math", None, None),  # 2 margin 0.1
    (3.0, 0.0, "code", None, None),  # 3 margin 3.0
    (0.0, 0.2, "code", None, None),  # 4 margin -0.2
    (1.2, 1.0, None, 5.0, 4.5),      # 5 margin 0.2, source gap 0.5
    (2.5, 1.0, None, 8.0, 2.0),      # 6 margin 1.5, source gap 6
    (-1.0, -1.3, None, None, None),  # 7 margin 0.3
    (0.8, 0.7, "chat", None, None),  # 8 margin 0.1
    (1.5, 0.5, "chat", None, None),  # 9 margin 1.0
]
_REWARD = re.compile(r"\[(-?[\d.]+)\]$")


def _fake(table: pa.Table) -> tuple[list[float], list[float]]:
    """The hand-made rewards, read back from the response texts."""
    def val(s: str) -> float:
        m = _REWARD.search(s)
        assert m, s
        return float(m.group(1))

    return ([val(s) for s in table["chosen"].to_pylist()],
            [val(s) for s in table["rejected"].to_pylist()])


def fake_scorer(fingerprint: str = "fake-v1") -> FunctionScorer:
    return FunctionScorer(_fake, fingerprint, name="fake")


def _raw(i: int, c: float, r: float, cat, cs, rs) -> dict:
    row = {"id": str(i), "prompt": f"question {i}", "chosen": f"answer {i} [{c}]",
           "rejected": f"other {i} [{r}]", "category": cat}
    if cs is not None:
        row |= {"chosen_score": cs, "rejected_score": rs}
    return row


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two input folders: pairs 0-4 (source x) and 5-9 (source y)."""
    tmp = tmp_path_factory.mktemp("reward_in")
    out = []
    for name, part in (("x", range(0, 5)), ("y", range(5, 10))):
        raw = [_raw(i, *PAIRS[i]) for i in part]
        src = write_jsonl(tmp / f"{name}.jsonl", raw)
        scores = {"chosen_score": "chosen_score", "rejected_score": "rejected_score"} \
            if any("chosen_score" in r for r in raw) else {}  # a mapped column must exist
        ingest("generic", [str(src)], tmp / name, source=name, engine=ONE,
               mapping={"id": "id", "category": "category", **scores})
        out.append(tmp / name)
    return out


def _index(row: dict) -> int:
    return int(row["source_id"])


def _rejected(out: Path) -> dict[int, str]:
    return {_index(r): r["reject_reason"] for r in rows(out, D.REJECTED)}


def _run(pairs: list[Path], out: Path, **rules) -> dict:
    """The plain rules (--min-precision 0: the precision guard off)."""
    action = rules.pop("action", "drop")
    rules.setdefault("min_precision", 0)
    return reward(pairs, out, scorer=fake_scorer(), rules=RewardRules(**rules), action=action)


@pytest.mark.parametrize("rules, expected", [
    ({"disagree": True}, {1: "rm_disagrees", 4: "rm_disagrees"}),
    ({"min_margin": 0.15}, {1: "low_margin", 2: "low_margin", 4: "low_margin", 8: "low_margin"}),
    # chosen rewards sorted: -1 0 .5 .8 1 1.2 1.5 2 2.5 3; 0.25-quantile = .5 + .25 x .3 = .575
    ({"min_chosen": 0.25}, {7: "low_chosen_score", 4: "low_chosen_score",
                            2: "low_chosen_score"}),
    # math keeps ceil(.3 x 3) = 1, code ceil(.5 x 2) = 1, no category 2 of 3, chat 1 of 2
    ({"keep_top": {"*": 0.5, "math": 0.3}},
     {1: "not_top_margin", 2: "not_top_margin", 4: "not_top_margin", 5: "not_top_margin",
      8: "not_top_margin"}),
    # by source: x keeps 2 of 5 (3, 0), y keeps 2 of 5 (6, 9)
    ({"keep_top": {"*": 0.4}, "by": "source"},
     {1: "not_top_margin", 2: "not_top_margin", 4: "not_top_margin", 5: "not_top_margin",
      7: "not_top_margin", 8: "not_top_margin"}),
    # only pair 5 has source scores closer than 1.0; pairs without them are not judged
    ({"min_source_gap": 1.0}, {5: "ambiguous"}),
    # several rules: the first in RULES order is the reason
    ({"disagree": True, "min_margin": 0.15, "min_chosen": 0.25, "min_source_gap": 1.0},
     {1: "rm_disagrees", 2: "low_margin", 4: "rm_disagrees", 5: "ambiguous",
      7: "low_chosen_score", 8: "low_margin"}),
    ({}, {}),
])
def test_rules_on_hand_made_scores(pairs, tmp_path: Path, rules: dict, expected: dict) -> None:
    out = tmp_path / "out"
    m = _run(pairs, out, **rules)
    assert _rejected(out) == expected
    m = assert_conserved(out)
    assert m["rows_in"] == 10 and m["rows_rejected"] == len(expected)


def test_every_row_carries_its_rewards_and_details_name_every_rule(pairs, tmp_path) -> None:
    out = tmp_path / "out"
    _run(pairs, out, disagree=True, min_margin=0.15, min_chosen=0.25)
    everything = rows(out) + rows(out, D.REJECTED)
    assert len(everything) == 10
    for r in everything:
        c, rj = PAIRS[_index(r)][:2]
        assert (r["chosen_reward"], r["rejected_reward"]) == (c, rj)
        assert r["reward_margin"] == pytest.approx(c - rj)
    detail = {_index(r): r["reject_detail"] for r in rows(out, D.REJECTED)}
    assert detail[4] == ("rm_disagrees: reward margin -0.2 < 0; low_margin: reward margin -0.2 "
                         "< 0.15; low_chosen_score: chosen reward 0 < 0.575 (the 0.25-quantile)")
    m = D.Dataset.open(out).manifest["reward"]
    assert m["min_chosen_threshold"] == pytest.approx(0.575)
    assert m["matched_by_rule"] == {"low_chosen_score": 3, "low_margin": 4, "rm_disagrees": 2}
    assert m["stats"]["agreement"] == 0.8


def test_action_flag_keeps_every_row_and_names_the_rule(pairs, tmp_path: Path) -> None:
    out = tmp_path / "out"
    m = _run(pairs, out, disagree=True, min_margin=0.15, action="flag")
    assert m["rows_kept"] == 10 and m["rows_rejected"] == 0
    assert_conserved(out)
    flags = {_index(r): r["needs_regeneration"] for r in rows(out)}
    assert flags == {0: None, 1: "rm_disagrees", 2: "low_margin", 3: None, 4: "rm_disagrees",
                     5: None, 6: None, 7: None, 8: "low_margin", 9: None}
    assert m["reward"]["flagged"] == {"low_margin": 2, "rm_disagrees": 2}


def _exploding() -> FunctionScorer:
    def boom(table: pa.Table):
        raise AssertionError("a cached run must not score")

    return FunctionScorer(boom, "fake-v1", name="fake")


def test_score_cache_a_second_run_computes_no_scores(pairs, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = fake_scorer()
    m1 = reward(pairs, out, scorer=first, rules=RewardRules(disagree=True))
    assert m1["reward"]["scores"] == {"cached": 0, "computed": 10} and first.rows_scored == 10
    # other thresholds, same output folder: the previous output is the cache
    m2 = reward(pairs, out, scorer=_exploding(),
                rules=RewardRules(min_margin=0.15, min_precision=0))
    assert m2["reward"]["scores"] == {"cached": 10, "computed": 0}
    assert set(_rejected(out)) == {1, 2, 4, 8}
    # and a third: still no scoring, and the cached rewards are the same
    reward(pairs, out, scorer=_exploding(), rules=RewardRules(disagree=True), action="flag")
    assert {_index(r): r["chosen_reward"] for r in rows(out)} == {
        i: p[0] for i, p in enumerate(PAIRS)}
    # another model (fingerprint) scores everything again
    other = fake_scorer("fake-v2")
    m4 = reward(pairs, out, scorer=other, rules=RewardRules(disagree=True))
    assert m4["reward"]["scores"] == {"cached": 0, "computed": 10} and other.rows_scored == 10


def test_shared_score_cache_folder_and_partial_hits(pairs, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    reward(pairs[:1], tmp_path / "a", scorer=fake_scorer(), score_cache=cache,
           rules=RewardRules(disagree=True))
    assert len(list((cache / "fake-v1").glob("scores-*.parquet"))) == 1
    scorer = fake_scorer()
    m = reward(pairs, tmp_path / "b", scorer=scorer, score_cache=cache,
               rules=RewardRules(disagree=True))
    assert m["reward"]["scores"] == {"cached": 5, "computed": 5} and scorer.rows_scored == 5
    m = reward(pairs, tmp_path / "c", scorer=_exploding(), score_cache=cache,
               rules=RewardRules(min_margin=1.0))
    assert m["reward"]["scores"] == {"cached": 10, "computed": 0}


def test_same_input_and_config_is_skipped_and_output_is_deterministic(pairs, tmp_path) -> None:
    _run(pairs, tmp_path / "a", disagree=True)
    before = (tmp_path / "a" / D.MANIFEST).read_text()
    reward(pairs, tmp_path / "a", scorer=_exploding(),
           rules=RewardRules(disagree=True, min_precision=0))
    assert (tmp_path / "a" / D.MANIFEST).read_text() == before
    _run(pairs, tmp_path / "b", disagree=True)
    assert D.Dataset.open(tmp_path / "a").manifest["files"] == \
        D.Dataset.open(tmp_path / "b").manifest["files"]


def test_source_gap_alone_needs_no_model(pairs, tmp_path: Path) -> None:
    m = reward(pairs, tmp_path / "o", rules=RewardRules(min_source_gap=1.0))
    assert _rejected(tmp_path / "o") == {5: "ambiguous"} and m["rows_kept"] == 9
    assert all(r["chosen_reward"] is None for r in rows(tmp_path / "o"))
    with pytest.raises(ValueError, match="need reward scores"):
        reward(pairs, tmp_path / "p", rules=RewardRules(disagree=True))


def test_a_scorer_returning_the_wrong_count_fails_and_leaves_no_output(pairs, tmp_path) -> None:
    bad = FunctionScorer(lambda t: ([0.0], [0.0]), "bad")
    with pytest.raises(ValueError, match="returned 1/1 rewards for 5 pairs"):
        reward(pairs, tmp_path / "o", scorer=bad, rules=RewardRules(disagree=True))
    assert not (tmp_path / "o").exists()


def test_parse_keep_top_and_rule_validation() -> None:
    assert parse_keep_top(["0.1", "math=0.3", "code=0.3"]) == {"*": 0.1, "math": 0.3,
                                                               "code": 0.3}
    with pytest.raises(ValueError):
        parse_keep_top(["math=lots"])
    with pytest.raises(ValueError):
        RewardRules(keep_top={"*": 1.5})
    with pytest.raises(ValueError):
        RewardRules(min_chosen=1.0)
    with pytest.raises(ValueError):
        RewardRules(by="color")


def test_fold_assignment_is_stratified_seeded_and_order_free() -> None:
    from curate.scoring.kfold import assign_folds

    ids = [f"{i:08x}" for i in range(103)]
    src = ["a" if i % 3 else "b" for i in range(103)]
    f = assign_folds(pa.array(ids), src, 5, seed=0)
    for s in ("a", "b"):
        counts = np.bincount(f[np.asarray(src) == s], minlength=5)
        assert counts.max() - counts.min() <= 1
    rev = assign_folds(pa.array(ids[::-1]), src[::-1], 5, seed=0)
    assert rev[::-1].tolist() == f.tolist()
    assert assign_folds(pa.array(ids), src, 5, seed=1).tolist() != f.tolist()
