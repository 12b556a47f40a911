"""End to end through the CLI: candidates -> pairs -> dedup -> shard --format dpo/mpo -> read back.

The reward model is a tiny random Qwen2.5-VL with a value head (built offline in
memory), so the images really go through a vision tower; its scores are arbitrary
but deterministic, which is all this test needs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curate import dataset as D
from curate.export.mpo import question_text
from tests.helpers import assert_conserved, jpeg_bytes, rows, write_parquet


@pytest.fixture(scope="module")
def tiny_rm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from curate.models.reward_model import build_reward_model

    path = tmp_path_factory.mktemp("rm") / "tiny-rm"
    build_reward_model("tiny-qwen2.5-vl", seed=0).save(path, save_backbone=False)
    return path


def _candidates(tmp_path: Path) -> Path:
    rows_ = []
    for i in range(8):
        img = jpeg_bytes(seed=i, color=(20 * i, 100, 200)) if i % 2 == 0 else None
        rows_.append({"qid": f"q{i}", "question": f"Question {i}: what is shown?",
                      "samples": [f"Answer {i}, first try.", f"A different answer {i}.",
                                  f"answer {i}, FIRST try.", f"Answer {i} number three, longer."],
                      "img": img, "policy": "toy-vl"})
    rows_.append({**rows_[0], "qid": "q0-again"})  # the same prompt and responses again
    return write_parquet(tmp_path / "samples.parquet", rows_)


def test_candidates_to_pairs_to_dedup_to_dpo_and_mpo(tmp_path: Path, tiny_rm: Path, run_cli,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    monkeypatch.setenv("CURATE_CACHE", str(tmp_path / "cache"))
    src = _candidates(tmp_path)
    cands, prs, dd, sh = (tmp_path / n for n in ("cands", "pairs", "dedup", "shards"))
    run_cli("ingest", "candidates", src, "--out", cands, "--map",
            "prompt=question,responses=samples,image=img,model=policy,id=qid")
    out = run_cli("pairs", cands, "--model", tiny_rm, "--out", prs, "--strategy", "top-bottom",
                  "--k", "1").output
    assert "pairs: 9 from 9 of 9 prompts" in out
    assert "9 of 36 responses near-identical to another" in out  # "answer i, FIRST try."
    m = assert_conserved(prs)
    assert m["pairs"]["scores"]["computed"] == 24  # q0-again's responses come from the cache
    for r in rows(prs):
        assert r["source"] == "pairs:toy-vl" and r["chosen_score"] > r["rejected_score"]
        assert "FIRST" not in r["chosen"] + r["rejected"]

    again = run_cli("pairs", cands, "--model", tiny_rm, "--out", tmp_path / "pairs-all",
                    "--strategy", "all").output
    assert "scores: 0 computed, 27 from the cache" in again

    run_cli("dedup", prs, "--out", dd)
    dm = assert_conserved(dd)
    assert dm["rejected_by_reason"] == {"exact_duplicate": 1}  # q0 and q0-again
    run_cli("shard", dd, "--out", sh, "--shards", "2", "--eval-fraction", "0.25",
            "--format", "dpo", "--format", "mpo")
    kept = {r["pair_id"]: r for r in rows(sh)}
    assert len(kept) == 8

    dpo_rows = []
    for kind in ("text", "vision"):
        dpo = datasets.load_dataset(
            "parquet", data_files={"train": str(sh / "dpo" / kind / "train-*.parquet"),
                                   "eval": str(sh / "dpo" / kind / "eval-*.parquet")},
            cache_dir=str(tmp_path / "hf"))
        dpo_rows += [(kind, r) for r in [*dpo["train"], *dpo["eval"]]]
    assert len(dpo_rows) == 8
    for kind, r in dpo_rows:
        src_row = kept[r["pair_id"]]
        assert (r["chosen_score"], r["rejected_score"]) == (src_row["chosen_score"],
                                                            src_row["rejected_score"])
        if kind == "text":  # string contents, what a text chat template renders
            assert not src_row["images"] and "images" not in r
            assert r["chosen"] == [{"role": "assistant", "content": src_row["chosen"]}]
            continue
        assert r["chosen"] == [{"role": "assistant",
                                "content": [{"type": "text", "text": src_row["chosen"]}]}]
        assert len(r["images"]) == len(src_row["images"]) == 1
        assert r["images"][0].size == (64, 48)  # decoded by `datasets` as a PIL image
        assert r["prompt"][0]["content"][0] == {"type": "image", "text": None}

    mpo_dir = sh / "mpo"
    lines = [json.loads(s) for s in (mpo_dir / "train.jsonl").read_text().splitlines()]
    meta = json.loads((mpo_dir / "meta.json").read_text())
    final = str(sh.resolve() / "mpo")  # absolute paths: InternVL runs from its own folder
    assert meta == {"curate-train": {"root": final + "/", "annotation": final + "/train.jsonl",
                                     "data_augment": False, "repeat_time": 1, "length": 6}}
    assert json.loads((mpo_dir / "meta_eval.json").read_text())["curate-eval"]["length"] == 2
    for line in lines:
        src_row = kept[line["pair_id"]]
        assert (line["chosen"], line["rejected"]) == (src_row["chosen"], src_row["rejected"])
        if src_row["images"]:
            assert line["question"].startswith("<image>\n")
            assert line["image"].startswith(final + "/images/")
            assert Path(line["image"]).read_bytes() == src_row["images"][0]["bytes"]
        else:
            assert "image" not in line and line["question"] == src_row["prompt"][-1]["content"]
    sm = D.Dataset.open(sh).manifest
    assert sm["exports"]["mpo"]["rows"] == {"train": 6, "eval": 2}
    assert sm["exports"]["dpo"]["subsets"]["vision"]["data_files"] == {
        "eval": "dpo/vision/eval-*.parquet", "train": "dpo/vision/train-*.parquet"}


def test_pairs_cli_errors(tmp_path: Path, tiny_rm: Path, run_cli) -> None:
    folder = tmp_path / "in"  # not a parent of --out: that overlap is refused first
    folder.mkdir()
    bad = run_cli("pairs", folder, "--model", folder, "--out", tmp_path / "o", expect=2)
    assert "not a reward-model checkpoint" in bad.output
    bad = run_cli("pairs", tmp_path / "nope", "--model", tiny_rm, "--out", tmp_path / "o",
                  expect=2)
    assert "no such dataset folder" in bad.output
    bad = run_cli("pairs", folder, "--model", folder, "--out", tmp_path / "o", "--k", "3",
                  expect=2)
    assert "--k goes with --strategy top-bottom" in bad.output


def test_mpo_question_folds_earlier_turns_and_places_image_tags() -> None:
    prompt = [{"role": "system", "content": "Be brief."},
              {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
              {"role": "user", "content": "What is in <image> this one?"}]
    q, folded = question_text(prompt, 2)
    assert folded
    assert q == ("<image>\nSystem: Be brief.\n\nUser: Hi\n\nAssistant: Hello!\n\n"
                 "What is in <image> this one?")
    assert question_text([{"role": "user", "content": "<image><image> two?"}], 1) == (
        "<image>two?", False)  # a surplus tag goes with the space after it
    assert question_text([{"role": "user", "content": "plain"}], 0) == ("plain", False)
