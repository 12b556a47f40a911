"""The reward model: pooling, encoding and truncation, backbones, scoring, save/load."""

from __future__ import annotations

import json

import pytest
import torch

from curate.models.encoding import PairEncoder
from curate.models.reward_model import (
    VALUE_HEAD,
    build_reward_model,
    load_reward_model,
    pool,
)
from curate.models.tiny import TINY_NAME, build_tiny_tokenizer
from tests.rm_helpers import image, items_of, one_torch_thread, synthetic_pairs  # noqa: F401

PROMPT = [{"role": "user", "content": "What colour is this?"}]


@pytest.fixture(scope="module")
def tiny():
    return build_reward_model(TINY_NAME, max_length=256)


@pytest.fixture(scope="module")
def minilm():
    return build_reward_model("minilm", max_length=64)


def _items():
    return [(PROMPT, "Red, clearly red.", [image("red")]),
            (PROMPT, "It is blue.", [image("blue", (90, 60))]),
            ([{"role": "user", "content": "Say hi."}], "Hi there!", None),
            ([{"role": "user", "content": "Two images: <image> and <image>"}], "Both plain.",
             [image("green"), image("red", (40, 80))])]


# -- pooling ------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["last", "cls", "mean"])
def test_pool_reads_the_same_positions_with_either_padding_side(how):
    torch.manual_seed(0)
    lengths = [5, 2, 7]
    seqs = [torch.randn(n, 4) for n in lengths]
    right = torch.zeros(3, 7, 4)
    left = torch.zeros(3, 7, 4)
    mask_r = torch.zeros(3, 7, dtype=torch.long)
    mask_l = torch.zeros(3, 7, dtype=torch.long)
    for i, s in enumerate(seqs):
        right[i, :len(s)], mask_r[i, :len(s)] = s, 1
        left[i, 7 - len(s):], mask_l[i, 7 - len(s):] = s, 1
    expect = {"last": torch.stack([s[-1] for s in seqs]),
              "cls": torch.stack([s[0] for s in seqs]),
              "mean": torch.stack([s.mean(0) for s in seqs])}[how]
    assert torch.allclose(pool(right, mask_r, how), expect, atol=1e-6)
    assert torch.allclose(pool(left, mask_l, how), expect, atol=1e-6)


# -- encoding and truncation --------------------------------------------------------------
def test_chat_layout_places_images_and_ends_with_the_template():
    tok = build_tiny_tokenizer()
    model = build_reward_model(TINY_NAME, max_length=512)
    enc = model.encoder
    ii = enc.encode_images([image("red"), image("blue")])
    e = enc.encode([{"role": "user", "content": "Compare <image> with <image> please"}],
                   "They differ.", ii)
    text = tok.decode(e.input_ids)
    assert text.count("<|vision_start|>") == 2
    n_pad = sum(t == enc.image_token_id for t in e.input_ids)
    assert n_pad == sum(ii.tokens_per_image) == int(ii.image_grid_thw.prod(-1).sum()) // 4
    assert "<image>" not in text
    assert text.endswith("<|im_start|>assistant\nThey differ.<|im_end|>\n")
    assert e.n_images == 2 and not e.prompt_truncated


def test_long_prompt_is_cut_from_the_left_and_the_response_survives():
    model = build_reward_model(TINY_NAME, max_length=120)
    enc = model.encoder
    turns = [{"role": "user", "content": f"old turn {i} " * 5} for i in range(6)]
    turns.append({"role": "user", "content": "<image>latest question"})
    ii = enc.encode_images([image("green")])
    e = enc.encode(turns, "the answer", ii)
    text = model.tokenizer.decode(e.input_ids)
    assert len(e.input_ids) == 120
    assert e.prompt_truncated and not e.response_truncated
    assert text.endswith("latest question<|im_end|>\n<|im_start|>assistant\n"
                         "the answer<|im_end|>\n")
    assert "old turn 0" not in text  # the oldest tokens went first
    # the image block is never cut: every placeholder survives
    assert sum(t == enc.image_token_id for t in e.input_ids) == ii.tokens_per_image[0]


def test_a_response_longer_than_the_budget_keeps_its_start_and_end_of_turn():
    model = build_reward_model(TINY_NAME, max_length=100)
    e = model.encoder.encode([{"role": "user", "content": "q"}], "x" * 500)
    text = model.tokenizer.decode(e.input_ids)
    assert len(e.input_ids) == 100 and e.response_truncated
    assert text.endswith("xxx<|im_end|>\n")


def test_encoder_pair_layout_and_left_truncation(minilm):
    tok = minilm.tokenizer
    prompt = [{"role": "user", "content": "first words " + "filler " * 80 + "last question"}]
    e = minilm.encoder.encode(prompt, "short reply")
    assert len(e.input_ids) == 64 and e.prompt_truncated and not e.response_truncated
    assert e.input_ids[0] == tok.cls_token_id and e.input_ids[-1] == tok.sep_token_id
    text = tok.decode(e.input_ids)
    assert "first words" not in text and "last question [SEP] short reply [SEP]" in text
    n_resp = len(tok("short reply", add_special_tokens=False)["input_ids"]) + 1
    assert e.token_type_ids[-n_resp:] == [1] * n_resp and e.token_type_ids[0] == 0


def test_pair_encoder_rejects_unknown_layout():
    with pytest.raises(ValueError, match="layout"):
        PairEncoder(build_tiny_tokenizer(), "weird", 64)


# -- scoring ------------------------------------------------------------------------------
def test_scores_do_not_depend_on_padding_side_batching_or_pad_token(tiny):
    items = _items()
    base = tiny.score_batch(items, batch_size=4)
    one_by_one = [tiny.score(*it) for it in items]
    assert base == pytest.approx(one_by_one, abs=1e-5)
    tiny.reward_config.padding_side = "left"
    try:
        assert tiny.score_batch(items, batch_size=3) == pytest.approx(base, abs=1e-5)
    finally:
        tiny.reward_config.padding_side = "right"
    old = tiny.tokenizer.pad_token
    tiny.tokenizer.pad_token = tiny.tokenizer.eos_token  # pad = eos: pooling uses the mask
    try:
        assert tiny.pad_id == tiny.tokenizer.eos_token_id
        assert tiny.score_batch(items, batch_size=4) == pytest.approx(base, abs=1e-5)
    finally:
        tiny.tokenizer.pad_token = old


def test_the_image_reaches_the_reward(tiny):
    red = tiny.score(PROMPT, "A colour.", [image("red")])
    blue = tiny.score(PROMPT, "A colour.", [image("blue")])
    assert red != pytest.approx(blue, abs=1e-6)


def test_score_pairs_takes_arrow_rows(tiny):
    table = synthetic_pairs(3, 3)
    chosen, rejected = tiny.score_pairs(table, batch_size=4)
    flat = tiny.score_batch(items_of(table), batch_size=5)
    assert chosen + rejected == pytest.approx(flat, abs=1e-5)


def test_dummy_vision_pass_keeps_text_rewards_and_reaches_the_vision_weights(tiny):
    """ZeRO-3 / FSDP: a text-only batch must still run the vision tower on every rank."""
    text = [([{"role": "user", "content": "hello"}], "hi", None)]
    before = tiny.score_batch(text)
    tiny.always_run_vision = True
    try:
        assert tiny.score_batch(text) == pytest.approx(before, abs=1e-6)
        tiny.zero_grad()
        encs, imgs = tiny.encode_items(text)
        tiny(**tiny.collate(encs, imgs)).sum().backward()
        grad = tiny.backbone.visual.patch_embed.proj.weight.grad
        assert grad is not None and torch.count_nonzero(grad) == 0
    finally:
        tiny.always_run_vision = False
        tiny.zero_grad()


def test_causal_lm_backbone_reads_the_last_token(tmp_path):
    from transformers import GPT2Config, GPT2Model

    tok = build_tiny_tokenizer()
    tok.chat_template = None  # a causal LM without a template: the plain layout
    cfg = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=512,
                     eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    GPT2Model(cfg).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    rm = build_reward_model(str(tmp_path), max_length=128)
    assert (rm.reward_config.backbone, rm.reward_config.pooling,
            rm.reward_config.layout) == ("causal", "last", "plain")
    e = rm.encoder.encode([{"role": "user", "content": "hi"}], "yo")
    assert tok.decode(e.input_ids) == "User: hi\n\nAssistant: yo<|im_end|>"
    items = [([{"role": "user", "content": "hi"}], "yo", None),
             ([{"role": "user", "content": "a longer prompt here"}], "a longer reply", None)]
    right = rm.score_batch(items)
    rm.reward_config.padding_side = "left"  # positions come from the mask, not the padding
    assert rm.score_batch(items) == pytest.approx(right, abs=1e-5)


def test_encoder_pooling_is_configurable(minilm):
    cls = build_reward_model("minilm", max_length=64, pooling="cls")
    item = [([{"role": "user", "content": "Is the sky blue?"}], "Yes, on a clear day.", None)]
    f_mean, _ = minilm.compute_features(item)
    f_cls, _ = cls.compute_features(item)
    assert minilm.reward_config.pooling == "mean" and cls.reward_config.pooling == "cls"
    assert f_mean.shape == f_cls.shape == (1, 384)
    assert not torch.allclose(f_mean, f_cls)


# -- head, save, load ---------------------------------------------------------------------
def test_value_head_is_initialised_explicitly_from_the_seed():
    a = build_reward_model(TINY_NAME, seed=1).v_head.summary
    b = build_reward_model(TINY_NAME, seed=1).v_head.summary
    c = build_reward_model(TINY_NAME, seed=2).v_head.summary
    assert torch.equal(a.weight, b.weight) and not torch.equal(a.weight, c.weight)
    assert torch.count_nonzero(a.bias) == 0
    assert a.weight.std().item() == pytest.approx(1 / (64 + 1) ** 0.5, rel=0.35)


def test_save_and_load_give_identical_scores(tiny, tmp_path):
    from safetensors.torch import load_file

    with torch.no_grad():
        tiny.v_head.summary.bias.fill_(0.25)
    try:
        tiny.save(tmp_path / "ckpt")
        loaded = load_reward_model(tmp_path / "ckpt")
        items = _items()
        assert loaded.score_batch(items) == tiny.score_batch(items)
        assert loaded.fingerprint == tiny.fingerprint
    finally:
        with torch.no_grad():
            tiny.v_head.summary.bias.zero_()
    head = load_file(str(tmp_path / "ckpt" / VALUE_HEAD))
    assert set(head) == {"v_head.summary.weight", "v_head.summary.bias"}
    assert head["v_head.summary.weight"].shape == (1, 64)
    assert head["v_head.summary.bias"].item() == pytest.approx(0.25)
    cfg = json.loads((tmp_path / "ckpt" / "reward_config.json").read_text())
    assert cfg["backbone"] == "vl" and cfg["backbone_saved"] is True
    assert (tmp_path / "ckpt" / "model.safetensors").is_file()


def test_a_head_saved_without_its_backbone_checks_the_base_fingerprint(minilm, tmp_path):
    minilm.save(tmp_path / "head", save_backbone=False)
    assert not (tmp_path / "head" / "model.safetensors").exists()
    loaded = load_reward_model(tmp_path / "head")
    item = [([{"role": "user", "content": "hello"}], "hi", None)]
    assert loaded.score_batch(item) == pytest.approx(minilm.score_batch(item), abs=1e-6)
    cfg_path = tmp_path / "head" / "reward_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["backbone_fingerprint"] = "0" * 32
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="fingerprint"):
        load_reward_model(tmp_path / "head")


def test_load_refuses_a_folder_without_a_value_head(tmp_path):
    with pytest.raises(FileNotFoundError, match="value_head"):
        load_reward_model(tmp_path)


def test_feature_cache_scoring_matches_direct_scoring(minilm, tmp_path):
    items = [([{"role": "user", "content": f"question {i}"}], f"answer {i}", None)
             for i in range(5)]
    direct = minilm.score_batch(items)
    cache = minilm.feature_cache(tmp_path)
    assert minilm.score_batch(items, feature_cache=cache) == pytest.approx(direct, abs=1e-5)
    assert cache.computed == 5
    again = minilm.feature_cache(tmp_path)  # a new process would read the shards from disk
    assert len(again) == 5
    assert minilm.score_batch(items, feature_cache=again) == pytest.approx(direct, abs=1e-5)
    assert again.computed == 0 and again.hits == 5
