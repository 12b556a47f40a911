"""GPU throughput of the model stages' forward passes, for docs/scaling.md (needs CUDA).

Random-weight models of the production shapes (no download needed; forward cost does
not depend on the weights):
- reward scoring: a Qwen2.5-VL-7B-shaped language model (hidden 3584, 28 layers,
  GQA 28/4 heads, MLP 18944) in bf16 with SDPA attention, plus the linear head; one
  pair = two sequences (prompt + chosen, prompt + rejected);
- embeddings: an all-MiniLM-L6-v2-shaped encoder (hidden 384, 6 layers) in fp16.

    python -m bench.probe_gpu_scoring [--out results.json]
Not run by `python -m bench` (its name does not start with bench_).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any


def _timed(fn: Any, iters: int) -> float:
    import torch

    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / iters


def reward_model(results: dict[str, Any]) -> None:
    import torch
    from transformers import Qwen2Config, Qwen2Model

    cfg = Qwen2Config(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                      num_attention_heads=28, num_key_value_heads=4, vocab_size=152064,
                      max_position_embeddings=32768)
    cfg._attn_implementation = "sdpa"
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = Qwen2Model(cfg).eval()
        head = torch.nn.Linear(cfg.hidden_size, 1)
    torch.set_default_dtype(torch.float32)
    params = sum(p.numel() for p in model.parameters())
    results["reward_params"] = params
    for seq in (512, 1024, 2048):
        for bs in (8, 16):
            ids = torch.randint(0, cfg.vocab_size, (bs, seq), device="cuda")

            @torch.inference_mode()
            def fwd(ids: Any = ids) -> Any:
                h = model(input_ids=ids).last_hidden_state
                return head(h[:, -1])

            s = _timed(fwd, 5)
            seqs = bs / s
            tflops = 2 * params * bs * seq / s / 1e12
            results[f"reward_seq{seq}_bs{bs}"] = {"seqs_per_s": round(seqs, 1),
                                                  "pairs_per_s": round(seqs / 2, 1),
                                                  "tflops_weights": round(tflops, 1)}
            print(f"reward 7B seq {seq} batch {bs}: {seqs:.1f} seq/s = {seqs / 2:.1f} pairs/s "
                  f"({tflops:.0f} TFLOP/s in the weight matmuls)", flush=True)


def embedder(results: dict[str, Any]) -> None:
    import torch
    from transformers import BertConfig, BertModel

    cfg = BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                     intermediate_size=1536, vocab_size=30522)
    with torch.device("cuda"):
        model = BertModel(cfg).half().eval()
    for seq in (64, 128, 256):
        bs = 512
        ids = torch.randint(0, cfg.vocab_size, (bs, seq), device="cuda")

        @torch.inference_mode()
        def fwd(ids: Any = ids) -> Any:
            return model(input_ids=ids).last_hidden_state.mean(1)

        s = _timed(fwd, 10)
        results[f"embed_seq{seq}"] = {"texts_per_s": round(bs / s)}
        print(f"MiniLM-L6 seq {seq} batch {bs}: {bs / s:.0f} texts/s", flush=True)


def main(argv: list[str]) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="probe_gpu_scoring")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    import torch

    results: dict[str, Any] = {"device": torch.cuda.get_device_name(0),
                               "torch": torch.__version__}
    print(results, flush=True)
    embedder(results)
    torch.cuda.empty_cache()
    reward_model(results)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=2)
    return results


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
