"""The `trl` kind on TRL's five preference formats, written as TRL documents them.

Source: huggingface/trl, docs/source/dataset_formats.md ("Preference": standard and
conversational, each with an explicit or an implicit prompt; "Vision datasets": content
parts with {"type": "image"} placeholders and an `images` column), and
examples/datasets/rlaif-v.py (TRL's own vision preference set: prompt
[{"role": "user", "content": [{"type": "image"}, {"type": "text", ...}]}], chosen / rejected
one assistant message of text parts, `images` cast to Sequence(Image)). Scores as
UltraFeedback-binarized keeps them (dataset card of HuggingFaceH4/ultrafeedback_binarized:
`prompt` string, `chosen` / `rejected` full conversations, `score_chosen`, `score_rejected`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curate.sources.trl import extract_text_prompt
from curate.stages.ingest import ingest
from tests.helpers import assert_conserved, jpeg_bytes, rows, write_jsonl

SKY = [{"role": "user", "content": "What color is the sky?"}]
BLUE = [{"role": "assistant", "content": "It is blue."}]
GREEN = [{"role": "assistant", "content": "It is green."}]


def _one(tmp_path: Path, records: list[dict], name: str, **kw) -> dict:
    src = write_jsonl(tmp_path / f"{name}.jsonl", records)
    out = tmp_path / name
    ingest("trl", [str(src)], out, **kw)
    assert_conserved(out)
    [row] = rows(out)
    return row


def test_standard_explicit(tmp_path: Path) -> None:
    row = _one(tmp_path, [{"prompt": "The sky is", "chosen": " blue.", "rejected": " green."}],
               "std_explicit")
    assert row["prompt"] == [{"role": "user", "content": "The sky is"}]
    assert (row["chosen"], row["rejected"]) == (" blue.", " green.")


def test_standard_implicit_splits_like_trl_extract_prompt(tmp_path: Path) -> None:
    row = _one(tmp_path, [{"chosen": "The sky is blue.", "rejected": "The sky is green."}],
               "std_implicit")
    # TRL: {'prompt': 'The sky is', 'chosen': ' blue.', 'rejected': ' green.'}
    assert row["prompt"] == [{"role": "user", "content": "The sky is"}]
    assert (row["chosen"], row["rejected"]) == (" blue.", " green.")
    assert extract_text_prompt("abc", "abd") == ("ab", "c", "d")


def test_conversational_explicit(tmp_path: Path) -> None:
    row = _one(tmp_path, [{"prompt": SKY, "chosen": BLUE, "rejected": GREEN}], "conv_explicit")
    assert row["prompt"] == SKY
    assert (row["chosen"], row["rejected"]) == ("It is blue.", "It is green.")


def test_conversational_implicit_with_ultrafeedback_scores(tmp_path: Path) -> None:
    """UltraFeedback-binarized: a string prompt beside full conversations (TRL's
    maybe_extract_prompt ignores it and splits the conversations), scores kept."""
    system = [{"role": "system", "content": "Be brief."}]
    ctx = system + SKY + BLUE + [{"role": "user", "content": "And at night?"}]
    rec = {"prompt": "What color is the sky?", "prompt_id": "p1",
           "chosen": ctx + [{"role": "assistant", "content": "Black."}],
           "rejected": ctx + [{"role": "assistant", "content": "Blue."}],
           "messages": ctx + [{"role": "assistant", "content": "Black."}],
           "score_chosen": 8.0, "score_rejected": 5.5}
    row = _one(tmp_path, [rec], "conv_implicit")
    assert row["prompt"] == ctx
    assert (row["chosen"], row["rejected"]) == ("Black.", "Blue.")
    assert (row["chosen_score"], row["rejected_score"]) == (8.0, 5.5)
    assert json.loads(row["meta"]) == {"prompt_id": "p1"}


@pytest.mark.parametrize("via", ["parquet", "save_to_disk"])
def test_vision_as_trl_writes_it(tmp_path: Path, via: str) -> None:
    """TRL's rlaif-v conversion: images cast to Sequence(Image) and written by `datasets`
    (a List(Image) column: each image a nested struct, not a top-level Image column)."""
    import datasets

    img = jpeg_bytes()

    def prompt(text: str) -> list:
        return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]

    def answer(text: str) -> list:
        return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]

    ds = datasets.Dataset.from_list([
        {"prompt": prompt("What is shown?"), "images": [{"bytes": img, "path": None}],
         "chosen": answer("A red square."), "rejected": answer("A cat.")},
        {"prompt": prompt("Two images?"), "images": [],  # a placeholder without its image
         "chosen": answer("Yes."), "rejected": answer("No.")},
    ])
    features = ds.features.copy()
    features["images"] = datasets.Sequence(datasets.Image(decode=True))
    ds = ds.cast(features)
    if via == "parquet":
        src = tmp_path / "vision.parquet"
        ds.to_parquet(str(src))
    else:
        src = tmp_path / "vision_saved"
        ds.save_to_disk(str(src))
    out = tmp_path / "out"
    ingest("trl", [str(src)], out)
    assert_conserved(out)
    [row] = rows(out)
    assert row["prompt"] == [{"role": "user", "content": "What is shown?"}]
    assert (row["chosen"], row["rejected"]) == ("A red square.", "A cat.")
    assert row["images"][0]["bytes"] == img and row["images"][0]["format"] == "JPEG"
    [bad] = rows(out, "rejected")
    assert bad["reject_reason"] == "malformed_row" and "placeholder" in bad["reject_detail"]


def test_map_names_nested_fields(tmp_path: Path, run_cli) -> None:
    src = write_jsonl(tmp_path / "nested.jsonl", [
        {"conv": {"turns": SKY}, "answers": [BLUE, GREEN], "ratings": {"good": 9, "bad": 2}}])
    out = tmp_path / "out"
    run_cli("ingest", "trl", src, "--out", out, "--quiet", "--map",
            "prompt=conv.turns,chosen=answers[0],rejected=answers[1],"
            "chosen_score=ratings.good,rejected_score=ratings.bad")
    [row] = rows(out)
    assert row["prompt"] == SKY and (row["chosen"], row["rejected"]) == ("It is blue.",
                                                                       "It is green.")
    assert (row["chosen_score"], row["rejected_score"]) == (9.0, 2.0)


def test_rows_trl_cannot_pair_are_rejected_with_a_reason(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "bad.jsonl", [
        {"prompt": SKY, "chosen": BLUE + BLUE, "rejected": GREEN},  # two assistant turns
        {"chosen": "same", "rejected": 3},  # not both strings
        {"prompt": SKY, "chosen": BLUE, "rejected": GREEN},
    ])
    out = tmp_path / "out"
    m = ingest("trl", [str(src)], out)
    assert_conserved(out)
    assert m["rows_kept"] == 1 and m["rejected_by_reason"] == {"malformed_row": 2}


def test_missing_trl_columns_are_a_schema_error(tmp_path: Path, run_cli) -> None:
    src = write_jsonl(tmp_path / "x.jsonl", [{"question": "q", "good": "a", "bad": "b"}])
    res = run_cli("ingest", "trl", src, "--out", tmp_path / "out", expect=2)
    assert "'chosen'" in res.output and "question, good, bad" in res.output
    assert not (tmp_path / "out" / "manifest.json").exists()
