"""Packed (padding-free) forwards and token-budget batches give what padded batches give.

fp32 throughout: rewards within 1e-4 and the same gradients for the tiny Qwen2.5-VL
(image and text-only pairs in one batch) and MiniLM; each check also runs a broken
packing (attention or positions leaking across sequences) to show it would notice.
The loss curve of 20 optimizer steps (two stages, gradient accumulation) is the same
with and without a token budget, packed and padded.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from curate.models import packing as P
from curate.models.reward_model import build_reward_model
from curate.models.tiny import TINY_NAME
from curate.train.collator import PairCollator, PairDataset, model_inputs, token_budget_groups
from curate.train.config import load_config
from curate.train.data import PairRows
from curate.train.loss import pairwise_loss
from curate.train.throughput import ModelShape, Throughput, peak_tflops
from curate.train.trainer import train_reward_model
from tests.rm_helpers import one_torch_thread, synthetic_pairs  # noqa: F401

TOL = 1e-4


@pytest.fixture(scope="module")
def pairs() -> pa.Table:
    return synthetic_pairs(n_image=16, n_text=16)


def _items(table: pa.Table, n: int) -> list:
    ds = PairDataset(PairRows(table), np.arange(n), np.zeros(len(table), dtype=np.float32))
    return [ds[i] for i in range(n)]


def _rewards_and_grads(rm, items, packed: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    rm.packing = packed
    batch = PairCollator(rm)(items)
    rm.zero_grad(set_to_none=True)
    r = rm(**model_inputs(batch))
    n = len(items)
    pairwise_loss(r[:n], r[n:]).backward()
    grads = {k: p.grad.detach().clone() for k, p in rm.named_parameters() if p.grad is not None}
    return r.detach(), grads


def _assert_same(rm, items) -> torch.Tensor:
    padded_r, padded_g = _rewards_and_grads(rm, items, packed=False)
    packed_r, packed_g = _rewards_and_grads(rm, items, packed=True)
    assert torch.allclose(packed_r, padded_r, atol=TOL, rtol=0), (packed_r - padded_r).abs().max()
    assert padded_g.keys() == packed_g.keys() and len(padded_g) > 10
    for k in padded_g:
        scale = max(1.0, float(padded_g[k].abs().max()))
        assert torch.allclose(packed_g[k], padded_g[k], atol=TOL * scale, rtol=0), k
    return padded_r


@pytest.fixture(scope="module")
def tiny():
    rm = build_reward_model(TINY_NAME, max_length=160).float()
    rm.freeze("vision")
    rm.train()  # Qwen2.5-VL has no dropout: train mode is deterministic
    return rm


@pytest.fixture(scope="module")
def minilm():
    rm = build_reward_model("minilm", max_length=64).float()
    rm.freeze("none")
    rm.eval()  # no dropout, so the two forwards are comparable
    return rm


def test_packed_tiny_qwen25vl_matches_padded_with_images_and_text_in_one_batch(tiny, pairs):
    items = _items(pairs, 6)  # pairs alternate image / text-only
    assert [bool(it.row["images"]) for it in items] == [True, False] * 3
    tiny.packing = True
    batch = PairCollator(tiny)(items)
    assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch
    assert batch["position_ids"].shape == (4, 1, batch["input_ids"].shape[1])
    padded = _assert_same(tiny, items)
    # a broken packing notices: positions that run on across sequences make attention leak
    # into earlier sequences (transformers sees one long sequence)
    leak = dict(model_inputs(batch))
    leak["position_ids"] = torch.arange(leak["input_ids"].shape[1]).view(1, 1, -1).expand(4, 1, -1)
    with torch.no_grad():
        assert (tiny(**leak) - padded).abs().max() > 1e-3
    # ... and so do text positions in place of the image rope positions
    text_only = dict(model_inputs(batch))
    text_only["position_ids"] = batch["position_ids"][0:1].expand(4, 1, -1)
    with torch.no_grad():
        wrong = tiny(**text_only)
    image_seqs = torch.tensor([bool(it.row["images"]) for it in items] * 2)
    assert (wrong - padded)[image_seqs].abs().max() > 1e-4
    assert (wrong - padded)[~image_seqs].abs().max() < TOL


def test_packed_minilm_matches_padded(minilm, pairs, monkeypatch):
    items = _items(pairs, 6)
    padded = _assert_same(minilm, items)
    minilm.packing = True
    batch = PairCollator(minilm)(items)
    assert batch["token_type_ids"].shape == batch["input_ids"].shape  # segment ids packed too
    # with a mask that is not block-diagonal every sequence attends to all the others
    # (no mask at all is no test: transformers then finds the blocks from position_ids)
    monkeypatch.setattr(P, "encoder_block_mask", lambda backbone, ids, lengths: torch.ones(
        (1, 1, ids.shape[-1], ids.shape[-1]), dtype=torch.bool))
    with torch.no_grad():
        assert (minilm(**model_inputs(batch)) - padded).abs().max() > 1e-3


def test_packed_mean_and_cls_pooling_match_padded(minilm, pairs):
    items = _items(pairs, 4)
    try:
        for how in ("cls", "last"):
            minilm.reward_config.pooling = how
            _assert_same(minilm, items)
    finally:
        minilm.reward_config.pooling = "mean"


def test_pack_helpers():
    lengths = torch.tensor([3, 1, 2])
    assert P.restart_positions(lengths).tolist() == [0, 1, 2, 0, 0, 1]
    assert P.sequence_ids(lengths).tolist() == [0, 0, 0, 1, 2, 2]
    h = torch.arange(6, dtype=torch.float32).view(1, 6, 1)
    assert P.pool_packed(h, lengths, "last").flatten().tolist() == [2, 3, 5]
    assert P.pool_packed(h, lengths, "cls").flatten().tolist() == [0, 3, 4]
    assert P.pool_packed(h, lengths, "mean").flatten().tolist() == [1, 3, 4.5]


def test_packing_modes_resolve_and_refuse_what_cannot_pack(tiny):
    class NoPositions(torch.nn.Module):
        def forward(self, input_ids, attention_mask=None):
            return input_ids

    assert P.resolve_packing("auto", tiny.backbone, "vl") is True
    assert P.resolve_packing("auto", tiny.backbone, "vl", varlen=False) is False  # CPU: pads
    assert P.resolve_packing("on", tiny.backbone, "vl", varlen=False) is True
    assert P.resolve_packing("off", tiny.backbone, "vl") is False
    assert P.resolve_packing("auto", NoPositions(), "causal") is False
    with pytest.raises(ValueError, match="cannot take packed sequences"):
        P.resolve_packing("on", NoPositions(), "causal")
    with pytest.raises(ValueError, match="packing"):
        P.resolve_packing("maybe", tiny.backbone, "vl")
    assert load_config({"packing": False}).packing == "off"  # YAML's bare `off`
    assert load_config({"packing": True}).packing == "on"
    with pytest.raises(ValueError, match="packing"):
        load_config({"packing": "sometimes"})
    with pytest.raises(ValueError, match="max_tokens_per_batch"):
        load_config({"max_tokens_per_batch": 0})


# -- token budgets ---------------------------------------------------------------------
def test_token_budget_groups_keep_pairs_together_and_within_budget(tiny, pairs):
    collator = PairCollator(tiny)
    encoded = collator.encode(_items(pairs, 12))
    for packed, budget in ((True, 950), (False, 1100)):  # pairs of 233-245 tokens
        groups = token_budget_groups(encoded, budget, packed)
        flat = [p.item.index for g in groups for p in g]
        assert sorted(flat) == list(range(12))  # every pair once
        sizes = [len(g) for g in groups]
        assert sizes == [4, 3, 3, 2]  # split, unevenly
        for g in groups:
            tokens = sum(p.tokens for p in g) if packed else 2 * len(g) * max(
                p.longest for p in g)
            assert tokens <= budget or len(g) == 1
    # one pair over the budget still trains, alone
    assert [len(g) for g in token_budget_groups(encoded[:3], 1, True)] == [1, 1, 1]
    # the batches the collator builds: both sequences of each pair in the same micro-batch
    tiny.packing = True
    micros = PairCollator(tiny, max_tokens=600)(_items(pairs, 12))
    for mb in micros:
        n = len(mb["pair_index"])
        assert len(mb["seq_lengths"]) == 2 * n
        assert int(mb["real_tokens"]) == int(mb["computed_tokens"]) <= 600


# two stages (multimodal: 16 pairs, then all 32), 8 pairs per step as 2 micro-batches of 4
# without a budget: stage 1 2 steps x 2 epochs, stage 2 4 steps x 4 epochs = 20 steps
CURVE = {"stages": [{"name": "multimodal", "data": "multimodal", "lr": 2e-3, "epochs": 2},
                    {"name": "mixed", "data": "all", "lr": 1e-3, "epochs": 4}],
         "batch_size": 4, "grad_accum": 2, "max_length": 160, "warmup_ratio": 0.0,
         "bf16": False, "freeze": "vision", "eval_every": 1, "save_every": 1000}


@pytest.fixture(scope="module")
def curves(pairs, tmp_path_factory) -> dict[str, dict]:
    tmp = tmp_path_factory.mktemp("curves")
    out = {}
    for name, extra in {"padded": {"packing": "off"},
                        "padded+budget": {"packing": "off", "max_tokens_per_batch": 850},
                        "packed": {"packing": "on"},
                        "packed+budget": {"packing": "on", "max_tokens_per_batch": 750}}.items():
        out[name] = train_reward_model(pairs, TINY_NAME, tmp / name.replace("+", "_"),
                                       {**CURVE, **extra}, eval_data=pairs.slice(0, 8))
    return out


def _curve(m: dict) -> list[float]:
    return [h["eval"]["loss"] for h in m["history"] if "eval" in h and "train_loss" not in h]


@pytest.mark.slow  # four 20-step runs: about 40 s of CPU, minutes on a busy machine
def test_token_budget_gives_the_same_loss_curve_over_20_steps(curves):
    base = _curve(curves["padded"])
    assert len(base) == 20 and curves["padded"]["optimizer_steps"] == 20
    assert base[-1] < base[0] - 0.05  # it learns: the curve is not flat
    for name, m in curves.items():
        assert m["optimizer_steps"] == 20, name
        np.testing.assert_allclose(_curve(m), base, atol=TOL, rtol=0, err_msg=name)
    for name in ("padded+budget", "packed+budget"):
        # the budget split the 8-pair steps into more (and uneven) micro-batches than 2
        assert curves[name]["micro_batches"] > 40, name
    assert curves["padded"]["micro_batches"] == curves["packed"]["micro_batches"] == 40


@pytest.mark.slow  # shares the four runs above
def test_token_counts_in_metrics(curves):
    padded, packed = curves["padded"], curves["packed"]
    assert padded["real_tokens"] == packed["real_tokens"] > 0
    assert packed["computed_tokens"] == packed["real_tokens"]
    assert packed["token_efficiency"] == 1.0
    assert padded["computed_tokens"] > padded["real_tokens"]
    assert padded["token_efficiency"] == pytest.approx(
        padded["real_tokens"] / padded["computed_tokens"], abs=1e-4)
    for m in curves.values():
        assert m["pairs_per_second"] > 0 and m["tokens_per_second"] > 0
        assert m["mfu"] is None  # no GPU here
    assert packed["packing"] is True and "block-diagonal" in packed["attention"]
    assert padded["packing"] is False
    on_disk = json.loads((Path(packed["out"]) / "metrics.json").read_text())
    assert on_disk["token_efficiency"] == 1.0 and on_disk["real_tokens"] == packed["real_tokens"]


def test_model_flops_follow_the_model_shape(minilm, tiny):
    shape = ModelShape.of(minilm)
    layers = sum(p.numel() for n, p in minilm.backbone.named_parameters()
                 if n.startswith("encoder.layer."))
    assert shape.params_text == layers and shape.layers == 6 and shape.hidden == 384
    assert shape.flops(torch.tensor([10, 20])) == pytest.approx(
        6 * layers * 30 + 12 * 6 * 384 * (100 + 400))
    vl = ModelShape.of(tiny)  # vision frozen except its merger: the tower costs its forward
    assert vl.params_vision > 0 and not vl.vision_trains and vl.text_trains
    assert vl.flops(torch.tensor([5]), image_patches=16) == pytest.approx(
        6 * vl.params_text * 5 + 12 * vl.layers * vl.hidden * 25 + 2 * vl.params_vision * 16)
    assert peak_tflops(torch.device("cpu")) is None
    t = Throughput(seconds=2.0, pairs=10, real_tokens=900, computed_tokens=1000, flops=4e12)
    s = t.summary(processes=1, peak=4.0)
    assert s["token_efficiency"] == 0.9 and s["pairs_per_second"] == 5.0
    assert s["tokens_per_second"] == 450.0 and s["mfu"] == 0.5


def test_cli_packing_options(run_cli, pairs, tmp_path):
    import pyarrow.parquet as pq

    data = tmp_path / "pairs.parquet"
    pq.write_table(pairs.slice(0, 4), data)
    bad = run_cli("train", data, "--model", TINY_NAME, "--out", tmp_path / "x",
                  "--packing", "maybe", expect=2)
    assert "--packing" in bad.output and "Traceback" not in bad.output
    bad = run_cli("train", data, "--model", TINY_NAME, "--out", tmp_path / "y",
                  "--max-tokens-per-batch", "0", expect=2)
    assert "--max-tokens-per-batch" in bad.output
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("stages:\n  - {name: all, data: all, lr: 1.0e-3, epochs: 1}\n"
                   "batch_size: 4\nmax_length: 160\nbf16: false\n")
    ok = run_cli("train", data, "--model", TINY_NAME, "--out", tmp_path / "rm",
                 "--config", cfg, "--packing", "on", "--max-tokens-per-batch", "400")
    m = json.loads((tmp_path / "rm" / "metrics.json").read_text())
    assert m["packing"] is True and m["max_tokens_per_batch"] == 400
    assert m["token_efficiency"] == 1.0 and m["micro_batches"] > 2
    assert "token efficiency 1.000" in ok.output
