"""`curate similar` end to end, and the exact / approximate index crossover.

1. `--n` prompts (default 100,000), `--repeat` of them (30%) exact repeats of others,
   each ~12 words cut from hh-rlhf text (generated when ../shared/data is absent);
   responses from a pool of 100 pairs. Ingest, then `curate similar` with a fresh
   cache: embeddings computed must equal the unique texts (the repeats cost no model
   time); the baseline, embedding every row's texts, is costed at the measured rate.
   Then a rerun with another threshold into another folder: nothing computed.
2. Index crossover: faiss exact (IndexFlatIP) against IVF (curate.index.dense) at
   growing sizes, on the run's own prompt embeddings where there are enough, then on
   clustered 384-d unit vectors (20 near duplicates per cluster): seconds for a k=10
   self-search, and IVF's recall of the exact pairs with cosine >= 0.9 and of each
   row's nearest other.

    python -m bench bench_similar
    python -m bench.bench_similar [--n 100000] [--repeat 0.3] [--sizes 10000,20000,40000]
                                  [--synthetic-sizes 40000,100000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.bench_embed import make_texts


def _rows(n: int, repeat: float, seed: int = 0) -> tuple[list[dict], int]:
    rng = random.Random(seed)
    n_unique = n - int(n * repeat)
    prompts = make_texts(n_unique, 12, seed=seed)
    if len(set(prompts)) != n_unique:  # cut again until every prompt is distinct
        prompts = list(dict.fromkeys(prompts))
        while len(prompts) < n_unique:
            prompts = list(dict.fromkeys(prompts + make_texts(n_unique - len(prompts), 12,
                                                              seed=len(prompts))))
        prompts = prompts[:n_unique]
    order = prompts + [rng.choice(prompts) for _ in range(n - n_unique)]
    rng.shuffle(order)
    answers = make_texts(200, 25, seed=seed + 1)
    rows = [{"id": f"r{i}", "prompt": p, "chosen": answers[i % 100],
             "rejected": answers[100 + i % 100]} for i, p in enumerate(order)]
    return rows, n_unique


def _end_to_end(tmp: Path, n: int, repeat: float) -> dict:
    from curate.engine import get_engine
    from curate.models.embedder import EmbedSettings
    from curate.stages.ingest import ingest
    from curate.stages.similar import SimilarConfig, similar

    rows, n_unique = _rows(n, repeat)
    src = tmp / "prompts.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    engine = get_engine("local")
    t = time.perf_counter()
    ingest("generic", [str(src)], tmp / "in", engine=engine)
    print(f"ingest {n} rows: {time.perf_counter() - t:.1f} s", flush=True)
    cache = tmp / "cache"
    t = time.perf_counter()
    m = similar([tmp / "in"], tmp / "out", embed=EmbedSettings(cache=cache), engine=engine)
    wall = time.perf_counter() - t
    e = m["embeddings"]
    texts_per_row = 3
    rate = e["computed"] / e["embed_seconds"]
    print(f"similar: {m['rows_in']} rows ({n_unique} unique prompts + 200 responses), "
          f"{wall:.1f} s end to end; embeddings: unique texts {e['unique_texts']}, computed "
          f"{e['computed']} in {e['embed_seconds']:.1f} s ({rate:.0f} texts/s, "
          f"{e['model']['precision']}), from store {e['from_store']}")
    print(f"  embeddings computed == unique texts: {e['computed'] == e['unique_texts']}; "
          f"repeats cost no model time")
    print(f"  baseline (embed every row's prompt and responses): {n * texts_per_row} texts, "
          f"about {n * texts_per_row / rate:.0f} s at the same rate")
    print(f"  neighbours: {m['neighbours']}; steps {m['steps']}; "
          f"rejected {m['rejected_by_reason']}")
    t = time.perf_counter()
    m2 = similar([tmp / "in"], tmp / "out-0.9", config=SimilarConfig(threshold=0.9),
                 embed=EmbedSettings(cache=cache), engine=engine)
    e2 = m2["embeddings"]
    print(f"rerun --threshold 0.9 into another folder: {time.perf_counter() - t:.1f} s, "
          f"computed {e2['computed']}, model loaded {e2['model_loaded']}, "
          f"rejected {m2['rejected_by_reason']}", flush=True)
    return m


def clustered(n: int, dim: int = 384, per: int = 20, spread: float = 0.3,
              seed: int = 0) -> np.ndarray:
    """Unit vectors in clusters of `per` near duplicates around random centres."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((n // per + 1, dim)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    x = np.repeat(c, per, axis=0)[:n]
    x += spread * rng.standard_normal(x.shape).astype(np.float32) / np.sqrt(dim)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x[rng.permutation(n)]


def _crossover(vectors: np.ndarray, sizes: list[int]) -> None:
    from curate.index import dense

    for size in sizes:
        if size > len(vectors):
            break
        x = vectors[:size]
        t = time.perf_counter()
        ex = dense.knn(x, 10, exact_max=size)
        t_exact = time.perf_counter() - t
        t = time.perf_counter()
        ap = dense.knn(x, 10, exact_max=0)
        t_ivf = time.perf_counter() - t
        e_ids, _ = dense.best_other(ex)
        a_ids, _ = dense.best_other(ap)
        pairs = len(dense.pairs_above(ex, 0.9)[0])
        print(f"  n={size:>7}: exact {t_exact:6.1f} s, {ap.method} {t_ivf:6.1f} s "
              f"(x{t_exact / t_ivf:.2f}); IVF recall of the {pairs} pairs >= 0.9: "
              f"{dense.pair_recall(ap, ex, 0.9):.4f}, of the nearest other: "
              f"{(e_ids == a_ids).mean():.4f}", flush=True)


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="bench_similar")
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--repeat", type=float, default=0.3)
    ap.add_argument("--sizes", default="10000,20000,40000,70000")
    ap.add_argument("--synthetic-sizes", default="20000,40000,100000")
    ap.add_argument("--keep", type=Path, default=None, help="work here and keep the files")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(f"load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as t:
        tmp = args.keep or Path(t)
        tmp.mkdir(parents=True, exist_ok=True)
        m = _end_to_end(tmp, args.n, args.repeat)
        import pyarrow.parquet as pq

        from curate.models.embedder import hashes_to_numpy

        emb = pq.read_table(tmp / "out" / m["embeddings"]["file"])
        dim = int(json.loads(emb.schema.metadata[b"curate.embeddings"])["dim"])
        hashes = hashes_to_numpy(emb["text_hash"])
        vec = np.frombuffer(emb["embedding"].combine_chunks().buffers()[1],
                            dtype=np.float16).reshape(-1, dim).astype(np.float32)
        del hashes
        rng = np.random.default_rng(0)
        vec = vec[rng.permutation(len(vec))]
        print("index crossover on the run's embeddings (k=10 self-search):")
        _crossover(vec, [int(s) for s in args.sizes.split(",") if s])
    sizes = [int(s) for s in args.synthetic_sizes.split(",") if s]
    if sizes:
        print("index crossover on clustered 384-d vectors (k=10 self-search):")
        _crossover(clustered(max(sizes)), sizes)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
