"""`curate train` on the tiny Qwen2.5-VL and MiniLM: loss, schedule, freezing, cache, resume."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
import torch

from curate.models.reward_model import VALUE_HEAD, load_reward_model
from curate.models.tiny import TINY_NAME
from curate.train.collator import PairCollator, PairDataset
from curate.train.config import load_config
from curate.train.data import PairRows, margins, split_pairs, stage_indices
from curate.train.loss import pair_metrics, pairwise_loss
from curate.train.trainer import lr_at, train_reward_model
from tests.rm_helpers import items_of, one_torch_thread, synthetic_pairs  # noqa: F401

# a learning rate a tiny random model learns something with in a few dozen steps
FAST = {"stages": [{"name": "multimodal", "data": "multimodal", "lr": 2e-3, "epochs": 2},
                   {"name": "mixed", "data": "all", "lr": 1e-3, "epochs": 2}],
        "batch_size": 4, "max_length": 160, "warmup_ratio": 0.0, "bf16": False}


@pytest.fixture(scope="module")
def pairs() -> pa.Table:
    return synthetic_pairs(n_image=12, n_text=12)


@pytest.fixture(scope="module")
def tiny_run(pairs, tmp_path_factory):
    """One two-stage run of the tiny Qwen2.5-VL with the vision encoder frozen."""
    from curate.models.reward_model import build_reward_model

    out = tmp_path_factory.mktemp("tiny") / "ckpt"
    rm = build_reward_model(TINY_NAME, seed=0)
    before = {k: v.clone() for k, v in rm.backbone.state_dict().items()}
    metrics = train_reward_model(pairs, rm, out, {**FAST, "freeze": "vision"})
    return rm, before, metrics, out


# -- loss and metrics ---------------------------------------------------------------------
def test_pairwise_loss_matches_its_formula():
    c, r = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([1.0, 0.5, 1.0])
    m = torch.tensor([0.5, 0.0, 0.25])
    expect = -torch.nn.functional.logsigmoid(c - r - m).mean()
    assert pairwise_loss(c, r, m).item() == pytest.approx(expect.item())
    centred = expect + 0.1 * ((c + r) ** 2).mean()
    assert pairwise_loss(c, r, m, center_coef=0.1).item() == pytest.approx(centred.item())
    assert pairwise_loss(c, r).item() == pytest.approx(
        -torch.nn.functional.logsigmoid(c - r).mean().item())


def test_pair_metrics_count_ties_as_wrong_and_split_by_source():
    m = pair_metrics([1.0, 2.0, 0.5, 3.0], [0.0, 2.0, 1.0, 1.0], ["a", "a", "b", "b"])
    assert m["accuracy"] == 0.5 and m["ties"] == 1
    assert m["mean_margin"] == pytest.approx((1 + 0 - 0.5 + 2) / 4)
    assert m["by_source"] == {"a": {"pairs": 2, "accuracy": 0.5},
                              "b": {"pairs": 2, "accuracy": 0.5}}
    lo, hi = m["accuracy_ci95"]
    assert lo < 0.5 < hi


def test_lr_schedule_warms_up_then_decays():
    lrs = [lr_at(s, 10, 1e-3, 0.2, "cosine") for s in range(10)]
    assert lrs[0] == pytest.approx(5e-4) and lrs[1] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:], strict=False))
    assert lr_at(5, 10, 1e-3, 0.0, "constant") == 1e-3
    assert lr_at(9, 10, 1e-3, 0.0, "linear") == pytest.approx(1e-4)


# -- data, stages, collation --------------------------------------------------------------
def test_stage_selection_and_split(pairs):
    n_img = int(sum(len(x) > 0 for x in pairs["images"].to_pylist()))
    assert len(stage_indices(pairs, "multimodal")) == n_img == 12
    assert len(stage_indices(pairs, "text")) == len(pairs) - n_img
    assert len(stage_indices(pairs, "all")) == len(pairs)
    tagged = pairs.append_column("stage", pa.array(["text"] * len(pairs)))
    assert len(stage_indices(tagged, "multimodal")) == 0  # curate shard's column decides
    train, ev = split_pairs(pairs, 0.25, seed=3)
    assert (len(train), len(ev)) == (18, 6)
    assert set(train["pair_id"].to_pylist()).isdisjoint(ev["pair_id"].to_pylist())
    shuffled = pairs.take(np.random.default_rng(1).permutation(len(pairs)))
    again = split_pairs(shuffled, 0.25, seed=3)[1]  # the same rows whatever the input order
    assert sorted(again["pair_id"].to_pylist()) == sorted(ev["pair_id"].to_pylist())
    with_split = pairs.append_column("split", pa.array(["train"] * 20 + ["eval"] * 4))
    assert len(split_pairs(with_split, 0.0)[1]) == 4


def test_margin_column_and_score_gap(pairs):
    t = pairs.set_column(pairs.schema.get_field_index("chosen_score"), "chosen_score",
                         pa.array([3.0] * len(pairs)))
    t = t.set_column(t.schema.get_field_index("rejected_score"), "rejected_score",
                     pa.array([1.0] * (len(t) - 1) + [None]))
    gap = margins(t, "score_gap", scale=0.5)
    assert gap[0] == 1.0 and gap[-1] == 0.0  # a missing score means no margin
    assert margins(t, None).tolist() == [0.0] * len(t)
    with pytest.raises(ValueError, match="margin column"):
        margins(t, "nope")


def test_one_batch_mixes_image_and_text_pairs(pairs):
    from curate.models.reward_model import build_reward_model

    rm = build_reward_model(TINY_NAME, max_length=160)
    rows = PairRows(pairs)
    ds = PairDataset(rows, np.arange(4), np.zeros(len(pairs), dtype=np.float32))
    batch = PairCollator(rm)([ds[i] for i in range(4)])
    with_image = (batch["input_ids"] == rm.backbone.config.image_token_id).any(-1)
    # chosen then rejected: pairs 0 and 2 have an image, 1 and 3 do not
    assert with_image.tolist() == [True, False, True, False] * 2
    assert batch["image_grid_thw"].shape == (2, 3)  # each pair's image processed once
    assert batch["image_order"].tolist() == [0, 1, 0, 1]
    rewards = rm(**{k: v for k, v in batch.items()
                    if k not in ("margin", "pair_index", "truncation")})
    assert rewards.shape == (8,)


def test_shared_images_give_the_rewards_of_separate_scoring(monkeypatch):
    """A pair's images are encoded once for both responses (two images in one pair here);
    the rewards equal scoring each sequence on its own, also on the fallback path that
    re-encodes the images per sequence (transformers without mm_encoder_outputs)."""
    from curate import schema as S
    from curate.models import reward_model as RM
    from tests.rm_helpers import image, pair_row

    rm = RM.build_reward_model(TINY_NAME, max_length=200)
    rows = [pair_row(0, [{"role": "user", "content": "<image> vs <image>?"}], "Left.", "Right.",
                     [image("red"), image("blue", (80, 40))], "s"),
            pair_row(1, [{"role": "user", "content": "Colour?"}], "Green.", "Red.",
                     [image("green")], "s"),
            pair_row(2, [{"role": "user", "content": "Hi"}], "Hello!", "Go away.", [], "s")]
    table = pa.Table.from_pylist(rows, schema=S.PAIR_SCHEMA)
    ds = PairDataset(PairRows(table), np.arange(3), np.zeros(3, dtype=np.float32))
    batch = PairCollator(rm)([ds[i] for i in range(3)])
    assert batch["image_order"].tolist() == [0, 1, 2, 0, 1, 2]
    inputs = {k: v for k, v in batch.items() if k not in ("margin", "pair_index", "truncation")}
    with torch.no_grad():
        shared = rm(**inputs).tolist()
        real = RM._forward_params
        monkeypatch.setattr(RM, "_forward_params",
                            lambda m: real(m) - {"mm_encoder_outputs"})
        fallback = rm(**inputs).tolist()
    separate = rm.score_batch(items_of(table), batch_size=1)
    assert shared == pytest.approx(separate, abs=1e-5)
    assert fallback == pytest.approx(separate, abs=1e-5)


# -- the tiny Qwen2.5-VL, two stages, vision frozen ----------------------------------------
def test_tiny_vl_loss_falls_and_accuracy_rises(tiny_run):
    _, _, m, _ = tiny_run
    hist = m["history"]
    assert [h["stage"] for h in hist] == ["multimodal"] * 2 + ["mixed"] * 2
    assert m["stages"][0]["pairs"] == 12 and m["stages"][1]["pairs"] == 24
    assert m["optimizer_steps"] == 3 * 2 + 6 * 2  # 30 pair-batches of 4
    first, last = hist[0], hist[-1]
    assert last["train_loss"] < first["train_loss"] * 0.7
    assert last["train_accuracy"] > first["train_accuracy"]
    assert last["train_accuracy"] >= 0.9


def test_frozen_vision_tower_is_unchanged_and_the_rest_trained(tiny_run):
    rm, before, _, _ = tiny_run
    after = rm.backbone.state_dict()
    vision = [k for k in before if k.startswith("visual.") and not k.startswith("visual.merger")]
    assert vision and all(torch.equal(before[k], after[k]) for k in vision)
    merger = [k for k in before if k.startswith("visual.merger")]
    assert any(not torch.equal(before[k], after[k]) for k in merger)  # the projector trains
    lm = [k for k in before if k.startswith("language_model.")]
    assert any(not torch.equal(before[k], after[k]) for k in lm)


def test_tiny_checkpoint_loads_with_identical_scores(tiny_run, pairs):
    rm, _, m, out = tiny_run
    loaded = load_reward_model(out)
    items = items_of(pairs.slice(0, 6))
    assert loaded.score_batch(items) == rm.score_batch(items)
    assert loaded.fingerprint == m["fingerprint"] == rm.fingerprint
    assert (out / VALUE_HEAD).is_file() and (out / "model.safetensors").is_file()
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["optimizer_steps"] == m["optimizer_steps"]
    assert saved["truncation"]["pairs_dropped"] == 0
    assert not (out / "state").exists()  # resumable state is removed after success


def test_truncation_is_counted_and_no_pair_is_dropped(pairs, tmp_path):
    cfg = {**FAST, "max_length": 70, "freeze": "vision",
           "stages": [{"name": "all", "data": "all", "lr": 1e-4, "epochs": 1}]}
    m = train_reward_model(pairs, TINY_NAME, tmp_path / "rm", cfg)
    from curate.models.reward_model import build_reward_model

    enc = build_reward_model(TINY_NAME, max_length=70).encoder
    expect = 0
    for r in pairs.to_pylist():
        ii = enc.encode_images(r["images"])
        expect += (enc.encode(r["prompt"], r["chosen"], ii).prompt_truncated
                   or enc.encode(r["prompt"], r["rejected"], ii).prompt_truncated)
    assert 0 < expect <= len(pairs)
    assert m["truncation"]["pairs_prompt_truncated"] == expect
    assert m["train_pairs"] == len(pairs) and m["truncation"]["pairs_dropped"] == 0


def test_resume_continues_to_the_same_weights(tmp_path):
    small = synthetic_pairs(n_image=4, n_text=4)
    cfg = {**FAST, "freeze": "none", "save_every": 1, "eval_fraction": 0.25,
           "stages": [{"name": "all", "data": "all", "lr": 1e-3, "epochs": 2}]}
    straight = train_reward_model(small, TINY_NAME, tmp_path / "a", cfg)

    from curate.train import trainer as T

    real = T.Trainer._save_state
    calls = {"n": 0}

    def killed_after_second_save(self, *a, **k):
        real(self, *a, **k)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated kill")

    T.Trainer._save_state = killed_after_second_save
    try:
        with pytest.raises(KeyboardInterrupt):
            train_reward_model(small, TINY_NAME, tmp_path / "b", cfg)
    finally:
        T.Trainer._save_state = real
    progress = json.loads((tmp_path / "b" / "state" / "progress.json").read_text())
    assert (progress["step"], progress["epoch"], progress["micro"]) == (2, 0, 2)
    assert not (tmp_path / "b" / "metrics.json").exists()
    resumed = train_reward_model(small, TINY_NAME, tmp_path / "b", cfg, resume=True)
    assert resumed["optimizer_steps"] == straight["optimizer_steps"] == 4
    a, b = load_reward_model(tmp_path / "a"), load_reward_model(tmp_path / "b")
    for (k, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.allclose(va, vb, atol=1e-6), k
    assert resumed["eval"]["loss"] == pytest.approx(straight["eval"]["loss"], abs=1e-6)
    assert len(resumed["history"]) == len(straight["history"]) == 2


def test_config_file_overrides_and_rejects_unknown_keys(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("freeze: backbone\nhead_lr: 0.01\nstages:\n  - {name: only, data: all, lr: 1e-4,"
                 " epochs: 1}\n")
    cfg = load_config(f, max_length=99, seed=None)
    assert cfg.freeze == "backbone" and cfg.head_lr == 0.01 and cfg.max_length == 99
    assert [(s.name, s.lr, s.epochs) for s in cfg.stages] == [("only", 1e-4, 1)]
    assert cfg.seed == 0  # None leaves the default
    default = load_config(None)
    assert [(s.data, s.lr, s.epochs) for s in default.stages] == [
        ("multimodal", 1e-5, 2.0), ("all", 1e-6, 2.0)]  # the Skywork-VL recipe
    assert default.freeze == "vision"
    f.write_text("frezee: backbone\n")
    with pytest.raises(ValueError, match="frezee"):
        load_config(f)
    with pytest.raises(ValueError, match="data must be"):
        load_config({"stages": [{"name": "x", "data": "images"}]})


# -- frozen backbone: head only, on cached features ----------------------------------------
def test_frozen_backbone_trains_the_head_on_cached_features(tmp_path):
    rows = []
    from tests.rm_helpers import pair_row

    for i in range(40):
        prompt = [{"role": "user", "content": f"Is {i} even?"}]
        good = f"{'Yes' if i % 2 == 0 else 'No'}, {i} is {'even' if i % 2 == 0 else 'odd'}."
        rows.append(pair_row(i, prompt, good, f"I will not discuss {i}.", [], "numbers"))
    from curate import schema as S

    table = pa.Table.from_pylist(rows, schema=S.PAIR_SCHEMA)
    cfg = {"freeze": "backbone", "feature_cache": str(tmp_path / "cache"), "max_length": 48,
           "eval_fraction": 0.25, "head_epochs": 15, "head_batch_size": 8, "bf16": False}
    m1 = train_reward_model(table, "minilm", tmp_path / "rm1", cfg)
    assert m1["feature_cache"]["computed"] == 80 and m1["feature_cache"]["hits"] == 0
    assert m1["eval"]["accuracy"] >= 0.9 and m1["history"][-1]["train_accuracy"] >= 0.9
    assert m1["skipped_stages"] == ["multimodal"]
    # the same sequences with chosen and rejected swapped: every feature comes from the cache
    swapped = table.rename_columns([{"chosen": "rejected", "rejected": "chosen"}.get(c, c)
                                    for c in table.column_names])
    m2 = train_reward_model(swapped, "minilm", tmp_path / "rm2", cfg)
    assert m2["feature_cache"]["computed"] == 0 and m2["feature_cache"]["hits"] == 80
    assert m2["eval"]["accuracy"] >= 0.9  # it learned the swapped labels
    # the head is saved without the (unchanged) backbone and scores the same after loading
    assert not (tmp_path / "rm1" / "model.safetensors").exists()
    rm = load_reward_model(tmp_path / "rm1")
    c, r = rm.score_pairs(table.slice(0, 10))
    c2, r2 = rm.score_pairs(table.slice(0, 10), feature_cache=tmp_path / "cache")
    assert c == pytest.approx(c2, abs=1e-4) and r == pytest.approx(r2, abs=1e-4)
    assert np.mean(np.array(c) > np.array(r)) >= 0.8


# -- the CLI ------------------------------------------------------------------------------
def test_cli_train_writes_a_checkpoint_and_metrics(run_cli, pairs, tmp_path):
    import pyarrow.parquet as pq

    data = tmp_path / "shards"
    data.mkdir()
    pq.write_table(pairs, data / "part-00000.parquet")
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({**FAST, "stages": [
        {"name": "all", "data": "all", "lr": 1e-3, "epochs": 1}]}))
    res = run_cli("train", data, "--model", TINY_NAME, "--out", tmp_path / "rm",
                  "--config", cfg, "--eval-fraction", "0.25", "--freeze", "vision")
    m = json.loads((tmp_path / "rm" / "metrics.json").read_text())
    assert m["train_pairs"] == 18 and m["eval_pairs"] == 6 and m["freeze"] == "vision"
    assert set(m["eval"]["by_source"]) == {"synth-image", "synth-text"}
    assert "eval accuracy" in res.output
    bad = tmp_path / "bad.json"
    bad.write_text('{"learning_rate": 1}')
    res = run_cli("train", data, "--model", TINY_NAME, "--out", tmp_path / "x",
                  "--config", bad, expect=2)
    assert "learning_rate" in res.output
