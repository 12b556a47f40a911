"""GPU training throughput of a random Qwen2.5-VL reward model: padded vs packed batches.

The model is a randomly initialised `Qwen2_5_VLModel` of the 3B or 7B shape (or the
older ~0.57B one, or a tiny one for a CPU smoke run) inside curate's own `RewardModel`,
and every step goes through the training code path: `PairCollator.batch` (padded or
packed rows, image positions, token counts), `token_budget_groups` (micro-batches of at
most N tokens), `RewardModel.forward`, the pairwise loss weighted by each micro-batch's
share of the step's pairs, clipping, AdamW. Vision tower frozen (its merger trains), as
Skywork-VL; gradient checkpointing on the language model; bf16 autocast over fp32
weights (`--bf16-weights`: bf16 weights and optimizer states, what lets the 7B shape
train on one GPU).

The pairs follow Skywork-VL Reward's training mix: prompts 50-1,500 tokens, each response
20-2,000 (log-uniform), 70% of pairs with one image of 448-1,024 px a side (at most 1,280
visual tokens, Qwen's max_pixels), sequences capped at --max-length (4,096).

Reports per mode: pairs/s, tokens/s (real tokens), token efficiency, peak GPU memory, model
TFLOP/s and MFU against the GPU's dense bf16 peak (curate.train.throughput: 6 N per
trained token + attention, the frozen vision tower's forward; recomputation not counted).

    python -m bench.gpu_train_qwen25vl --shape 3b --steps 30 --out gpu-3b.json
    python -m bench.gpu_train_qwen25vl --shape 7b --bf16-weights --steps 30 --out gpu-7b.json
    python -m bench.gpu_train_qwen25vl --tiny          # CPU smoke run of the same path

Modes (`--modes`, comma separated): `padded:P` (P pairs per micro-batch, padded to the
longest sequence) and `packed:N` (micro-batches of at most N tokens in one row each).
Packed rows use flash-attention varlen when flash_attn is installed, else --packed-attn
(default flex_attention: a block-sparse mask, so attention skips other sequences' blocks;
sdpa materialises a dense block-diagonal mask). Not run by `python -m bench`.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from types import SimpleNamespace
from typing import Any

SHAPES: dict[str, dict[str, Any]] = {
    # Qwen2.5-VL-3B-Instruct's config.json (text + vision tower)
    "3b": {"text": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                        num_attention_heads=16, num_key_value_heads=2, vocab_size=151936,
                        rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                         "mrope_section": [16, 24, 24]}),
           "vision": dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16,
                          out_hidden_size=2048, fullatt_block_indexes=[7, 15, 23, 31])},
    # Qwen2.5-VL-7B-Instruct's
    "7b": {"text": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                        num_attention_heads=28, num_key_value_heads=4, vocab_size=152064,
                        rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                         "mrope_section": [16, 24, 24]}),
           "vision": dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16,
                          out_hidden_size=3584, fullatt_block_indexes=[7, 15, 23, 31])},
    # issue 5's ~0.57B: Qwen2-0.5B's text model and a 6-block vision tower
    "0.5b": {"text": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                          num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                          rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                           "mrope_section": [16, 24, 24]}),
             "vision": dict(depth=6, hidden_size=1024, intermediate_size=2816, num_heads=16,
                            out_hidden_size=896, fullatt_block_indexes=[2, 5])},
    "tiny": {"text": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, vocab_size=1000,
                          rope_parameters={"rope_type": "default", "rope_theta": 1e4,
                                           "mrope_section": [2, 3, 3]}),
             "vision": dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4,
                            out_hidden_size=64, fullatt_block_indexes=[1])},
}
PATCH, MERGE, MAX_IMAGE_TOKENS = 14, 2, 1280


def build(shape: str, attn: str, device: Any, bf16_weights: bool, max_length: int) -> Any:
    """curate's RewardModel around a random Qwen2_5_VLModel of `shape`."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLModel

    from curate.models.reward_model import RewardConfig, RewardModel

    spec = SHAPES[shape]
    vocab = spec["text"]["vocab_size"]
    cfg = Qwen2_5_VLConfig(
        text_config={**spec["text"], "max_position_embeddings": 32768},
        vision_config={**spec["vision"], "patch_size": PATCH, "spatial_merge_size": MERGE,
                       "temporal_patch_size": 2, "window_size": 112},
        image_token_id=vocab - 3, vision_start_token_id=vocab - 2,
        vision_end_token_id=vocab - 1, video_token_id=vocab - 4)
    cfg._attn_implementation = attn
    cfg.text_config._attn_implementation = attn
    torch.manual_seed(0)
    with torch.device(device):
        backbone = Qwen2_5_VLModel(cfg)
    if bf16_weights:
        backbone.to(torch.bfloat16)
    tok = SimpleNamespace(pad_token_id=0, eos_token_id=1)  # ids are synthesised, not tokenized
    rc = RewardConfig(base_model=f"random-qwen2.5-vl-{shape}", backbone="vl", pooling="last",
                      layout="chat", max_length=max_length)
    rm = RewardModel(backbone, tok, rc).to(device)
    if bf16_weights:
        rm.v_head.to(torch.bfloat16)
    rm.freeze("vision")
    return rm


def image_grid(rng: Any) -> tuple[int, int]:
    """(h, w) patches of a 448-1024 px image, even (2x2 merge), at most 1280 merged tokens."""
    h_px, w_px = rng.integers(448, 1025, size=2)
    h, w = max(2, round(h_px / PATCH / 2) * 2), max(2, round(w_px / PATCH / 2) * 2)
    while (h // 2) * (w // 2) > MAX_IMAGE_TOKENS:
        scale = math.sqrt(MAX_IMAGE_TOKENS / ((h // 2) * (w // 2)))
        h, w = max(2, int(h * scale) // 2 * 2), max(2, int(w * scale) // 2 * 2)
    return h, w


def log_uniform(rng: Any, lo: int, hi: int) -> int:
    return int(round(math.exp(rng.uniform(math.log(lo), math.log(hi)))))


def sample_pairs(n: int, cfg: Any, max_length: int, image_fraction: float, seed: int = 0
                 ) -> list[Any]:
    """Synthetic pairs (EncodedPair) with the Skywork-VL length distribution."""
    import numpy as np
    import torch

    from curate.models.encoding import Encoded, ImageInputs
    from curate.train.collator import EncodedPair, PairItem

    rng = np.random.default_rng(seed)
    vocab = cfg.text_config.vocab_size
    patch_dim = 3 * 2 * PATCH * PATCH
    out = []
    for i in range(n):
        image, prefix = None, []
        if rng.random() < image_fraction:
            h, w = image_grid(rng)
            k = (h // MERGE) * (w // MERGE)
            image = ImageInputs(torch.randn(h * w, patch_dim), torch.tensor([[1, h, w]]), [k])
            prefix = [cfg.vision_start_token_id] + [cfg.image_token_id] * k \
                + [cfg.vision_end_token_id]
        text = rng.integers(10, vocab - 10, log_uniform(rng, 50, 1500)).tolist()

        def seq(text: list[int] = text, prefix: list[int] = prefix) -> Any:
            resp = rng.integers(10, vocab - 10, log_uniform(rng, 20, 2000)).tolist()
            resp = resp[:max_length - len(prefix) - 8]
            room = max_length - len(prefix) - len(resp)  # the prompt loses its oldest tokens
            return Encoded(prefix + text[-room:] + resp, n_images=1 if prefix else 0)

        out.append(EncodedPair(PairItem(i, {}, 0.0), seq(), seq(), image))
    return out


def micro_batches(collator: Any, step_pairs: list[Any], mode: str, arg: int) -> list[dict]:
    from curate.train.collator import token_budget_groups

    if mode == "packed":
        groups = token_budget_groups(step_pairs, arg, packed=True)
    else:
        ordered = sorted(step_pairs, key=lambda p: p.longest)
        groups = [ordered[s:s + arg] for s in range(0, len(ordered), arg)]
    return [collator.batch(g) for g in groups]


def run_mode(rm: Any, opt: Any, pairs: list[Any], mode: str, arg: int, args: Any,
             device: Any) -> dict[str, Any]:
    import torch

    from curate.train.collator import PairCollator, model_inputs
    from curate.train.loss import pairwise_loss
    from curate.train.throughput import ModelShape, Throughput, peak_tflops

    rm.packing = mode == "packed"
    collator = PairCollator(rm)
    params = [p for p in rm.parameters() if p.requires_grad]
    shape = ModelShape.of(rm)
    per = args.pairs_per_step
    steps = [pairs[s * per:(s + 1) * per] for s in range(args.warmup + args.steps)]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                              enabled=device.type == "cuda" and not args.bf16_weights)
    tp = Throughput()
    losses = []

    def step(micros: list[dict], timed: bool) -> None:
        n_step = sum(int(m["margin"].shape[0]) for m in micros)
        total = 0.0
        for mb in micros:
            mb = {k: v.to(device) if torch.is_tensor(v) else v for k, v in mb.items()}
            with autocast:
                r = rm(**model_inputs(mb))
            n = mb["margin"].shape[0]
            loss = pairwise_loss(r[:n], r[n:])
            (loss * (n / n_step)).backward()
            total += float(loss.detach()) * n / n_step
            if timed:
                tp.add(mb, shape)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(total)

    for s in steps[:args.warmup]:
        step(micro_batches(collator, s, mode, arg), timed=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for s in steps[args.warmup:]:
        step(micro_batches(collator, s, mode, arg), timed=True)  # collation is timed too
    if device.type == "cuda":
        torch.cuda.synchronize()
    tp.seconds = time.perf_counter() - t
    peak = peak_tflops(device)
    out = {"mode": f"{mode}:{arg}", **tp.summary(1, peak)}
    out["peak_gpu_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2) \
        if device.type == "cuda" else None
    out["loss_first_last"] = [round(losses[0], 4), round(losses[-1], 4)]
    return out


def main(argv: list[str] | None = None) -> dict:
    import torch

    ap = argparse.ArgumentParser(prog="gpu_train_qwen25vl")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="3b")
    ap.add_argument("--tiny", action="store_true", help="the tiny shape on the CPU (smoke run)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--pairs-per-step", type=int, default=16)
    ap.add_argument("--modes", default="padded:1,padded:4,packed:16384",
                    help="padded:PAIRS_PER_MICRO_BATCH and packed:MAX_TOKENS, comma separated")
    ap.add_argument("--max-length", type=int, default=4096)
    ap.add_argument("--image-fraction", type=float, default=0.7)
    ap.add_argument("--bf16-weights", action="store_true")
    ap.add_argument("--no-gradient-checkpointing", action="store_true")
    ap.add_argument("--padded-attn", default="sdpa")
    ap.add_argument("--packed-attn", default="flex_attention",
                    help="attention of packed rows when flash_attn is not installed")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    if args.tiny:
        args.shape, args.max_length = "tiny", min(args.max_length, 1024)
    from curate.models.packing import flash_varlen_available

    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    rm = build(args.shape, args.padded_attn, device, args.bf16_weights, args.max_length)
    if not args.no_gradient_checkpointing and device.type == "cuda":
        rm.backbone.language_model.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False})
    rm.train()
    params = [p for p in rm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    pairs = sample_pairs(args.pairs_per_step * (args.warmup + args.steps), rm.backbone.config,
                         args.max_length, args.image_fraction)
    packed_attn = "flash_attention_2" if flash_varlen_available() else args.packed_attn
    if device.type == "cpu":
        packed_attn = "sdpa"
    results = []
    for spec in args.modes.split(","):
        mode, arg = spec.split(":")
        attn = packed_attn if mode == "packed" else args.padded_attn
        rm.backbone.language_model.set_attn_implementation(attn)
        r = run_mode(rm, opt, pairs, mode, int(arg), args, device)
        r["attention"] = attn
        results.append(r)
        print(json.dumps(r), flush=True)
    base = results[0]["pairs_per_second"]
    for r in results[1:]:
        r["speedup_vs_first"] = round(r["pairs_per_second"] / base, 2)
    n_total = sum(p.numel() for p in rm.parameters())
    result = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "shape": args.shape, "params_total": n_total,
        "params_trainable": sum(p.numel() for p in params),
        "bf16_weights": args.bf16_weights, "gradient_checkpointing":
            device.type == "cuda" and not args.no_gradient_checkpointing,
        "pairs_per_step": args.pairs_per_step, "steps": args.steps,
        "max_length": args.max_length, "modes": results,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=2)
    return result


if __name__ == "__main__":
    main()
