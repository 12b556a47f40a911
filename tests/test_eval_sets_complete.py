"""Eval sets never shrink silently, and a text-only VL-RewardBench score says so.

Sources: the RewardBench dataset card (huggingface.co/datasets/allenai/reward-bench:
`prompt`, `chosen`, `chosen_model`, `rejected`, `rejected_model`, `subset`, `id`; the
official scorer scores every row of the `filtered` split, a tie counting as wrong) and the
VL-RewardBench rows in ../shared/data/vl-rewardbench/data.jsonl (`id`, `query`,
`response` (2), `human_ranking`, `image_path` relative to the image folder).
"""

from __future__ import annotations

import json
from pathlib import Path

from curate.dataset import read_manifest
from tests.conftest import shared_data
from tests.helpers import assert_conserved, jpeg_bytes, rows, write_jsonl


def _rb(i: int, **kw) -> dict:
    row = {"prompt": f"Write haiku {i}", "chosen": f"Old pond {i}", "chosen_model": "a",
           "rejected": f"No {i}.", "rejected_model": "b", "subset": "alpacaeval-easy", "id": i}
    row.update(kw)
    return row


def test_rewardbench_keeps_rows_a_training_set_would_drop(tmp_path: Path, run_cli) -> None:
    src = write_jsonl(tmp_path / "rb.jsonl", [
        _rb(0), _rb(1, chosen=""), _rb(2, rejected="Old pond 2"), _rb(3, subset="donotanswer")])
    out = tmp_path / "rb"
    run_cli("ingest", "rewardbench", src, "--out", out, "--quiet")
    m = assert_conserved(out)
    assert (m["rows_in"], m["rows_kept"]) == (4, 4)
    issues = {r["source_id"]: json.loads(r["meta"]).get("eval_issues") for r in rows(out)}
    assert issues["0"] is None and issues["3"] is None
    assert issues["1"][0].startswith("empty_response")
    assert issues["2"][0].startswith("identical_responses")
    res = run_cli("eval", out, "--baseline", "length", "--json")
    assert json.loads(res.output)["rewardbench"]["overall"]["pairs"] == 4


def test_eval_refuses_a_folder_that_lost_rows(tmp_path: Path, run_cli) -> None:
    src = write_jsonl(tmp_path / "rb.jsonl", [_rb(0), _rb(1, chosen=None), _rb(2)])
    out = tmp_path / "rb"
    run_cli("ingest", "rewardbench", src, "--out", out, "--quiet")
    m = assert_conserved(out)
    assert (m["rows_in"], m["rows_kept"]) == (3, 2)  # a null response cannot be scored
    res = run_cli("eval", out, "--baseline", "length", expect=2)
    assert "2 of the 3 rows" in res.output and "missing_response: 1" in res.output
    assert "Traceback" not in res.output


def _vlrb(tmp_path: Path) -> Path:
    (tmp_path / "images" / "povid").mkdir(parents=True)
    (tmp_path / "images" / "povid" / "h1.jpg").write_bytes(jpeg_bytes())
    return write_jsonl(tmp_path / "vl.jsonl", [
        {"id": "hallucination_pair_1", "query": "Describe.", "response": ["A", "B"],
         "human_ranking": [0, 1], "image_path": "images/povid/h1.jpg"},
        {"id": "RLAIF-V-9", "query": "Describe.", "response": ["C", "D"],
         "human_ranking": [1, 0], "image_path": "images/rlaif-v/x.jpg"},
    ])


def test_vl_rewardbench_without_image_root_is_labelled_text_only(tmp_path: Path,
                                                                  run_cli) -> None:
    src = _vlrb(tmp_path)
    text = tmp_path / "text"
    res = run_cli("ingest", "vl-rewardbench", src, "--out", text)
    assert "text-only" in res.output
    assert read_manifest(text)["text_only"] is True
    rep = json.loads(run_cli("eval", text, "--baseline", "length", "--json").output)
    assert rep["vl-rewardbench"]["text_only"] is True
    assert rep["vl-rewardbench"]["rows_without_images"] == 2
    assert "TEXT-ONLY" in run_cli("eval", text, "--baseline", "length").output

    imgs = tmp_path / "img"
    run_cli("ingest", "vl-rewardbench", src, "--image-root", tmp_path, "--out", imgs, "--quiet")
    assert read_manifest(imgs)["text_only"] is False
    rep = json.loads(run_cli("eval", imgs, "--baseline", "length", "--json").output)
    assert "text_only" not in rep["vl-rewardbench"]
    assert rep["vl-rewardbench"]["overall"]["pairs"] == 2  # the missing image is no drop
    assert rep["vl-rewardbench"]["rows_without_images"] == 1


def test_real_vl_rewardbench_keeps_all_1250_rows(tmp_path: Path, run_cli) -> None:
    src = shared_data("vl-rewardbench/data.jsonl")
    out = tmp_path / "vl"
    run_cli("ingest", "vl-rewardbench", src, "--out", out, "--quiet")
    m = assert_conserved(out)
    assert (m["rows_in"], m["rows_kept"], m["text_only"]) == (1250, 1250, True)
    # with an image root that holds none of its images: every row still kept, noted
    empty = tmp_path / "no-images"
    empty.mkdir()
    out2 = tmp_path / "vl2"
    run_cli("ingest", "vl-rewardbench", src, "--image-root", empty, "--out", out2, "--quiet")
    m2 = assert_conserved(out2)
    assert (m2["rows_in"], m2["rows_kept"], m2["text_only"]) == (1250, 1250, False)
    assert all(json.loads(r["meta"])["eval_issues"] for r in rows(out2))
