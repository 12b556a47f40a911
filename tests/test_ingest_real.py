"""Ingest of the real public data in ../shared/data (skipped when absent, failing under CI)."""

from __future__ import annotations

import json
from pathlib import Path

from curate.stages.ingest import ingest
from tests.conftest import shared_data
from tests.helpers import assert_conserved, rows, write_jsonl


def test_hh_rlhf_harmless_base(tmp_path: Path) -> None:
    src = shared_data("hh-rlhf/harmless-base-test.jsonl.gz")
    out = tmp_path / "hh"
    m = ingest("hh-rlhf", [str(src)], out)
    assert m["rows_in"] == 2312
    assert_conserved(out)
    # the file has 4 rows whose chosen reply is empty and 5 whose transcripts diverge early
    assert m["rejected_by_reason"] == {"empty_response": 4, "malformed_row": 5}
    kept = rows(out)
    assert all(r["prompt"][-1]["role"] == "user" for r in kept)
    assert max(len(r["prompt"]) for r in kept) >= 5  # multi-turn contexts survive


def test_llamafactory_sharegpt_demo(tmp_path: Path) -> None:
    src = shared_data("llamafactory/dpo_en_demo.json")
    out = tmp_path / "sg"
    m = ingest("sharegpt", [str(src)], out)
    assert (m["rows_in"], m["rows_kept"]) == (300, 300)
    assert_conserved(out)
    lengths = [len(r["prompt"]) for r in rows(out)]
    assert min(lengths) == 1 and max(lengths) == 13


def test_vl_rewardbench_text_only(tmp_path: Path) -> None:
    src = shared_data("vl-rewardbench/data.jsonl")
    out = tmp_path / "vl"
    m = ingest("vl-rewardbench", [str(src)], out)
    assert (m["rows_in"], m["rows_kept"]) == (1250, 1250)
    kept = rows(out)
    by_cat: dict[str, int] = {}
    for r in kept:
        by_cat[r["category"]] = by_cat.get(r["category"], 0) + 1
        assert r["images"] == [] and json.loads(r["meta"])["image_path"].startswith("images/")
    assert by_cat["povid"] == 448 and by_cat["wildvision"] == 173 and by_cat["mathverse"] == 167
    flipped = [r for r in kept if json.loads(r["meta"])["preferred_index"] == 1]
    assert len(flipped) == 5


def test_jsonl_pointing_at_ukbench_photos(tmp_path: Path, run_cli) -> None:
    folder = shared_data("ukbench")
    photos = sorted(p.name for p in folder.glob("*.jpg"))
    src = write_jsonl(tmp_path / "uk.jsonl", [
        {"prompt": f"What is in {name}?", "chosen": f"A photo ({name}).", "rejected": "Nothing.",
         "image": name, "id": name} for name in photos
    ])
    out = tmp_path / "uk"
    run_cli("ingest", "generic", src, "--image-root", folder, "--out", out, "--quiet")
    assert_conserved(out)
    rejected = rows(out, "rejected")
    assert [(r["source_id"], r["reject_reason"]) for r in rejected] == [
        ("ukbench09268_corrupt.jpg", "corrupt_image")]
    kept = rows(out)
    assert len(kept) == len(photos) - 1
    assert all(r["images"][0]["width"] > 0 for r in kept)
