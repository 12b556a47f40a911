"""GPU training step of a ~0.5B random Qwen2.5-VL reward model (issue 5's device check).

bf16 autocast, one 448x448 image + 512 text tokens per response, chosen and rejected in
one forward, linear head at the last token, pairwise loss, vision tower frozen (as
Skywork-VL), AdamW; reports pairs/s, peak GPU memory and model FLOP utilisation.

    python -m bench.gpu_train_qwen25vl [--steps 20] [--pairs 8] [--out results.json]
Not run by `python -m bench` (needs CUDA). `--tiny` runs a small model on the CPU.
"""

from __future__ import annotations

import argparse
import json
import time

H100_BF16_DENSE_TFLOPS = 989.0


def build(tiny: bool):  # -> (model, head, cfg)
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLModel

    if tiny:
        text = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, vocab_size=1000)
        vision = dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4,
                      out_hidden_size=64, fullatt_block_indexes=[1])
        rope = {"type": "mrope", "mrope_section": [2, 3, 3]}
    else:  # Qwen2-0.5B text model + a 6-block vision tower: ~0.57B parameters
        text = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                    num_attention_heads=14, num_key_value_heads=2, vocab_size=151936)
        vision = dict(depth=6, hidden_size=1024, intermediate_size=2816, num_heads=16,
                      out_hidden_size=896, fullatt_block_indexes=[2, 5])
        rope = {"type": "mrope", "mrope_section": [16, 24, 24]}
    cfg = Qwen2_5_VLConfig(
        text_config={**text, "rope_scaling": rope, "max_position_embeddings": 4096},
        vision_config={**vision, "patch_size": 14, "spatial_merge_size": 2,
                       "temporal_patch_size": 2, "window_size": 112},
        image_token_id=text["vocab_size"] - 3, vision_start_token_id=text["vocab_size"] - 2,
        vision_end_token_id=text["vocab_size"] - 1,
    )
    cfg._attn_implementation = "sdpa"
    model = Qwen2_5_VLModel(cfg)
    head = torch.nn.Linear(text["hidden_size"], 1)
    return model, head, cfg


def batch(cfg, pairs: int, text_tokens: int, image_px: int, device):  # -> dict
    import torch

    patch, merge = 14, 2
    grid = image_px // patch
    n_img_tokens = (grid // merge) ** 2
    vocab = cfg.text_config.vocab_size
    seqs = 2 * pairs
    ids = torch.randint(0, vocab - 3, (seqs, 2 + n_img_tokens + text_tokens))
    ids[:, 0] = cfg.vision_start_token_id
    ids[:, 1:1 + n_img_tokens] = cfg.image_token_id
    ids[:, 1 + n_img_tokens] = cfg.vision_end_token_id
    pixel = torch.randn(seqs * grid * grid, 3 * 2 * patch * patch)
    thw = torch.tensor([[1, grid, grid]] * seqs)
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
            "pixel_values": pixel.to(device), "image_grid_thw": thw.to(device),
            "n_img_tokens": n_img_tokens}


def main(argv: list[str] | None = None) -> dict:
    import torch
    import torch.nn.functional as F

    ap = argparse.ArgumentParser(prog="gpu_train_qwen25vl")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--pairs", type=int, default=8, help="pairs per step (2 sequences each)")
    ap.add_argument("--text-tokens", type=int, default=512)
    ap.add_argument("--image", type=int, default=448)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    torch.manual_seed(0)
    model, head, cfg = build(args.tiny)
    model.to(device)
    head.to(device)
    for p in model.visual.parameters():  # vision frozen; merger (projector) trains
        p.requires_grad_(False)
    for p in model.visual.merger.parameters():
        p.requires_grad_(True)
    model.gradient_checkpointing_enable() if not args.tiny else None
    params = [p for p in list(model.parameters()) + list(head.parameters()) if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    n_total = sum(p.numel() for p in model.parameters())
    n_vision = sum(p.numel() for p in model.visual.parameters())
    n_embed = model.language_model.embed_tokens.weight.numel()
    b = batch(cfg, args.pairs, args.text_tokens, args.image, device)
    n_img = b.pop("n_img_tokens")
    seq = b["input_ids"].shape[1]

    def step() -> float:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            hidden = model(**b).last_hidden_state
            r = head(hidden[:, -1].float()).squeeze(-1)
            loss = -F.logsigmoid(r[0::2] - r[1::2]).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    for _ in range(2):  # warm-up (kernels, allocator)
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    losses = [step() for _ in range(args.steps)]
    if device.type == "cuda":
        torch.cuda.synchronize()
    secs = time.perf_counter() - t
    pairs_s = args.steps * args.pairs / secs
    seqs_s = 2 * pairs_s
    # model FLOPs per sequence: language model 6*N*T (+ attention 12*L*d*T^2: fwd+bwd),
    # frozen vision tower forward only 2*N*patches; gradient checkpointing's recompute
    # is not counted (MFU, not hardware utilisation)
    tc = cfg.text_config
    n_lm = n_total - n_vision - n_embed
    patches = (args.image // 14) ** 2
    flops_seq = (6 * n_lm * seq + 12 * tc.num_hidden_layers * tc.hidden_size * seq * seq
                 + 2 * n_vision * patches)
    tflops = flops_seq * seqs_s / 1e12
    result = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "params_total": n_total, "params_vision": n_vision,
        "params_trainable": sum(p.numel() for p in params),
        "pairs_per_step": args.pairs, "seq_len": seq, "image_tokens": n_img, "steps": args.steps,
        "seconds": round(secs, 3), "pairs_per_s": round(pairs_s, 2),
        "peak_gpu_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)
        if device.type == "cuda" else None,
        "model_tflops_per_s": round(tflops, 1),
        "mfu_vs_h100_bf16_dense": round(tflops / H100_BF16_DENSE_TFLOPS, 3),
        "loss_first_last": [round(losses[0], 4), round(losses[-1], 4)],
    }
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=2)
    return result


if __name__ == "__main__":
    main()
