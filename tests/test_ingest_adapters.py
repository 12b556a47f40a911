"""One fixture per adapter, in its exact source schema, built here; parsing edge cases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curate.sources.hh_rlhf import parse_transcript
from curate.sources.llava_critic import parse_pairwise_prompt, parse_verdict
from curate.stages.ingest import ingest
from tests.helpers import (
    WorkerWritesEngine,
    assert_conserved,
    jpeg_bytes,
    rows,
    write_jsonl,
    write_parquet,
)


def _by_reason(folder: Path) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows(folder, "rejected"):
        out.setdefault(r["reject_reason"], []).append(r)
    return out


def test_rlaif_v_parquet_with_image_bytes(tmp_path: Path) -> None:
    img = jpeg_bytes()
    src = write_parquet(tmp_path / "rlaif.parquet", [
        {"ds_name": "RLAIF-V", "image": {"bytes": img, "path": "a.jpg"}, "question": "What?",
         "chosen": "A red square.", "rejected": "A cat.", "origin_dataset": "OK-VQA",
         "origin_split": json.dumps({"model": "x"}), "idx": 7, "image_path": "a.jpg"},
        {"ds_name": "RLAIF-V", "image": {"bytes": b"\xff\xd8garbage", "path": None},
         "question": "And?", "chosen": "Yes.", "rejected": "No.", "origin_dataset": "OK-VQA",
         "origin_split": "{}", "idx": 8, "image_path": "b.jpg"},
    ])
    out = tmp_path / "out"
    ingest("rlaif-v", [str(src)], out)
    assert_conserved(out)
    [row] = rows(out)
    assert row["source"] == "rlaif-v" and row["source_id"] == "7"
    assert row["prompt"] == [{"role": "user", "content": "What?"}]
    assert row["images"][0]["bytes"] == img
    assert (row["images"][0]["width"], row["images"][0]["height"]) == (64, 48)
    assert row["images"][0]["format"] == "JPEG"
    assert json.loads(row["meta"])["origin_split"] == {"model": "x"}
    assert list(_by_reason(out)) == ["corrupt_image"]


PAIRWISE_HUMAN = (
    "<image>\nGiven an image and a question, judge the two responses.\n"
    "Question: [What colour is the car?]\nThe first response: [It is red.]\n"
    "The second response: [It is blue.]\nASSISTANT:\n"
)


@pytest.mark.parametrize(
    ("judge", "verdict"),
    [
        ("Response 2 hallucinates. The better response: [1]", 1),
        ("The better response: [2]", 2),
        ("the better response: 2", 2),
        ("The better response: [The second response]", 2),
        ("The better response is [1].", 1),
        ("Both have flaws. Two responses are equally good.", 0),
        ("Earlier: the better response: [1]. On reflection, two responses are equally good.", 0),
        ("Two responses are equally good? No. The better response: [2]", 2),
        ("I cannot tell.", None),
    ],
)
def test_llava_critic_verdict_variants(judge: str, verdict: int | None) -> None:
    assert parse_verdict(judge) == verdict


def test_llava_critic_prompt_templates() -> None:
    assert parse_pairwise_prompt(PAIRWISE_HUMAN) == (
        "What colour is the car?", "It is red.", "It is blue.")
    other = ("[Question]\nHow many dogs?\n\n[The Start of Assistant 1's Answer]\nTwo.\n"
             "[The End of Assistant 1's Answer]\n\n[The Start of Assistant 2's Answer]\nThree.\n"
             "[The End of Assistant 2's Answer]\n")
    assert parse_pairwise_prompt(other) == ("How many dogs?", "Two.", "Three.")


def _critic_row(i: int, judge: str, image: bytes, human: str = PAIRWISE_HUMAN) -> dict:
    return {"id": f"c{i}", "source": "VLFeedback",
            "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": judge}],
            "image": {"bytes": image, "path": None}}


@pytest.mark.parametrize("workers_write", [False, True])
def test_llava_critic_pairwise(tmp_path: Path, workers_write: bool) -> None:
    """Pairwise records convert one by one: on any engine, each task converts its own part."""
    img = jpeg_bytes()
    src = write_parquet(tmp_path / "critic.parquet", [
        _critic_row(0, "The better response: [1]", img),
        _critic_row(1, "The better response: [2]", img),
        _critic_row(2, "Two responses are equally good.", img),
        _critic_row(3, "no idea", img),
        _critic_row(4, "The better response: [1]", img, human="no template here"),
    ])
    out = tmp_path / "out"
    m = ingest("llava-critic", [str(src)], out,
               engine=WorkerWritesEngine(workers=1) if workers_write else None)
    assert_conserved(out)
    assert all("-" in f.split("/")[1].removeprefix("part-") for f in m["files"]
               if f.startswith("kept/"))  # part files, whatever the engine
    kept = {r["source_id"]: r for r in rows(out)}
    assert (kept["c0"]["chosen"], kept["c0"]["rejected"]) == ("It is red.", "It is blue.")
    assert (kept["c1"]["chosen"], kept["c1"]["rejected"]) == ("It is blue.", "It is red.")
    assert kept["c0"]["prompt"][0]["content"] == "What colour is the car?"
    assert kept["c0"]["category"] == "VLFeedback"
    rej = _by_reason(out)
    assert [r["source_id"] for r in rej["ambiguous"]] == ["c2"]
    assert [r["source_id"] for r in rej["unparseable_judgment"]] == ["c3"]
    assert [r["source_id"] for r in rej["unparseable_prompt"]] == ["c4"]


def _point(i: int, q: str, resp: str, score: str, image: bytes) -> dict:
    human = (f"<image>\nRate the response.\nQuestion: [{q}]\nThe LMM response: [{resp}]\n"
             "ASSISTANT:\n")
    return {"id": f"p{i}", "source": "VLFeedback",
            "conversations": [{"from": "human", "value": human},
                              {"from": "gpt", "value": f"Fine detail. Overall score: {score}"}],
            "image": {"bytes": image, "path": None}}


def test_llava_critic_pointwise_pairs_best_with_worst(tmp_path: Path) -> None:
    a, b = jpeg_bytes(seed=1), jpeg_bytes(seed=2, color=(10, 200, 10))
    src = write_parquet(tmp_path / "point.parquet", [
        _point(0, "Q1", "good", "9", a),
        _point(1, "Q1", "middle", "6", a),
        _point(2, "Q1", "bad", "2", a),
        _point(3, "Q2", "alone", "7", a),       # no partner
        _point(4, "Q1", "tie-a", "5", b),       # other image: a tie
        _point(5, "Q1", "tie-b", "5", b),
    ])
    out = tmp_path / "out"
    m = ingest("llava-critic", [str(src)], out, config="pointwise")
    assert_conserved(out)
    [pair] = rows(out)
    assert (pair["chosen"], pair["rejected"]) == ("good", "bad")
    assert (pair["chosen_score"], pair["rejected_score"]) == (9.0, 2.0)
    rej = _by_reason(out)
    assert sorted(r["source_id"] for r in rej["unpaired"]) == ["p1", "p3"]
    assert sorted(r["source_id"] for r in rej["ambiguous"]) == ["p4", "p5"]
    assert m["rows_in"] == 6 and m["pointwise"] == {"pairs": 1, "records_not_paired": 4}


def test_skywork_pref_message_lists(tmp_path: Path) -> None:
    ctx = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
           {"role": "user", "content": "2+2?"}]
    src = write_jsonl(tmp_path / "sky.jsonl", [
        {"chosen": ctx + [{"role": "assistant", "content": "4"}],
         "rejected": ctx + [{"role": "assistant", "content": "5"}], "source": "magpie_ultra"},
        {"chosen": ctx + [{"role": "assistant", "content": "4"}],
         "rejected": [{"role": "user", "content": "other"}, {"role": "assistant", "content": "5"}],
         "source": "x"},
    ])
    out = tmp_path / "out"
    ingest("skywork-pref", [str(src)], out)
    assert_conserved(out)
    [row] = rows(out)
    assert row["prompt"] == ctx and row["chosen"] == "4" and row["rejected"] == "5"
    assert row["category"] == "magpie_ultra"
    assert list(_by_reason(out)) == ["malformed_row"]


def test_hh_rlhf_multi_turn_transcript() -> None:
    text = "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Bye\n\nAssistant: See you"
    assert parse_transcript(text) == [
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "See you"}]


def test_hh_rlhf_shared_prefix_becomes_prompt(tmp_path: Path) -> None:
    pre = "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Tell me a joke"
    src = write_jsonl(tmp_path / "hh.jsonl", [
        {"chosen": pre + "\n\nAssistant: Knock knock.", "rejected": pre + "\n\nAssistant: No."},
        {"chosen": pre + "\n\nAssistant:", "rejected": pre + "\n\nAssistant: No."},
        {"chosen": "no markers", "rejected": pre + "\n\nAssistant: No."},
    ])
    out = tmp_path / "out"
    ingest("hh-rlhf", [str(src)], out)
    assert_conserved(out)
    [row] = rows(out)
    assert [m["role"] for m in row["prompt"]] == ["user", "assistant", "user"]
    assert row["prompt"][-1]["content"] == "Tell me a joke"
    assert (row["chosen"], row["rejected"]) == ("Knock knock.", "No.")
    assert sorted(_by_reason(out)) == ["empty_response", "malformed_row"]


def test_sharegpt_thirteen_turns_and_image_paths(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.jpg").write_bytes(jpeg_bytes())
    turns = []
    for i in range(13):
        turns.append({"from": "human" if i % 2 == 0 else "gpt", "value": f"turn {i}"})
    data = [
        {"conversations": turns, "chosen": {"from": "gpt", "value": "good"},
         "rejected": {"from": "gpt", "value": "bad"}, "images": ["imgs/a.jpg"]},
        {"conversations": turns[:1], "chosen": {"from": "gpt", "value": "x"},
         "rejected": {"from": "gpt", "value": "y"}, "images": ["imgs/missing.jpg"]},
        {"conversations": turns[:1], "chosen": {"from": "gpt", "value": "x"},
         "rejected": {"from": "gpt", "value": "y"}, "images": ["/etc/passwd"]},
        {"conversations": turns[:1], "chosen": {"from": "gpt", "value": "x"},
         "rejected": {"from": "gpt", "value": "y"}, "images": ["../../../etc/hostname"]},
    ]
    src = tmp_path / "sg.json"
    src.write_text(json.dumps(data))
    out = tmp_path / "out"
    ingest("sharegpt", [str(src)], out, image_root=tmp_path)
    assert_conserved(out)
    [row] = rows(out)
    assert len(row["prompt"]) == 13 and row["prompt"][12] == {"role": "user", "content": "turn 12"}
    assert row["images"][0]["format"] == "JPEG"
    rej = _by_reason(out)
    assert len(rej["missing_image"]) == 1 and len(rej["image_path_escape"]) == 2


def test_rewardbench(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "rb.jsonl", [
        {"prompt": "Write a haiku", "chosen": "Old pond...", "chosen_model": "a",
         "rejected": "No.", "rejected_model": "b", "subset": "alpacaeval-easy", "id": 30},
    ])
    out = tmp_path / "out"
    ingest("rewardbench", [str(src)], out)
    [row] = rows(out)
    assert row["source_id"] == "30" and row["category"] == "alpacaeval-easy"
    assert json.loads(row["meta"]) == {"chosen_model": "a", "rejected_model": "b"}


def test_vl_rewardbench_ranking_and_optional_images(tmp_path: Path) -> None:
    (tmp_path / "images" / "povid").mkdir(parents=True)
    (tmp_path / "images" / "povid" / "h1.jpg").write_bytes(jpeg_bytes())
    src = write_jsonl(tmp_path / "vl.jsonl", [
        {"id": "hallucination_pair_1", "query": "Describe.", "response": ["A", "B"],
         "human_ranking": [0, 1], "image_path": "images/povid/h1.jpg"},
        {"id": "RLAIF-V-9", "query": "Describe.", "response": ["A", "B"],
         "human_ranking": [1, 0], "image_path": "images/rlaif-v/x.jpg"},
    ])
    text_only = tmp_path / "text"
    ingest("vl-rewardbench", [str(src)], text_only)
    kept = {r["source_id"]: r for r in rows(text_only)}
    assert kept["hallucination_pair_1"]["category"] == "povid"
    assert kept["hallucination_pair_1"]["images"] == []
    assert (kept["RLAIF-V-9"]["chosen"], kept["RLAIF-V-9"]["rejected"]) == ("B", "A")
    assert json.loads(kept["RLAIF-V-9"]["meta"])["image_path"] == "images/rlaif-v/x.jpg"
    with_images = tmp_path / "img"
    ingest("vl-rewardbench", [str(src)], with_images, image_root=tmp_path)
    assert_conserved(with_images)
    # an eval set keeps every row its scorer scores: the missing image is recorded, not a drop
    kept = {r["source_id"]: r for r in rows(with_images)}
    assert len(kept["hallucination_pair_1"]["images"]) == 1
    assert kept["RLAIF-V-9"]["images"] == []
    assert json.loads(kept["RLAIF-V-9"]["meta"])["eval_issues"][0].startswith("missing_image")
    assert rows(with_images, "rejected") == []


def test_generic_with_column_map_csv_and_gz(tmp_path: Path) -> None:
    import gzip

    csv_path = tmp_path / "pairs.csv.gz"
    with gzip.open(csv_path, "wt", encoding="utf-8") as fh:
        fh.write("q,good,bad,s1,s2,key\nWhy?,Because.,Dunno.,0.9,0.1,k1\n"
                 "Empty?,,x,,,k2\n")
    out = tmp_path / "out"
    ingest("generic", [str(csv_path)], out,
           mapping={"prompt": "q", "chosen": "good", "rejected": "bad", "chosen_score": "s1",
                    "rejected_score": "s2", "id": "key"})
    assert_conserved(out)
    [row] = rows(out)
    assert row["source_id"] == "k1" and row["chosen_score"] == pytest.approx(0.9)
    assert list(_by_reason(out)) == ["empty_response"]
