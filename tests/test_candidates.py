"""`curate ingest candidates`: prompts with N sampled responses, validated like any ingest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curate import dataset as D
from curate import schema as S
from curate.stages.ingest import ingest as ingest_candidates
from curate.stages.ingest_candidates import clean_responses
from tests.helpers import assert_conserved, jpeg_bytes, rows, write_jsonl, write_parquet


def test_text_and_message_prompts_responses_model_and_system(tmp_path: Path, run_cli) -> None:
    src = write_jsonl(tmp_path / "c.jsonl", [
        {"qid": "q1", "question": "What is 2+2?", "samples": ["4", "Four.", "5", ""],
         "policy": "toy-7b", "sys": "Be brief.", "topic": "math"},
        {"qid": "q2", "question": [{"from": "human", "value": "Say hi"}],
         "samples": [{"role": "assistant", "content": "hi"}, {"from": "gpt", "value": "hello"}],
         "policy": "toy-7b"},
    ])
    out = tmp_path / "cands"
    run_cli("ingest", "candidates", src, "--out", out, "--map",
            "prompt=question,responses=samples,model=policy,id=qid,system=sys,category=topic")
    m = assert_conserved(out)
    assert m["rows_in"] == 2 and m["rows_kept"] == 2
    assert m["candidates"] == {"responses": 5, "responses_per_prompt": {"2": 1, "3": 1},
                               "invalid_responses_left_out": 1}
    S.validate(D.Dataset.open(out).schema(), base=S.CANDIDATES_SCHEMA)
    r1, r2 = rows(out)
    assert r1["source"] == "candidates" and r1["source_id"] == "q1"
    assert r1["prompt"] == [{"role": "system", "content": "Be brief."},
                            {"role": "user", "content": "What is 2+2?"}]
    assert r1["responses"] == ["4", "Four.", "5"]
    assert r1["model"] == "toy-7b" and r1["category"] == "math"
    assert json.loads(r1["meta"])["invalid_responses"] == [
        {"index": 3, "reason": "empty_response", "raw": ""}]
    assert r2["prompt"] == [{"role": "user", "content": "Say hi"}]
    assert r2["responses"] == ["hi", "hello"]
    assert len({r1["prompt_id"], r2["prompt_id"]}) == 2


def test_bad_rows_are_rejected_with_a_reason(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "c.jsonl", [
        {"id": "ok", "prompt": "p", "responses": ["a", "b"]},
        {"id": "empty-list", "prompt": "p", "responses": []},
        {"id": "all-bad", "prompt": "p", "responses": ["", "  ", 3]},
        {"id": "not-a-list", "prompt": "p", "responses": "a single string"},
        {"id": "no-prompt", "prompt": "", "responses": ["a", "b"]},
        {"id": "missing", "prompt": "p"},
        {"id": "ok", "prompt": "p", "responses": ["a", "b"]},  # the same row again
    ])
    out = tmp_path / "cands"
    m = ingest_candidates("candidates", [str(src)], out)
    assert_conserved(out)
    assert m["rows_in"] == 7 and m["rows_kept"] == 1
    assert m["rejected_by_reason"] == {"duplicate_prompt_id": 1, "malformed_row": 1,
                                       "no_prompt": 1, "no_responses": 3}
    rej = {r["source_id"]: r for r in rows(out, D.REJECTED)}
    assert rej["all-bad"]["reject_detail"] == "none of the 3 responses is usable text"
    assert [b["reason"] for b in json.loads(rej["all-bad"]["meta"])["invalid_responses"]] == [
        "empty_response", "empty_response", "response_not_string"]


def test_images_are_validated_as_ingest_validates_them(tmp_path: Path) -> None:
    good = jpeg_bytes(seed=1)
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.jpg").write_bytes(jpeg_bytes(seed=2))
    with_bytes = write_parquet(tmp_path / "c.parquet", [
        {"id": "bytes", "q": "Describe it", "r": ["red", "blue"], "img": good},
        {"id": "corrupt", "q": "Describe it", "r": ["red", "blue"], "img": b"not an image"},
    ])
    with_paths = write_jsonl(tmp_path / "c.jsonl", [
        {"id": "path", "q": "Describe it", "r": ["red", "blue"], "img": "a.jpg"},
        {"id": "escape", "q": "Describe it", "r": ["red", "blue"], "img": "../c.parquet"},
    ])
    out = tmp_path / "cands"
    m = ingest_candidates("candidates", [str(with_bytes), str(with_paths)], out,
                          image_root=tmp_path / "imgs",
                          mapping={"prompt": "q", "responses": "r", "image": "img"})
    assert_conserved(out)
    assert m["rejected_by_reason"] == {"corrupt_image": 1, "image_path_escape": 1}
    kept = {r["source_id"]: r for r in rows(out)}
    assert kept["bytes"]["images"][0]["bytes"] == good
    assert kept["bytes"]["images"][0]["format"] == "JPEG"
    assert kept["path"]["images"][0]["width"] == 64


def test_same_input_same_bytes_and_a_rerun_is_skipped(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "c.jsonl", [
        {"id": f"q{i}", "prompt": f"p{i}", "responses": [f"a{i}", f"b{i}"]} for i in range(5)])
    a, b = tmp_path / "a", tmp_path / "b"
    ma = ingest_candidates("candidates", [str(src)], a, chunk_size=2)
    mb = ingest_candidates("candidates", [str(src)], b, chunk_size=2)
    assert ma["files"] == mb["files"]
    again = ingest_candidates("candidates", [str(src)], a)
    assert again["fingerprint"] == ma["fingerprint"] and again["seconds"] == ma["seconds"]


def test_map_fields_are_checked_per_kind(tmp_path: Path, run_cli) -> None:
    src = write_jsonl(tmp_path / "c.jsonl", [{"prompt": "p", "responses": ["a", "b"]}])
    bad = run_cli("ingest", "candidates", src, "--out", tmp_path / "x", "--map", "chosen=a",
                  expect=2)
    assert "not one of prompt, responses, image, model" in bad.output
    bad = run_cli("ingest", "generic", src, "--out", tmp_path / "y", "--map", "responses=a",
                  expect=2)
    assert "not one of prompt, chosen" in bad.output


@pytest.mark.parametrize("value, good, reasons", [
    (["a", {"content": "b"}, {"value": "c"}, {"text": "d"}], ["a", "b", "c", "d"], []),
    (["a", None, 7, "   "], ["a"], ["missing_response", "response_not_string",
                                    "empty_response"]),
])
def test_clean_responses(value, good, reasons) -> None:
    got, bad, problem = clean_responses(value)
    assert got == good and [b["reason"] for b in bad] == reasons and problem is None
