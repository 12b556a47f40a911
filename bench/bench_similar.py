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
    python -m bench.bench_similar --driver-rows 1000000,3000000 [--fast-index]

3. `--driver-rows`: the driver's memory in similar's global step (`decide`) at N rows,
   each size in a fresh subprocess, peak RSS (ru_maxrss) measured: a keys table as pass 1
   makes it (pair_id 64 hex chars, three 16-byte text hashes, no image), every prompt
   unique (the worst case), random unit float16 prompt vectors fed in place of the model
   (`ensure_embeddings` returns them) and one float per row from the map step in place of
   `response_cosines`; the kNN (IVF above 20k), union-find, per-row arrays and the
   decision table are the real code. `--fast-index` trains the IVF cells with 1 k-means
   iteration and searches nprobe=1 (the memory is the same, the time a fraction).
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


def _driver_child(n: int, fast: bool) -> None:
    """One size, in this (fresh) process: prints a JSON line with the peak RSS."""
    import resource

    import pyarrow as pa

    from curate.index import dense
    from curate.models import embedder as E
    from curate.models.pair_cosine import ResponseCosines
    from curate.stages import similar as S

    def rss() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    base = rss()
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    hashes = rng.integers(0, 256, (n, 3, 16), dtype=np.uint8)
    ph = np.ascontiguousarray(hashes[:, 0]).view("S16").reshape(-1)
    ch = np.ascontiguousarray(hashes[:, 1]).view("S16").reshape(-1)
    rh = np.ascontiguousarray(hashes[:, 2]).view("S16").reshape(-1)
    del hashes
    pair_ids = pa.array(np.char.mod("%064x", np.arange(n)).astype(object), pa.string())
    keys = pa.table({"pair_id": pair_ids, "prompt_hash": E._hashes_to_arrow(ph),
                     "chosen_hash": E._hashes_to_arrow(ch),
                     "rejected_hash": E._hashes_to_arrow(rh),
                     "phashes": pa.array([[]] * n, pa.list_(pa.uint64()))})
    del pair_ids, ph, ch, rh
    keys_rss = rss()

    def fake_prompts(hashes: np.ndarray, *a: object, **k: object) -> tuple[E.EmbeddingTable,
                                                                              str]:
        uniq = np.unique(hashes)
        vecs = np.empty((len(uniq), 384), dtype=np.float16)
        for a0 in range(0, len(uniq), 262_144):  # random unit vectors, a block at a time
            v = rng.standard_normal((min(262_144, len(uniq) - a0), 384)).astype(np.float32)
            vecs[a0:a0 + len(v)] = v / np.linalg.norm(v, axis=1, keepdims=True)
        return E.EmbeddingTable(uniq, vecs, {"unique_texts": len(uniq), "from_store": 0,
                                             "computed": len(uniq)}), "bench-fp32"

    def fake_responses(ch: np.ndarray, rh: np.ndarray, *a: object,
                       **k: object) -> ResponseCosines:
        return ResponseCosines(rng.uniform(-1, 1, len(ch)).astype(np.float32),
                               {"model_loaded": False}, np.empty(0, "S16"), np.unique(ch[:1]))

    S.ensure_embeddings = fake_prompts  # type: ignore[assignment]
    S.response_cosines = fake_responses  # type: ignore[assignment]
    if fast:
        dense.NITER = 1
    cfg = S.SimilarConfig(nprobe=1 if fast else dense.DEFAULT_NPROBE)
    t = time.perf_counter()
    d = S.decide(keys, cfg, E.EmbedSettings(cache=None), [], Path(tempfile.gettempdir()))
    print(json.dumps({"rows": n, "peak_rss": rss(), "start_rss": base, "keys_rss": keys_rss,
                      "keys_bytes": keys.nbytes, "decisions_bytes": d.table.nbytes,
                      "decide_s": round(time.perf_counter() - t, 1),
                      "total_s": round(time.perf_counter() - t0, 1),
                      "method": d.extra["neighbours"]["method"]}), flush=True)


def _driver_memory(sizes: list[int], fast: bool) -> None:
    import subprocess
    import sys

    print(f"similar's driver memory (decide), peak RSS in a fresh process per size"
          f"{' (--fast-index: 1 k-means iteration, nprobe 1)' if fast else ''}:")
    for n in sizes:
        cmd = [sys.executable, "-m", "bench.bench_similar", "--driver-child", str(n)]
        if fast:
            cmd.append("--fast-index")
        res = subprocess.run(cmd, capture_output=True, text=True)
        line = (res.stdout.strip().splitlines() or [""])[-1]
        if res.returncode != 0 or not line.startswith("{"):
            print(f"  n={n:>9}: failed (exit {res.returncode}): {res.stderr.strip()[-400:]}")
            continue
        r = json.loads(line)
        above = r["peak_rss"] - r["start_rss"]
        print(f"  n={n:>9}: peak RSS {r['peak_rss'] / 1e9:.2f} GB ({above / n:.0f} B/row "
              f"above the interpreter's {r['start_rss'] / 1e6:.0f} MB; keys table "
              f"{r['keys_bytes'] / n:.0f} B/row, decisions {r['decisions_bytes'] / n:.0f} "
              f"B/row); decide {r['decide_s']} s, {r['method']}", flush=True)
        print(f"    {line}")


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="bench_similar")
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--repeat", type=float, default=0.3)
    ap.add_argument("--sizes", default="10000,20000,40000,70000")
    ap.add_argument("--synthetic-sizes", default="20000,40000,100000")
    ap.add_argument("--keep", type=Path, default=None, help="work here and keep the files")
    ap.add_argument("--driver-rows", default="",
                    help="measure decide's driver memory at these row counts (only that)")
    ap.add_argument("--fast-index", action="store_true")
    ap.add_argument("--driver-child", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.driver_child:
        _driver_child(args.driver_child, args.fast_index)
        return
    if args.driver_rows:
        _driver_memory([int(s) for s in args.driver_rows.split(",") if s], args.fast_index)
        return
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
