"""K-fold surrogates trained in parallel on Ray (one actor per fold) score every pair
exactly as the sequential local run does: frozen packaged MiniLM, 24 pairs, a local
2-CPU Ray in this process (`local_ray`).

Bit for bit given the same torch intra-op thread count: a Ray actor holding one CPU
runs torch on one thread, so the local runs here do too (`one_thread`). With other
counts the float sums run in another order: measured, up to 4.5e-8 apart with a frozen
backbone (500 hh-rlhf pairs, K=5) and 4e-3 with full fine-tuning (`bench_kfold`)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from curate import dataset as D
from curate.engine import get_engine
from curate.scoring.kfold import KFoldScorer
from tests.helpers import assert_conserved, rows
from tests.test_reward_kfold import minilm, small, train_config  # noqa: F401 - a fixture

pytestmark = pytest.mark.slow  # Ray start-up and a MiniLM load per actor: about a minute


@pytest.fixture
def one_thread() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _kfold(tmp: Path, data: Path, name: str, *engine: str, ensemble: int = 1,
           run_cli: Any) -> tuple[dict[str, tuple[float, float]], dict[str, Any]]:
    """`curate reward --kfold 2` with a feature cache of its own (nothing shared between
    runs): {pair_id: (chosen_reward, rejected_reward)} of every row, and the manifest."""
    cfg = train_config(tmp / f"{name}.json", tmp / f"features-{name}", max_length=48,
                       head_epochs=10)
    out = tmp / name
    run_cli("reward", data, "--out", out, "--model", minilm(), "--kfold", "2",
            "--train-config", cfg, "--ensemble", ensemble, "--min-margin", "0.0", *engine)
    got = {r["pair_id"]: (r["chosen_reward"], r["rejected_reward"])
           for r in rows(out) + rows(out, D.REJECTED)}
    return got, assert_conserved(out)


@pytest.mark.parametrize("ensemble", [1, 2])
def test_parallel_folds_on_ray_score_as_the_local_run(local_ray: Any, small: Path,  # noqa: F811
                                                      tmp_path: Path, run_cli, one_thread: None,
                                                      ensemble: int) -> None:
    local, m_local = _kfold(tmp_path, small, "local", ensemble=ensemble, run_cli=run_cli)
    ray, m_ray = _kfold(tmp_path, small, "ray", "--engine", "ray", "--workers", "2",
                        ensemble=ensemble, run_cli=run_cli)
    assert len(local) == 24
    assert ray == local  # bit for bit: the same features, seeds and float order
    assert m_ray["engine"]["engine"] == "ray"
    folds_local, folds_ray = m_local["reward"]["kfold"], m_ray["reward"]["kfold"]
    assert len(folds_ray) == 2 * ensemble
    assert {f["threads"] for f in folds_ray + folds_local} == {1}
    drop = ("seconds", "pid", "host")
    assert [{k: v for k, v in f.items() if k not in drop} for f in folds_ray] == \
        [{k: v for k, v in f.items() if k not in drop} for f in folds_local]
    assert {f["pid"] for f in folds_local} == {os.getpid()}
    pids = [f["pid"] for f in folds_ray]
    assert os.getpid() not in pids and len(set(pids)) >= 2  # Ray actors, more than one
    assert local_ray.is_initialized(), "an engine that joined a running Ray leaves it running"


def test_validate_retrains_the_folds_on_ray_as_locally(local_ray: Any, small: Path,  # noqa: F811
                                                       tmp_path: Path, one_thread: None) -> None:
    cfg = train_config(tmp_path / "rm.json", tmp_path / "features", max_length=48,
                       head_epochs=10)
    local = KFoldScorer([small], minilm(), 2, cfg)
    local.fit()
    ids = sorted(local._scores or {})
    margins = {p: c - r for p, (c, r) in (local._scores or {}).items()}
    drop = set(ids[:5])
    want = local.validate(drop, margins)
    got = KFoldScorer([small], minilm(), 2, json.loads(cfg.read_text())).validate(
        drop, margins, engine=get_engine("ray", workers=2))
    assert want["dropped_from_training"] == 5 and want["pairs"] == 24
    assert {k: v for k, v in got.items() if k != "seconds"} == \
        {k: v for k, v in want.items() if k != "seconds"}
