"""`curate pairs`: hand-made candidates, a deterministic scorer, exact pairs per strategy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curate import dataset as D
from curate.scoring.scorer import ResponseFunctionScorer
from curate.stages.ingest import ingest as ingest_candidates
from curate.stages.pairs import (
    PairsConfig,
    choose_pairs,
    distinct,
    near_identical,
    pairs,
    similarity,
)
from curate.text import normalise_text as normalise
from tests.helpers import assert_conserved, rows, write_jsonl

LONG = ("To solve the equation we first subtract three from both sides, then divide both "
        "sides by two, which leaves x equal to four; checking, two times four plus three "
        "is eleven, as required, so the answer is four.")
# (id, responses, their scores); a response not in SCORES must never be scored
PROMPTS = [
    ("p1", ["A1", "A2", "A3", "A4"], [4, 3, 2, 1]),
    ("tie", ["T1", "T2"], [5, 5]),
    ("close", ["S1", "S2"], [1.0, 0.95]),
    ("near", ["The cat sat on the mat.", "the  CAT sat on the mat.", "A dog barked."],
     [2, None, 1]),
    ("long", [LONG, LONG.replace("eleven", "11"), "No idea."], [3, None, 0]),
    ("same", ["Yes.", "yes."], [7, None]),
    ("one", ["only"], [None]),
    ("ties", ["X1", "X2", "X3", "X4"], [3, 3, 1, 1]),
]
SCORES = {r: s for _, rs, ss in PROMPTS for r, s in zip(rs, ss, strict=True) if s is not None}


def score_items(items):
    for prompt, response, _ in items:
        assert prompt[-1]["role"] == "user"
        assert response in SCORES, f"{response!r} should never be scored"
    return [SCORES[r] for _, r, _ in items]


def make_scorer(fp: str = "dict-v1") -> ResponseFunctionScorer:
    return ResponseFunctionScorer(score_items, fp, "dict")


@pytest.fixture
def cands(tmp_path: Path) -> Path:
    src = write_jsonl(tmp_path / "c.jsonl", [
        {"id": pid, "prompt": f"question {pid}", "responses": rs, "model": "toy-7b"}
        for pid, rs, _ in PROMPTS])
    out = tmp_path / "cands"
    ingest_candidates("candidates", [str(src)], out)
    return out


@pytest.fixture(autouse=True)
def _cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CURATE_CACHE", str(tmp_path / "cache"))


def _pairs_by_prompt(folder: Path) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for r in rows(folder):
        out.setdefault(r["source_id"].split("#")[0], []).append((r["chosen"], r["rejected"]))
    return out


COMMON = {"near": [("The cat sat on the mat.", "A dog barked.")], "long": [(LONG, "No idea.")],
          "close": [("S1", "S2")]}
EXPECTED = {
    "best-worst": {"p1": [("A1", "A4")], "ties": [("X1", "X4")], **COMMON},
    "top-bottom": {"p1": [("A1", "A4"), ("A1", "A3"), ("A2", "A4"), ("A2", "A3")],
                   "ties": [("X1", "X4"), ("X1", "X3"), ("X2", "X4"), ("X2", "X3")], **COMMON},
    "all": {"p1": [("A1", "A4"), ("A1", "A3"), ("A1", "A2"), ("A2", "A4"), ("A2", "A3"),
                   ("A3", "A4")],
            "ties": [("X1", "X4"), ("X1", "X3"), ("X2", "X4"), ("X2", "X3")], **COMMON},
}
REJECTED = {"tie": "ambiguous", "same": "near_identical_candidates", "one": "too_few_candidates"}


@pytest.mark.parametrize("strategy", list(EXPECTED))
def test_each_strategy_gives_exactly_its_pairs(cands, tmp_path: Path, strategy: str) -> None:
    out = tmp_path / strategy
    m = pairs([cands], out, scorer=make_scorer(), config=PairsConfig(strategy=strategy))
    assert _pairs_by_prompt(out) == EXPECTED[strategy]
    rej = {r["source_id"]: r["reject_reason"] for r in rows(out, D.REJECTED)}
    assert rej == REJECTED
    m = assert_conserved(out)
    info = m["pairs"]
    assert m["rows_in"] == len(PROMPTS) == info["prompts_with_pairs"] + m["rows_rejected"]
    n_pairs = sum(len(v) for v in EXPECTED[strategy].values())
    assert info["pairs_produced"] == m["rows_kept"] == n_pairs
    assert info["prompts_with_pairs"] == len(EXPECTED[strategy])
    assert sum(info["margin_histogram"]["counts"]) == n_pairs
    assert info["candidates"] == 21 and info["candidates_near_identical"] == 3


def test_pair_rows_are_canonical_with_the_models_scores(cands, tmp_path: Path) -> None:
    out = tmp_path / "bw"
    pairs([cands], out, scorer=make_scorer())
    r = next(r for r in rows(out) if r["source_id"].startswith("p1"))
    assert r["source"] == "pairs:toy-7b" and r["source_id"] == "p1#0>3"
    assert (r["chosen_score"], r["rejected_score"]) == (4.0, 1.0)
    assert r["prompt"] == [{"role": "user", "content": "question p1"}]
    meta = json.loads(r["meta"])
    assert meta["scores"] == [4, 3, 2, 1] and meta["score_key"] == "dict-v1"
    assert (meta["chosen_index"], meta["rejected_index"]) == (0, 3)
    near = next(r for r in rows(out) if r["source_id"].startswith("near"))
    assert json.loads(near["meta"])["near_identical"] == {"1": 0}


def test_min_margin_sends_the_prompt_to_rejected_with_its_scores(cands, tmp_path: Path) -> None:
    out = tmp_path / "mm"
    pairs([cands], out, scorer=make_scorer(), config=PairsConfig(min_margin=0.1))
    rej = {r["source_id"]: r for r in rows(out, D.REJECTED)}
    close = rej["close"]
    assert close["reject_reason"] == "ambiguous"
    assert close["reject_detail"] == ("best-worst margin 0.05 < --min-margin 0.1; "
                                      "scores #0=1, #1=0.95")
    assert (close["chosen"], close["rejected"]) == ("S1", "S2")
    assert (close["chosen_score"], close["rejected_score"]) == (1.0, 0.95)
    assert json.loads(close["meta"])["scores"] == [1.0, 0.95]
    assert rej["tie"]["reject_detail"] == ("best-worst margin is 0 (a tie: no preference); "
                                           "scores #0=5, #1=5")
    assert "close" not in _pairs_by_prompt(out)


def test_all_with_min_margin_keeps_only_wide_pairs(cands, tmp_path: Path) -> None:
    out = tmp_path / "all"
    pairs([cands], out, scorer=make_scorer(), config=PairsConfig(strategy="all", min_margin=2))
    assert _pairs_by_prompt(out)["p1"] == [("A1", "A4"), ("A1", "A3"), ("A2", "A4")]
    assert all(r["chosen_score"] - r["rejected_score"] >= 2 for r in rows(out))


def test_score_cache_a_second_run_scores_nothing(cands, tmp_path: Path) -> None:
    first = make_scorer()
    m1 = pairs([cands], tmp_path / "a", scorer=first)
    # distinct responses of the prompts that have two or more: p1, tie, close, near, long, ties
    assert first.rows_scored == m1["pairs"]["scores"]["computed"] == 4 + 2 + 2 + 2 + 2 + 4
    second = make_scorer()
    m2 = pairs([cands], tmp_path / "b", scorer=second,
               config=PairsConfig(strategy="top-bottom", k=2))
    assert second.calls == 0 and m2["pairs"]["scores"] == {"computed": 0,
                                                         "cached": first.rows_scored}
    other_model = make_scorer("dict-v2")  # another fingerprint: nothing is reused
    m3 = pairs([cands], tmp_path / "c", scorer=other_model)
    assert m3["pairs"]["scores"]["computed"] == first.rows_scored
    # same input and config: skipped, nothing loaded or scored
    again = make_scorer()
    assert pairs([cands], tmp_path / "a", scorer=again)["fingerprint"] == m1["fingerprint"]
    assert again.calls == 0


def test_a_response_repeated_across_batches_is_scored_once(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "c.jsonl", [
        {"id": f"r{i}", "prompt": "same question", "responses": ["A1", "A4", "A1"]}
        for i in range(3)])
    ingest_candidates("candidates", [str(src)], tmp_path / "cands")
    sc = make_scorer()
    m = pairs([tmp_path / "cands"], tmp_path / "out", scorer=sc, prompts_per_batch=1)
    assert sc.rows_scored == 2 and sc.calls == 1
    assert m["rows_kept"] == 3 and m["pairs"]["candidates_near_identical"] == 3


def test_same_input_and_config_give_the_same_bytes(cands, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    m1 = pairs([cands], tmp_path / "a", scorer=make_scorer(), config=PairsConfig(strategy="all"))
    monkeypatch.setenv("CURATE_CACHE", str(tmp_path / "other-cache"))  # scored afresh
    m2 = pairs([cands], tmp_path / "b", scorer=make_scorer(), config=PairsConfig(strategy="all"),
               prompts_per_batch=3)
    assert m1["files"] == m2["files"]
    assert m1["pairs"]["scores"]["computed"] == m2["pairs"]["scores"]["computed"] > 0


def test_a_scorer_returning_the_wrong_count_fails_and_leaves_no_output(cands, tmp_path) -> None:
    bad = ResponseFunctionScorer(lambda items: [1.0], "bad-v1")
    with pytest.raises(ValueError, match="scores for"):
        pairs([cands], tmp_path / "out", scorer=bad)
    assert not (tmp_path / "out").exists()
    nan = ResponseFunctionScorer(lambda items: [float("nan")] * len(items), "nan-v1")
    with pytest.raises(ValueError, match="NaN"):
        pairs([cands], tmp_path / "out", scorer=nan)


def test_a_pair_dataset_is_not_candidates(tmp_path: Path) -> None:
    from curate.schema import SchemaError
    from curate.stages.ingest import ingest

    src = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}])
    ingest("generic", [str(src)], tmp_path / "pairs-in")
    with pytest.raises(SchemaError, match="not a candidates dataset"):
        pairs([tmp_path / "pairs-in"], tmp_path / "out", scorer=make_scorer())


# -- the pure parts --------------------------------------------------------------------------
@pytest.mark.parametrize("scores, strategy, k, expected", [
    ([1, 3, 2], "best-worst", None, [(1, 0)]),
    ([2, 2, 2], "best-worst", None, []),
    ([5, 1], "top-bottom", 3, [(0, 1)]),  # K capped at n // 2
    ([4, 3, 2, 1, 0], "top-bottom", 2, [(0, 4), (0, 3), (1, 4), (1, 3)]),
    ([1, 2, 3], "all", None, [(2, 0), (2, 1), (1, 0)]),
    ([1, 1, 0], "all", None, [(0, 2), (1, 2)]),
    ([7], "all", None, []),
])
def test_choose_pairs(scores, strategy, k, expected) -> None:
    assert choose_pairs(scores, PairsConfig(strategy=strategy, k=k)) == expected


def test_near_identical_definition() -> None:
    assert normalise("  The\tCAT\n sat ") == "the cat sat"
    assert near_identical(normalise("Yes."), normalise("yes. "), 0.95)
    one_word = (normalise(LONG), normalise(LONG.replace("eleven", "11")))
    assert similarity(*one_word) > 0.95 and near_identical(*one_word, 0.95)
    assert not near_identical(*one_word, 1.0)  # 1.0: normalised equality only
    # short answers that differ in the one word that matters are distinct
    short = (normalise("The answer is 12."), normalise("The answer is 13."))
    assert similarity(*short) == 0.8 and not near_identical(*short, 0.95)
    # CJK text counts characters, so one changed character is a small difference
    assert near_identical("这是一个很长的句子，用来测试相似度的计算方法是否正确。",
                          "这是一个很长的句子，用来测试相似度的计算方法是否准确。", 0.9)
    assert distinct(["a b c", "A  b c", "x", "a b c"], 0.95) == ([0, 2], {1: 0, 3: 0})


@pytest.mark.parametrize("kw, message", [
    ({"strategy": "random"}, "--strategy"),
    ({"k": 2}, "--k goes with"),
    ({"strategy": "top-bottom", "k": 0}, "at least 1"),
    ({"min_margin": -1}, "--min-margin"),
    ({"near_identical": 0}, "--near-identical"),
])
def test_config_validation(kw, message) -> None:
    with pytest.raises(ValueError, match=message):
        PairsConfig(**kw)
    assert PairsConfig(strategy="top-bottom").k == 2
