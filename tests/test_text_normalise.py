"""`curate.text`: the one normalisation, and the agreement it exists for: the
`no_contamination` gate counts every row `curate decontam` rejects as an exact match, and
finds nothing in the rows decontam keeps (issue 15)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from curate.dataset import Dataset
from curate.text import (
    last_user_text,
    normalise_prompt,
    normalise_text,
    normalise_words,
    prompt_keys,
    word_runs,
)
from tests.helpers import write_jsonl
from tests.similar_support import smooth_image


# -- the normaliser ----------------------------------------------------------------------------
@pytest.mark.parametrize(("a", "b"), [
    ("What IS this?", "what is this?"),  # case
    ("STRASSE", "straße"),  # full case folding, not lower()
    ("  what\tis\n\nthis?\u00a0", "what is this?"),  # whitespace runs, NBSP, trimmed
    ("what\u3000is this?", "what is this?"),  # ideographic space
    ("Ｗｈａｔ is ﬁne？", "what is fine?"),  # NFKC: fullwidth forms, ligatures
    ("\u01f0", "j\u030c"),  # NFKC after folding: one composed character either way
])
def test_exact_form_is_the_same(a: str, b: str) -> None:
    assert normalise_text(a) == normalise_text(b)


@pytest.mark.parametrize(("a", "b"), [
    ("what is this?", "what is this."),  # punctuation counts
    ("a b", "ab"),  # a space between words counts
    ("<image> what", "what"),  # so does a placeholder, in plain text
])
def test_exact_form_keeps_punctuation_and_placeholders(a: str, b: str) -> None:
    assert normalise_text(a) != normalise_text(b)


def test_exact_prompt_drops_placeholders_keeps_roles() -> None:
    llava = [{"role": "system", "content": "Be brief."},
             {"role": "user", "content": "<IMAGE>\nWhat  is THIS?<image>"}]
    plain = [{"role": "system", "content": "be brief."},
             {"role": "user", "content": "what is this?"}]
    assert normalise_prompt(llava) == normalise_prompt(plain) == [
        ["system", "be brief."], ["user", "what is this?"]]
    assert normalise_prompt(None) == []
    assert normalise_prompt([{"role": "user", "content": "what is this."}]) != \
        normalise_prompt(plain[1:])


@pytest.mark.parametrize(("text", "words"), [
    ("What's the capital of France?!", ["what", "s", "the", "capital", "of", "france"]),
    ("<image>\nDescribe <Image> this.<IMAGE>", ["describe", "this"]),
    ("＜ｉｍａｇｅ＞ Ｈｅｌｌｏ, ｗｏｒｌｄ", ["hello", "world"]),  # fullwidth placeholder too
    ("\u01f0ava ﬁne", ["\u01f0ava", "fine"]),  # a decomposed letter stays in its word
    ("数学 — ½ ÷ 2", ["数学", "1", "2", "2"]),  # NFKC: ½ is 1/2
    ("?! ... <image>", []),
])
def test_words(text: str, words: list[str]) -> None:
    assert normalise_words(text) == words


def test_prompt_keys() -> None:
    chat = [{"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "<image> What is the capital of Australia?"}]
    assert prompt_keys(chat) == ["answer briefly what is the capital of australia",
                                 "what is the capital of australia"]
    assert prompt_keys([{"role": "user", "content": "WHAT is the capital, of Australia"}]) \
        == ["what is the capital of australia"]
    # no user message: the whole prompt is the question
    assert last_user_text([{"role": "system", "content": "Hi."}]) == "Hi."
    assert prompt_keys([{"role": "user", "content": "<image> ?"}]) == []
    assert prompt_keys(None) == []
    assert list(word_runs(["a", "b", "c"], 2)) == ["a b", "b c"]
    assert list(word_runs(["a"], 2)) == [] == list(word_runs(["a"], 0))


# -- the gate and decontam agree -------------------------------------------------------------
LONG = ("A farmer has seventeen sheep and all but nine run away through a hole in the fence "
        "near the old barn. How many sheep does the farmer have left at the end of the day?")
BUS = ("Look at the photograph carefully and tell me how many people are standing near the "
       "red bus on the left side of the street.")
EVAL = [
    {"id": "e-capital", "prompt": "What is the capital of Australia?"},
    {"id": "e-long", "prompt": LONG},
    {"id": "e-car", "prompt": "<image>\nWhat colour is the car in this picture?",
     "image": "car.png"},
    {"id": "e-bus", "prompt": f"<image> {BUS}", "image": "bus.png"},
    # rejected by the eval set's own ingest (empty chosen): still eval content
    {"id": "e-rejected", "prompt": "Name three primary colours, please.", "chosen": ""},
]
# (id, prompt, image): each differs from an eval prompt only in case, punctuation,
# whitespace, character width or where `<image>` sits, except the clean rows and t-contain
TRAIN = [
    ("t-capital-case", "WHAT IS THE CAPITAL OF AUSTRALIA", None),
    ("t-capital-token", "<image> what is the capital of australia ?!", None),
    ("t-capital-system", [{"role": "system", "content": "Answer briefly."},
                          {"role": "user", "content": "What is the capital of Australia"}],
     None),
    ("t-long-space", "  " + LONG.replace(" ", "   ").replace("?", " ?") + "\n", None),
    ("t-long-width", LONG.replace("farmer", "ｆａｒｍｅｒ").upper(), None),
    ("t-car-text", "what colour is the car in this picture", None),
    ("t-car-same", "What colour is the car in this picture? <image>", "car.png"),
    ("t-car-other", "What colour is the car in this picture <IMAGE>", "other.png"),
    ("t-bus-other", BUS.lower().replace(".", "") + " <image>", "other.png"),
    # a short text-only eval question on a row with a picture: weak evidence, kept
    ("t-capital-photo", "<image> What is the capital of Australia?", "other.png"),
    ("t-rejected", "name three primary colours please", None),
    ("t-contain", "Quick question: what is the capital of Australia?", None),
    ("t-clean", "Give me three tips for sleeping better.", None),
    ("t-clean-near", "What is the capital of Austria?", None),
]


def _ingest(run_cli, tmp: Path, name: str, rows: list[dict[str, Any]],
            images: dict[str, bytes]) -> Path:
    raw = tmp / f"{name}-raw"
    raw.mkdir()
    for fname, data in images.items():
        (raw / fname).write_bytes(data)
    write_jsonl(raw / "rows.jsonl", rows)
    out = tmp / name
    run_cli("ingest", "generic", raw / "rows.jsonl", "--out", out, "--image-root", raw,
            "--source", name)
    return out


def _gate(run_cli, tmp: Path, folder: Path, eval_dir: Path) -> list[str]:
    """The source ids of the kept rows of `folder` that `no_contamination` counts."""
    rules = tmp / f"rules-{folder.name}.yaml"
    rules.write_text(yaml.safe_dump({"rules": [{"rule": "no_contamination",
                                                "eval": [str(eval_dir)]}]}))
    res = run_cli("check", folder, "--rules", rules, "--format", "json", "--show", 1000,
                  expect=None)
    found = json.loads(res.output[res.output.index("{"):])["results"][0]
    assert found["count"] == len(found["offending"])
    ids = {r["pair_id"]: r["source_id"]
           for r in Dataset.open(folder).read("kept", columns=["pair_id", "source_id"])
           .to_pylist()}
    return sorted(ids[o.split(" ")[0]] for o in found["offending"])


def test_gate_and_decontam_agree_on_exact_matches(run_cli, tmp_path: Path) -> None:
    """Every row decontam rejects as an `exact` match the gate counts as contaminated, and
    the gate finds nothing in decontam's kept rows."""
    images = {"car.png": smooth_image(21), "bus.png": smooth_image(22),
              "other.png": smooth_image(23)}
    ev = _ingest(run_cli, tmp_path, "evalset", [
        {"chosen": "A good answer.", "rejected": "A bad answer."} | r for r in EVAL], images)
    assert Dataset.open(ev).manifest["rows_rejected"] == 1  # e-rejected
    train = _ingest(run_cli, tmp_path, "train", [
        {"id": i, "prompt": p, "chosen": f"answer {i}", "rejected": f"other {i}"}
        | ({"image": im} if im else {}) for i, p, im in TRAIN], images)
    out = tmp_path / "decontam"
    run_cli("decontam", train, "--against", ev, "--out", out, "--cache", tmp_path / "cache")
    ds = Dataset.open(out)
    rejected = {r["source_id"]: r["decontam_tests"].split(",")
                for r in ds.read("rejected").to_pylist()}
    kept = sorted(r["source_id"] for r in ds.read("kept").to_pylist())
    exact = sorted(i for i, tests in rejected.items() if "exact" in tests)
    # the data exercises what it should: case, punctuation, whitespace, width, `<image>`,
    # a system message, an eval row its own ingest rejected, containment, the image rule
    assert exact == sorted(["t-capital-case", "t-capital-token", "t-capital-system",
                            "t-long-space", "t-long-width", "t-car-text", "t-bus-other",
                            "t-rejected", "t-contain"]), rejected
    assert "image" in rejected["t-car-same"]
    assert kept == ["t-capital-photo", "t-car-other", "t-clean", "t-clean-near"]

    gate_train = _gate(run_cli, tmp_path, train, ev)
    missed = sorted(set(exact) - set(gate_train))
    assert not missed, f"decontam's exact matches the gate does not count: {missed}"
    assert set(gate_train) <= set(rejected), "the gate counts rows decontam keeps"
    assert _gate(run_cli, tmp_path, out, ev) == []
