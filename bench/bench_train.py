"""Reward-model training throughput (pairs/s, tokens/s, token efficiency) and peak memory,
MiniLM on this CPU.

Each configuration runs `curate.train.train_reward_model` in a fresh process (so
its peak RSS is its own) on the first N hh-rlhf harmless-base pairs:

1. full fine-tuning, fp32, padded batches: the baseline;
2. the same, packed (one row per micro-batch, block-diagonal attention): ratio to 1;
3. packed with a token budget: 4x the pairs per optimizer step, split into micro-batches
   of at most --max-tokens tokens: ratio to 1;
4. full fine-tuning, bf16 autocast (when the CPU has native bf16), packed: ratio to 2;
5. frozen backbone, cold feature cache (one forward per sequence, then the head);
6. frozen backbone, warm cache (what epochs, reruns and k-fold folds pay): ratio to 5.

    python -m bench bench_train
    python -m bench.bench_train --pairs 128 --max-length 64
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HH = Path(os.environ.get("CURATE_SHARED_DATA", ROOT.parent / "shared" / "data")) \
    / "hh-rlhf" / "harmless-base-test.jsonl.gz"

CHILD = r"""
import json, sys, time
from curate.train import train_reward_model
cfg = json.loads(sys.argv[3])
m = train_reward_model(sys.argv[1], "minilm", sys.argv[2], cfg)
print("RESULT " + json.dumps({k: m.get(k) for k in (
    "seconds", "train_seconds", "feature_seconds", "head_seconds", "pairs_per_second",
    "tokens_per_second", "token_efficiency", "real_tokens", "computed_tokens", "micro_batches",
    "attention", "peak_memory_mb", "optimizer_steps", "bf16", "feature_cache")}))
"""


def _run(data: Path, out: Path, cfg: dict, threads: int | None) -> dict:
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    proc = subprocess.run([sys.executable, "-c", CHILD, str(data), str(out), json.dumps(cfg)],
                          capture_output=True, text=True, check=False, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"benchmark child failed:\n{proc.stderr[-3000:]}")


def _data(tmp: Path, pairs: int) -> Path:
    import pyarrow.parquet as pq

    from curate.engine import get_engine
    from curate.stages.ingest import ingest
    from curate.train.data import load_pairs

    if not HH.exists():
        raise SystemExit(f"bench_train needs {HH} (see ../shared/data/README.md)")
    ingest("hh-rlhf", [str(HH)], tmp / "hh", engine=get_engine("local", workers=1))
    table = load_pairs(tmp / "hh").slice(0, pairs)
    (tmp / "subset").mkdir()
    pq.write_table(table, tmp / "subset" / "part-00000.parquet")
    return tmp / "subset"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="bench_train")
    ap.add_argument("--pairs", type=int, default=256)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=4096,
                    help="token budget of the packed + budget run (micro-batch tokens)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (OMP_NUM_THREADS) of each run; default: torch's choice")
    args = ap.parse_args(argv)
    from curate.train.trainer import use_bf16

    base = {"max_length": args.max_length, "batch_size": args.batch_size, "warmup_ratio": 0.0,
            "stages": [{"name": "all", "data": "all", "lr": 3e-5, "epochs": 1}]}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        data = _data(tmp, args.pairs)
        cache = str(tmp / "features")
        full = {**base, "freeze": "none", "bf16": False}
        runs = [("full padded", {**full, "packing": "off"}),
                ("full packed", {**full, "packing": "on"}),
                ("full packed+budget", {**full, "packing": "on", "grad_accum": 4,
                                        "max_tokens_per_batch": args.max_tokens})]
        if use_bf16("auto"):
            runs.append(("full packed bf16", {**full, "packing": "on", "bf16": True}))
        frozen = {**base, "freeze": "backbone", "feature_cache": cache, "head_epochs": 1}
        runs += [("frozen, cold cache", frozen), ("frozen, warm cache", frozen)]
        results = {}
        print(f"{args.pairs} hh-rlhf pairs, max_length {args.max_length}, batch "
              f"{args.batch_size}, 1 epoch; {os.cpu_count()} CPUs, threads "
              f"{args.threads or 'default'}, load average {os.getloadavg()[0]:.1f}", flush=True)
        print(f"{'run':22} {'pairs/s':>9} {'tokens/s':>9} {'tok eff':>8} {'wall s':>8} "
              f"{'peak MB':>8}  ratio", flush=True)
        for i, (name, cfg) in enumerate(runs):
            r = _run(data, tmp / f"out{i}", cfg, args.threads)
            results[name] = r
            pps = r["pairs_per_second"]  # training (frozen: features + head), not load/save
            ref = {"full packed": "full padded", "full packed+budget": "full padded",
                   "full packed bf16": "full packed",
                   "frozen, warm cache": "frozen, cold cache"}.get(name)
            ratio = f"x{pps / results[ref]['pairs_per_second']:.2f} vs {ref}" if ref else ""
            tps = f"{r['tokens_per_second']:9.0f}" if r.get("tokens_per_second") else f"{'-':>9}"
            eff = f"{r['token_efficiency']:8.3f}" if r.get("token_efficiency") else f"{'-':>8}"
            print(f"{name:22} {pps:9.2f} {tps} {eff} {r['seconds']:8.1f} "
                  f"{r['peak_memory_mb']:8.0f}  {ratio}", flush=True)
        out = ROOT / "bench" / "out"
        out.mkdir(exist_ok=True)
        (out / "bench_train.json").write_text(json.dumps(
            {"args": vars(args), "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
