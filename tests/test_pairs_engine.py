"""`curate pairs --engine ray`: the reward model in engine actors, same output as local.

The driver plans, reads and writes the score cache and writes the output; only each
batch's uncached responses are scored in the engine's actors, each with its own scorer
built from `RewardModelScorer.spec()`. The reward model is the tiny random Qwen2.5-VL
with a value head that tests/test_pairs_cli.py uses (images go through its vision
tower). The fast tests run the actor path on an in-process engine (the setup pickled as
Ray would ship it); the last on a real local Ray with two actors, against
`--engine local`. Ray lives for this module only (`ray_session`); without Ray that
test skips.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest

from curate import dataset as D
from curate.dataset import read_manifest
from curate.scoring.scorer import CheckpointSpec, ResponseFunctionScorer, RewardModelScorer
from curate.stages.pairs import PairsConfig, make_scorer, pairs
from tests.helpers import assert_conserved, assert_same_output
from tests.test_generate import one_thread as one_thread  # noqa: F401 (autouse fixture)
from tests.test_generate_engine import InProcessActors
from tests.test_pairs_cli import _candidates
from tests.test_pairs_cli import tiny_rm as tiny_rm  # noqa: F401 (module fixture)


@pytest.fixture
def cands(tmp_path: Path, run_cli) -> Path:
    out = tmp_path / "cands"
    run_cli("ingest", "candidates", _candidates(tmp_path), "--out", out, "--map",
            "prompt=question,responses=samples,image=img,model=policy,id=qid", "--quiet")
    return out


def _same_rows(a: Path, b: Path, counts: bool = True) -> None:
    if counts:  # the manifests' counts too (a rerun's score counts differ)
        assert_same_output(a, b)
    for part in (D.KEPT, D.REJECTED):  # same rows, same order, same scores
        assert D.Dataset.open(a).read(part).equals(D.Dataset.open(b).read(part)), part


def test_spec_rebuilds_the_same_scorer(tiny_rm: Path, tmp_path: Path,  # noqa: F811
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CURATE_CACHE", str(tmp_path / "cache"))
    s = RewardModelScorer(tiny_rm, batch_size=3, device="cpu", bf16=False)
    spec = pickle.loads(pickle.dumps(s.spec()))
    assert spec == CheckpointSpec(str(tiny_rm), 3, "cpu", False, "auto",
                                  str(tmp_path / "cache" / "features"))
    again = spec.build()
    assert again.describe() == s.describe() and again.fingerprint == s.fingerprint
    assert again._model is None  # loads on first use
    assert make_scorer(tiny_rm, 5).spec().batch_size == 5


def test_actor_path_gives_the_in_process_output(cands: Path, tmp_path: Path,
                                                tiny_rm: Path,  # noqa: F811
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = PairsConfig(strategy="top-bottom", k=1)
    # 3 prompts a batch: q0-again (the last prompt) repeats q0's responses, scored in an
    # earlier batch; each run has its own score and feature caches
    monkeypatch.setenv("CURATE_CACHE", str(tmp_path / "c1"))
    local = pairs([cands], tmp_path / "local", scorer=make_scorer(tiny_rm, 4), config=cfg,
                  prompts_per_batch=3)
    monkeypatch.setenv("CURATE_CACHE", str(tmp_path / "c2"))
    eng = InProcessActors()
    pooled = pairs([cands], tmp_path / "pooled", scorer=make_scorer(tiny_rm, 4), config=cfg,
                   prompts_per_batch=3, engine=eng)
    assert len(eng.items) == 3  # 9 prompts in batches of 3
    assert [len(i) for i in eng.items] == [9, 9, 6]  # q0-again's 3 come from the run
    _same_rows(tmp_path / "local", tmp_path / "pooled")
    assert pooled["engine"] == {"engine": "inproc", "workers": 2}
    assert local["engine"] == {"engine": "local", "workers": 1}
    assert pooled["pairs"] == local["pairs"]
    assert pooled["pairs"]["scores"] == {"computed": 24, "cached": 3}
    assert any((tmp_path / "c2" / "features").rglob("*.safetensors"))  # the driver's root

    # the scores the workers made were cached by this process: a rerun scores nothing
    eng2 = InProcessActors()
    again = pairs([cands], tmp_path / "again", scorer=make_scorer(tiny_rm, 4), config=cfg,
                  prompts_per_batch=3, engine=eng2)
    assert again["pairs"]["scores"] == {"computed": 0, "cached": 27}
    assert [len(i) for i in eng2.items] == [0, 0, 0]
    _same_rows(tmp_path / "local", tmp_path / "again", counts=False)


def test_a_scorer_without_a_spec_refuses_engine_workers(cands: Path, tmp_path: Path) -> None:
    scorer = ResponseFunctionScorer(lambda items: [0.0] * len(items), "f-v1")
    with pytest.raises(ValueError, match="cannot run in engine workers"):
        pairs([cands], tmp_path / "o", scorer=scorer, score_cache=tmp_path / "s",
              engine=InProcessActors())
    assert not (tmp_path / "o").exists()


def test_engine_options_usage_errors(cands: Path, tmp_path: Path, tiny_rm: Path,  # noqa: F811
                                     run_cli) -> None:
    out = tmp_path / "o"
    res = run_cli("pairs", cands, "--model", tiny_rm, "--out", out, "--workers", "2", expect=2)
    assert "--workers and --gpus-per-worker go with --engine ray" in res.output
    res = run_cli("pairs", cands, "--model", tiny_rm, "--out", out, "--gpus-per-worker", "1",
                  expect=2)
    assert "--workers and --gpus-per-worker go with --engine ray" in res.output
    res = run_cli("pairs", cands, "--model", tiny_rm, "--out", out, "--engine", "spark",
                  expect=2)
    assert "--engine must be one of local, ray" in res.output
    assert not out.exists()



def test_cli_engine_ray_gives_the_local_output(local_ray: Any, cands: Path, tmp_path: Path,
                                               tiny_rm: Path, run_cli,  # noqa: F811
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    common = ["--model", tiny_rm, "--strategy", "all", "--batch-size", "4", "--quiet"]
    monkeypatch.setenv("CURATE_CACHE", str(tmp_path / "c1"))
    run_cli("pairs", cands, *common, "--out", tmp_path / "local")
    monkeypatch.setenv("CURATE_CACHE", str(tmp_path / "c2"))  # nothing cached for ray
    run_cli("pairs", cands, *common, "--out", tmp_path / "ray", "--engine", "ray",
            "--workers", "2")
    _same_rows(tmp_path / "local", tmp_path / "ray")
    m = read_manifest(tmp_path / "ray")
    assert m["engine"]["engine"] == "ray" and m["engine"]["workers"] == 2
    assert m["pairs"]["scores"] == {"computed": 24, "cached": 3}
    assert any((tmp_path / "c2" / "features").rglob("*.safetensors"))  # the driver's root
    assert_conserved(tmp_path / "ray")
    assert local_ray.is_initialized(), "an engine that joined a running Ray leaves it running"
