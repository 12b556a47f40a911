"""`curate similar`: near-duplicate prompts, responses_too_similar, images, contracts, CLI."""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pytest

from curate.dataset import Dataset, read_manifest
from curate.engine import get_engine
from curate.models.embedder import EmbedSettings
from curate.stages.similar import SimilarConfig, similar
from tests.similar_support import PARAPHRASES, SAME_TOPIC, ingest_generic, smooth_image

ONE = get_engine("local", workers=1)
OTHER = [
    "What is the tallest mountain in Africa?",
    "Write a haiku about autumn leaves.",
    "How many legs does a spider have?",
    "Explain the difference between a list and a tuple in Python.",
]


def _rows() -> list[dict]:
    rows = []
    for i, (a, b) in enumerate(PARAPHRASES):
        rows.append({"id": f"p{i}a", "prompt": a, "chosen": f"good answer {i}",
                     "rejected": f"bad answer {i}"})
        rows.append({"id": f"p{i}b", "prompt": b, "chosen": f"fine answer {i}",
                     "rejected": f"poor answer {i}"})
    for i, (_, b) in enumerate(SAME_TOPIC):
        rows.append({"id": f"t{i}", "prompt": b, "chosen": f"topic answer {i}",
                     "rejected": f"wrong topic answer {i}"})
    for i, q in enumerate(OTHER):
        rows.append({"id": f"o{i}", "prompt": q, "chosen": "Kilimanjaro, 5,895 metres.",
                     "rejected": "Mount Kenya."})
    # no preference signal: the responses differ in case, spacing and one comma
    answer = ("Red is a primary colour in the RYB model that painters use, together with "
              "yellow and blue; in the RGB model of screens the primaries are red, green "
              "and blue.")
    rows.append({"id": "same-resp", "prompt": "Name a primary colour.", "chosen": answer,
                 "rejected": answer.lower().replace("use, together", "use  together")})
    # images: one question, three pictures; b is a resized copy of a, c another picture
    for rid, img in (("img-a", "a.png"), ("img-b", "b.jpg"), ("img-c", "c.png")):
        rows.append({"id": rid, "prompt": "What is in this image?", "image": img,
                     "chosen": f"a picture {rid}", "rejected": f"nothing {rid}"})
    return rows


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("similar")
    images = {"a.png": smooth_image(1), "b.jpg": smooth_image(1, size=160, fmt="JPEG"),
              "c.png": smooth_image(2)}
    src = ingest_generic(tmp, "in", _rows(), images)
    cache = tmp / "cache"
    out = tmp / "out"
    similar([src], out, embed=EmbedSettings(cache=cache), engine=ONE)
    return {"tmp": tmp, "src": src, "cache": cache, "out": out}


def _by_id(folder: Path) -> dict[str, dict]:
    ds = Dataset.open(folder)
    rows = {}
    for part in ("kept", "rejected"):
        for r in ds.read(part).to_pylist():
            r["_part"] = part
            rows[r["source_id"]] = r
    return rows


def test_paraphrases_merged_same_topic_kept(work: dict[str, Path]) -> None:
    rows = _by_id(work["out"])
    for i in range(len(PARAPHRASES)):
        a, b = rows[f"p{i}a"], rows[f"p{i}b"]
        assert a["_part"] == "kept", a
        assert b["_part"] == "rejected" and b["reject_reason"] == "similar_prompt", b
        assert b["reject_detail"].startswith(a["pair_id"])
        assert b["similar_group"] == a["pair_id"]
        assert b["similar_prompt_sim"] >= 0.95
    for i in range(len(SAME_TOPIC)):
        t = rows[f"t{i}"]
        assert t["_part"] == "kept", t
        assert t["similar_prompt_sim"] < 0.9
    for i in range(len(OTHER)):
        assert rows[f"o{i}"]["_part"] == "kept"


def test_responses_too_similar(work: dict[str, Path]) -> None:
    r = _by_id(work["out"])["same-resp"]
    assert r["reject_reason"] == "responses_too_similar"
    assert r["similar_response_sim"] >= 0.99
    kept = Dataset.open(work["out"]).read("kept")
    assert pc.max(kept["similar_response_sim"]).as_py() < 0.99


def test_images_must_match_too(work: dict[str, Path]) -> None:
    rows = _by_id(work["out"])
    assert rows["img-a"]["_part"] == "kept"
    assert rows["img-b"]["reject_reason"] == "similar_prompt"  # same question, resized copy
    assert rows["img-b"]["reject_detail"].startswith(rows["img-a"]["pair_id"])
    assert rows["img-c"]["_part"] == "kept"  # same question, another picture
    assert rows["img-c"]["similar_prompt_sim"] == pytest.approx(1.0)


def test_conservation_and_score_columns(work: dict[str, Path]) -> None:
    ds = Dataset.open(work["out"])
    m = ds.manifest
    assert m["rows_in"] == Dataset.open(work["src"]).count() == m["rows_kept"] + m["rows_rejected"]
    assert m["rows_kept"] == ds.count("kept") and m["rows_rejected"] == ds.count("rejected")
    assert m["rejected_by_reason"] == {"similar_prompt": len(PARAPHRASES) + 1,
                                       "responses_too_similar": 1}
    for part in ("kept", "rejected"):
        names = ds.schema(part).names
        for col in ("similar_prompt_sim", "similar_prompt_match", "similar_response_sim",
                    "similar_group"):
            assert col in names
    kept = ds.read("kept")
    assert kept["similar_prompt_sim"].null_count == 0
    assert kept["similar_prompt_match"].null_count == 0
    files = m["files"]
    emb = [f for f in files if f.startswith("embeddings/")]
    assert len(emb) == 1 and m["embeddings"]["file"] == emb[0]
    e = m["embeddings"]
    assert e["unique_texts"] == e["computed"] + e["from_store"]


def test_rerun_other_threshold_costs_no_model_time(work: dict[str, Path]) -> None:
    own = work["tmp"] / "own"
    first = similar([work["src"]], own, embed=EmbedSettings(cache=None), engine=ONE)
    assert first["embeddings"]["computed"] == first["embeddings"]["unique_texts"]
    for out, cache in ((work["tmp"] / "rerun", work["cache"]),  # another out, same cache
                       (own, None)):  # same out, no cache: its own embeddings/
        m = similar([work["src"]], out, config=SimilarConfig(threshold=0.5),
                    embed=EmbedSettings(cache=cache), engine=ONE, force=True)
        e = m["embeddings"]
        assert e["computed"] == 0 and e["model_loaded"] is False
        assert e["from_store"] == e["unique_texts"]
        assert m["rejected_by_reason"]["similar_prompt"] > len(PARAPHRASES) + 1


def test_deterministic(work: dict[str, Path]) -> None:
    a = similar([work["src"]], work["tmp"] / "det-a", embed=EmbedSettings(cache=None),
                engine=ONE)
    b = similar([work["src"]], work["tmp"] / "det-b", embed=EmbedSettings(cache=work["cache"]),
                engine=get_engine("local", workers=2))
    assert a["files"] == b["files"]  # same names, same checksums (fresh vs cached vectors)
    assert a["embeddings"]["computed"] > 0 and b["embeddings"]["computed"] == 0


def test_skip_when_up_to_date(work: dict[str, Path]) -> None:
    m1 = read_manifest(work["out"])
    m2 = similar([work["src"]], work["out"], embed=EmbedSettings(cache=work["cache"]),
                 engine=ONE)
    assert m2["fingerprint"] == m1["fingerprint"] and m2["files"] == m1["files"]


def test_bad_config() -> None:
    with pytest.raises(ValueError):
        SimilarConfig(threshold=2.0)
    with pytest.raises(ValueError):
        SimilarConfig(image_distance=64)


def test_cli(work: dict[str, Path], run_cli) -> None:
    out = work["tmp"] / "cli"
    res = run_cli("similar", work["src"], "--out", out, "--threshold", "0.95",
                  "--cache", work["cache"])
    assert "similar_prompt" in res.output and "responses_too_similar" in res.output
    assert "computed" in res.output
    assert Dataset.open(out).manifest["config"]["threshold"] == 0.95


def test_cli_bad_input(work: dict[str, Path], run_cli) -> None:
    res = run_cli("similar", work["tmp"] / "nope", "--out", work["tmp"] / "x", expect=2)
    assert "error" in res.output
    res = run_cli("similar", work["src"], "--out", work["tmp"] / "x", "--threshold", "3",
                  expect=2)
    assert "threshold" in res.output
    res = run_cli("similar", work["src"], "--out", work["tmp"] / "x", "--model",
                  work["tmp"] / "no-model", "--cache", "none", expect=2)
    assert "no such model folder" in res.output


def test_input_with_no_kept_rows(tmp_path: Path) -> None:
    src = ingest_generic(tmp_path, "empty", [{"id": "x", "prompt": "hi", "chosen": "",
                                              "rejected": "no"}])
    assert Dataset.open(src).count() == 0
    m = similar([src], tmp_path / "out", embed=EmbedSettings(cache=None), engine=ONE)
    assert m["rows_in"] == m["rows_kept"] == m["rows_rejected"] == 0
