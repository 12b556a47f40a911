"""`curate generate` with the transformers backend on the tiny offline Qwen2.5-VL.

The model is random, so what it says is noise; these tests pin what the stage
promises: one request per distinct prompt, N samples each, images through the
vision tower, the same seed giving the same samples whatever the batching, a
killed run resuming without regenerating (generate calls counted), rejects with
reasons, conservation, and an output `curate pairs` reads unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curate import dataset as D
from curate.generation.hf import TransformersBackend
from curate.generation.requests import SamplingParams, Selection
from curate.stages.generate import generate
from tests.helpers import assert_conserved, jpeg_bytes, rows, write_parquet

TINY = "tiny-qwen2.5-vl"


@pytest.fixture(autouse=True)
def one_thread():
    """The tiny model's matmuls are too small for intra-op threads: on a busy machine
    they only wait for each other."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
SAMPLING = SamplingParams(n=3, temperature=0.9, top_p=0.95, max_new_tokens=8, seed=7)


def _dataset(tmp_path: Path, run_cli, *, long_prompt: bool = False) -> Path:
    raw = []
    for i in range(4):
        raw.append({"q": f"Question {i}: what is shown?", "c": f"good {i}", "r": f"bad {i}",
                    "img": jpeg_bytes(seed=i, color=(40 * i, 90, 160)) if i % 2 == 0 else None})
    # the same question again, spelt differently: one request for both rows
    raw.append({**raw[0], "q": "question 0:   WHAT is shown?", "c": "another good"})
    if long_prompt:
        raw.append({"q": "word " * 1200, "c": "a", "r": "b", "img": None})
    src = write_parquet(tmp_path / "raw.parquet", raw)
    out = tmp_path / "in"
    run_cli("ingest", "generic", src, "--map", "prompt=q,chosen=c,rejected=r,image=img",
            "--out", out, "--quiet")
    return out


def _samples(folder: Path) -> dict[str, list[dict]]:
    got = {}
    for r in rows(folder) + rows(folder, D.REJECTED):
        got[r["source_id"]] = json.loads(r["meta"])["generation"]["samples"]
    return got


def _texts(folder: Path) -> dict[str, list[str]]:
    return {r["source_id"]: r["responses"] for r in rows(folder)}


def test_generate_cli_writes_candidates_that_pairs_reads(tmp_path: Path, run_cli,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from curate.models.reward_model import build_reward_model

    monkeypatch.setenv("CURATE_CACHE", str(tmp_path / "cache"))
    src = _dataset(tmp_path, run_cli, long_prompt=True)
    out = tmp_path / "gen"
    res = run_cli("generate", src, "--model", TINY, "--out", out, "--n", "3",
                  "--max-new-tokens", "12", "--keep-truncated", "--max-model-len", "1024")
    assert "5 requests from 6 of 6 rows" in res.output
    m = assert_conserved(out)
    assert m["rows_in"] == 6 and m["rows_kept"] == 4
    assert m["rejected_by_reason"] == {"prompt_too_long": 1}
    g = m["generate"]
    assert g["requests"] == 5 and g["samples_generated"] == 12 and g["samples_failed"] == 3
    assert g["tokens_out"] > 0 and g["tokens_in"] > 0 and g["seconds"] > 0
    assert g["sampling"]["n"] == 3 and g["model"] == TINY
    kept = rows(out)
    for r in kept:
        assert r["model"] == TINY and r["source"] == "generate" and len(r["responses"]) == 3
        assert all(isinstance(t, str) and t.strip() for t in r["responses"])
    by_q = {r["prompt"][-1]["content"]: r for r in kept}
    q0 = by_q["Question 0: what is shown?"]
    assert len(q0["images"]) == 1  # the image travels with its prompt
    assert len(json.loads(q0["meta"])["generation"]["input_pair_ids"]) == 2  # both spellings
    assert len(by_q["Question 1: what is shown?"]["images"]) == 0
    rej = rows(out, D.REJECTED)[0]
    assert rej["reject_reason"] == "prompt_too_long"
    assert "> the model's 1024" in rej["reject_detail"]

    rm = tmp_path / "rm"
    build_reward_model(TINY, seed=0).save(rm, save_backbone=False)
    res = run_cli("pairs", out, "--model", rm, "--out", tmp_path / "pairs")
    pm = assert_conserved(tmp_path / "pairs")
    assert pm["rows_in"] == 4
    for p in rows(tmp_path / "pairs"):
        assert p["source"] == f"pairs:{TINY}"
        assert p["chosen"] in by_q[p["prompt"][-1]["content"]]["responses"]


def test_truncated_samples_are_recorded_but_not_offered(tmp_path: Path, run_cli) -> None:
    src = _dataset(tmp_path, run_cli)
    backend = TransformersBackend(TINY)
    m = generate([src], tmp_path / "gen", backend=backend, sampling=SAMPLING,
                 cache=tmp_path / "cache")
    assert_conserved(tmp_path / "gen")
    finish = m["generate"]["finish_reasons"]
    # a random model rarely ends within 12 tokens: cut samples exist and are left out
    assert finish.get("length", 0) > 0
    for r in rows(tmp_path / "gen") + rows(tmp_path / "gen", D.REJECTED):
        meta = json.loads(r["meta"])
        samples = meta["generation"]["samples"]
        cut = [s["index"] for s in samples if s["finish_reason"] == "length"]
        left_out = [i["index"] for i in meta.get("invalid_responses", [])
                    if i["reason"] == "truncated"]
        assert cut == left_out
        assert len(r["responses"]) == 3 - len(cut)
        if not r["responses"]:
            assert r["reject_reason"] == "no_responses"


def test_same_seed_same_samples_whatever_the_batching(tmp_path: Path, run_cli) -> None:
    src = _dataset(tmp_path, run_cli)
    params = dict(sampling=SAMPLING, keep_truncated=True)
    generate([src], tmp_path / "a", backend=TransformersBackend(TINY, batch_size=1),
             cache=tmp_path / "ca", **params)
    generate([src], tmp_path / "b", backend=TransformersBackend(TINY, batch_size=16),
             cache=tmp_path / "cb", requests_per_chunk=1, **params)
    assert _texts(tmp_path / "a") == _texts(tmp_path / "b")
    other = SamplingParams(**{**SAMPLING.to_dict(), "seed": 8})
    generate([src], tmp_path / "c", backend=TransformersBackend(TINY), sampling=other,
             keep_truncated=True, cache=tmp_path / "cc")
    a, c = _texts(tmp_path / "a"), _texts(tmp_path / "c")
    assert a.keys() == c.keys() and a != c
    # within a prompt, the samples differ from one another (their own seeds)
    assert all(len(set(v)) > 1 for v in a.values())


class Killed(BaseException):
    pass


def test_killed_run_resumes_without_regenerating(tmp_path: Path, run_cli) -> None:
    src = _dataset(tmp_path, run_cli)
    cache = tmp_path / "cache"
    first = TransformersBackend(TINY, batch_size=3)
    first._load()
    real = first._loaded[0].generate
    calls = {"n": 0}

    def dies_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise Killed  # as a kill would: mid-run, after two batches finished
        return real(*args, **kwargs)

    first._loaded[0].generate = dies_on_third
    with pytest.raises(Killed):
        generate([src], tmp_path / "gen", backend=first, sampling=SAMPLING, cache=cache,
                 keep_truncated=True, requests_per_chunk=8)
    assert not (tmp_path / "gen").exists()  # no half-written output folder
    assert first.rows_generated == 6

    second = TransformersBackend(TINY, batch_size=3)
    m = generate([src], tmp_path / "gen", backend=second, sampling=SAMPLING, cache=cache,
                 keep_truncated=True, requests_per_chunk=8)
    assert second.rows_generated == 12 - 6  # only what the killed run had not finished
    assert m["generate"]["samples_cached"] == 6 and m["generate"]["samples_generated"] == 6
    assert_conserved(tmp_path / "gen")

    fresh = TransformersBackend(TINY, batch_size=3)
    generate([src], tmp_path / "fresh", backend=fresh, sampling=SAMPLING,
             cache=tmp_path / "other-cache", keep_truncated=True)
    assert fresh.rows_generated == 12
    assert _texts(tmp_path / "gen") == _texts(tmp_path / "fresh")

    again = TransformersBackend(TINY)
    generate([src], tmp_path / "gen2", backend=again, sampling=SAMPLING, cache=cache,
             keep_truncated=True)
    assert again.generate_calls == 0 and again._loaded is None  # all cached: no model load


def test_only_flagged_rows_by_reason(tmp_path: Path, run_cli) -> None:
    import pyarrow as pa

    src = _dataset(tmp_path, run_cli)
    # a `curate reward --action flag` output: the same rows with needs_regeneration
    from curate.pipeline.runner import StageRun

    table = D.Dataset.open(src).read()
    flags = ["low_margin", None, "low_chosen_score", None, "low_margin"]
    table = table.append_column("needs_regeneration", pa.array(flags, pa.string()))
    flagged = tmp_path / "flagged"
    with StageRun("reward", flagged, {"action": "flag"}, []) as run:
        run.open(table.schema)
        run.add_in(table.num_rows)
        run.keep(table)
    b = TransformersBackend(TINY)
    m = generate([flagged], tmp_path / "g1", backend=b, sampling=SAMPLING, keep_truncated=True,
                 selection=Selection(reasons=("low_margin",)), cache=tmp_path / "c")
    assert m["rows_in"] == 2 and m["generate"]["requests"] == 1  # rows 0 and 4: one prompt
    assert m["generate"]["rows_read"] == 5
    m = generate([flagged], tmp_path / "g2", backend=b, sampling=SAMPLING, keep_truncated=True,
                 selection=Selection(where="flagged"), cache=tmp_path / "c")
    assert m["rows_in"] == 3 and m["generate"]["requests"] == 2
    assert m["generate"]["samples_cached"] == 3  # the low_margin prompt's, from the first run
    assert_conserved(tmp_path / "g2")


def test_bad_input_exits_2_with_a_message(tmp_path: Path, run_cli) -> None:
    src = _dataset(tmp_path, run_cli)
    res = run_cli("generate", src, "--model", TINY, "--out", tmp_path / "o", "--where",
                  "flagged", expect=2)
    assert "needs_regeneration" in res.output and "--action flag" in res.output
    res = run_cli("generate", src, "--model", TINY, "--out", tmp_path / "o", "--n", "0",
                  expect=2)
    assert "--n must be at least 1" in res.output
    res = run_cli("generate", src, "--model", TINY, "--out", tmp_path / "o", "--backend",
                  "openai", expect=2)
    assert "--endpoint" in res.output
    res = run_cli("generate", src, "--model", "x", "--out", tmp_path / "o", "--backend",
                  "openai", "--endpoint", "http://127.0.0.1:9/v1", expect=2)
    assert "cannot reach http://127.0.0.1:9/v1" in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "o").exists()
