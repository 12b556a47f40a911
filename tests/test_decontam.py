"""`curate decontam` on a small hand-made eval set: each test, the image gating, contracts."""

from __future__ import annotations

from pathlib import Path

import pytest

from curate.dataset import Dataset
from curate.engine import get_engine
from curate.models.embedder import EmbedSettings
from curate.stages.decontam import DecontamConfig, build_eval_index, decontam
from tests.similar_support import ingest_generic, smooth_image

ONE = get_engine("local", workers=1)
LONG = ("A farmer has seventeen sheep and all but nine run away through a hole in the fence "
        "near the old barn. How many sheep does the farmer have left at the end of the day?")

EVAL = [
    {"id": "e-long", "prompt": LONG, "chosen": "9", "rejected": "8"},
    {"id": "e-capital", "prompt": "What is the capital of Australia?", "chosen": "Canberra",
     "rejected": "Sydney"},
    {"id": "e-describe", "prompt": "<image>\nDescribe this image in detail.", "image": "a.png",
     "chosen": "A photo.", "rejected": "A drawing."},
    {"id": "e-car", "prompt": "What colour is the car in this picture?", "image": "b.png",
     "chosen": "Red.", "rejected": "Blue."},
    {"id": "e-tire", "prompt": "How do I change a flat tire on my bicycle?", "chosen": "Lever.",
     "rejected": "Glue."},
]
TRAIN = [
    # shares a 13-gram with e-long, with its own opening and one word changed at the end
    {"id": "t-ngram", "prompt": "Riddle time! " + LONG.replace("end of the day", "evening"),
     "expect": "ngram"},
    {"id": "t-exact", "prompt": "what is the CAPITAL of australia", "expect": "exact"},
    {"id": "t-contain", "prompt": "Quick question: what is the capital of Australia?",
     "expect": "exact"},
    {"id": "t-embed", "prompt": "How can I change the flat tyre on my bicycle?",
     "expect": "embedding"},
    # generic short eval prompt, another picture: not contamination
    {"id": "t-generic-other", "prompt": "Describe this image in detail.", "image": "c.png",
     "expect": None},
    # the same picture (resized) and the same request: contamination through the image
    {"id": "t-generic-same", "prompt": "Describe this image in detail.", "image": "a_small.jpg",
     "expect": "image"},
    # the eval picture with an unrelated question: prompts do not overlap
    {"id": "t-car-poem", "prompt": "Write a short poem about the weather in spring.",
     "image": "b_small.jpg", "expect": None},
    {"id": "t-clean", "prompt": "Give me three tips for sleeping better.", "expect": None},
    {"id": "t-clean2", "prompt": "What is the capital of Austria?", "expect": None},
]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("decontam")
    images = {"a.png": smooth_image(11), "b.png": smooth_image(12), "c.png": smooth_image(13),
              "a_small.jpg": smooth_image(11, 120, "JPEG"),
              "b_small.jpg": smooth_image(12, 120, "JPEG")}
    ev = ingest_generic(tmp, "eval", EVAL, images, source="evalset")
    train_rows = [{k: v for k, v in r.items() if k != "expect"} | {
        "chosen": f"answer {r['id']}", "rejected": f"other {r['id']}"} for r in TRAIN]
    train = ingest_generic(tmp, "train", train_rows, images)
    cache = tmp / "cache"
    out = tmp / "out"
    decontam([train], [ev], out, embed=EmbedSettings(cache=cache), engine=ONE)
    return {"tmp": tmp, "eval": ev, "train": train, "cache": cache, "out": out}


def _rows(folder: Path) -> dict[str, dict]:
    ds = Dataset.open(folder)
    out = {}
    for part in ("kept", "rejected"):
        for r in ds.read(part).to_pylist():
            out[r["source_id"]] = r | {"_part": part}
    return out


@pytest.mark.parametrize("case", TRAIN, ids=[c["id"] for c in TRAIN])
def test_each_test_fires_where_it_should(work: dict[str, Path], case: dict) -> None:
    r = _rows(work["out"])[case["id"]]
    if case["expect"] is None:
        assert r["_part"] == "kept", r["reject_detail"]
        assert r["decontam_tests"] is None
        return
    assert r["_part"] == "rejected" and r["reject_reason"] == "contaminated"
    assert case["expect"] in r["decontam_tests"].split(",")
    assert f"{case['expect']}: evalset:" in r["reject_detail"]


def test_detail_names_eval_row(work: dict[str, Path]) -> None:
    rows = _rows(work["out"])
    assert "ngram: evalset:e-long (" in rows["t-ngram"]["reject_detail"]
    assert "shared 13-grams" in rows["t-ngram"]["reject_detail"]
    assert "exact: evalset:e-capital" in rows["t-contain"]["reject_detail"]
    assert "image: evalset:e-describe (pHash" in rows["t-generic-same"]["reject_detail"]
    assert rows["t-embed"]["decontam_match"] == "evalset:e-tire"
    assert rows["t-car-poem"]["decontam_image_distance"] <= 10  # matched, prompt did not


def test_scores_in_kept_rows_and_conservation(work: dict[str, Path]) -> None:
    ds = Dataset.open(work["out"])
    m = ds.manifest
    assert m["rows_in"] == len(TRAIN) == m["rows_kept"] + m["rows_rejected"]
    kept = ds.read("kept")
    for col in ("decontam_max_sim", "decontam_match", "decontam_ngram_hits",
                "decontam_image_distance", "decontam_tests"):
        assert col in kept.column_names and col in ds.schema("rejected").names
    assert kept["decontam_max_sim"].null_count == 0
    assert m["eval_index"]["rows"] == len(EVAL)
    assert m["tests_fired"]["image"] == 1


def test_deterministic_and_cached(work: dict[str, Path]) -> None:
    again = decontam([work["train"]], [work["eval"]], work["tmp"] / "again",
                     embed=EmbedSettings(cache=work["cache"]), engine=get_engine("local", 2))
    assert again["files"] == Dataset.open(work["out"]).manifest["files"]
    assert again["embeddings"]["computed"] == 0 and not again["embeddings"]["model_loaded"]


def test_ngram_option_changes_the_test(work: dict[str, Path]) -> None:
    idx = build_eval_index([work["eval"]], 40)
    assert 40 not in idx.grams  # no eval prompt has 40 words: all compared whole
    m = decontam([work["train"]], [work["eval"]], work["tmp"] / "n40",
                 config=DecontamConfig(ngram=40, embed_threshold=1.01),
                 embed=EmbedSettings(cache=work["cache"]), engine=ONE)
    rows = _rows(work["tmp"] / "n40")
    assert rows["t-ngram"]["_part"] == "kept"  # 13-gram overlap is not a 40-gram one
    assert rows["t-embed"]["_part"] == "kept"  # embedding test off
    assert m["tests_fired"]["ngram"] == 0


def test_bad_config_and_input(work: dict[str, Path], run_cli) -> None:
    with pytest.raises(ValueError):
        DecontamConfig(ngram=0)
    with pytest.raises(ValueError):
        decontam([work["train"]], [], work["tmp"] / "x")
    res = run_cli("decontam", work["train"], "--out", work["tmp"] / "x", expect=2)
    assert "against" in res.output
    res = run_cli("decontam", work["train"], "--against", work["tmp"] / "missing",
                  "--out", work["tmp"] / "x", expect=2)
    assert "no such dataset folder" in res.output


def test_cli(work: dict[str, Path], run_cli) -> None:
    out = work["tmp"] / "cli"
    res = run_cli("decontam", work["train"], "--against", work["eval"], "--out", out,
                  "--cache", work["cache"])
    assert "contaminated" in res.output and "tests fired" in res.output
    assert Dataset.open(out).manifest["files"] == Dataset.open(work["out"]).manifest["files"]


def test_input_with_no_kept_rows(work: dict[str, Path]) -> None:
    src = ingest_generic(work["tmp"], "empty", [{"id": "x", "prompt": "hi", "chosen": "",
                                                 "rejected": "no"}])
    m = decontam([src], [work["eval"]], work["tmp"] / "empty-out",
                 embed=EmbedSettings(cache=work["cache"]), engine=ONE)
    assert m["rows_in"] == m["rows_kept"] == m["rows_rejected"] == 0
