"""K-fold surrogates: the sequential local run against parallel folds on Ray, same machine.

`curate reward --kfold K` on hh-rlhf pairs (the first `--n` of harmless-base-test), once
with the local engine (folds one after another in this process) and once on a private
local Ray with `--workers` CPUs (an actor per fold); each run has a feature cache of
its own, so both compute every feature. With a frozen backbone (`--surrogate frozen`)
the features dominate and the first fold computes them alone, so a warm rerun of each
(features cached, heads only) is timed too. Reports wall times, per-fold seconds and
where each fold ran, and the largest difference between the two runs' rewards (0: the
same bits).

    python -m bench bench_kfold                               # K=5, 500 pairs, frozen
    python -m bench.bench_kfold --surrogate full --n 64 --k 2 --max-length 48
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.bench_quality import HH

OUT = Path(__file__).parent / "out" / "kfold"


def _config(work: Path, kind: str, max_length: int, cache: Path) -> Path:
    cfg: dict[str, Any] = {"max_length": max_length, "min_prompt_tokens": 16,
                           "feature_cache": str(cache)}
    if kind == "frozen":
        cfg.update(freeze="backbone", stages=[{"name": "all", "data": "all"}])
    else:  # the whole MiniLM, one epoch: no feature cache, every fold at once
        cfg.update(freeze="none", batch_size=16,
                   stages=[{"name": "all", "data": "all", "lr": 3e-5, "epochs": 1}])
    path = work / f"rm-{cache.name}.json"
    path.write_text(json.dumps(cfg))
    return path


def _run(data: Path, out: Path, cfg: Path, k: int, engine: Any) -> tuple[float, dict[str, Any]]:
    from curate.stages.reward import make_scorer, reward

    t0 = time.perf_counter()
    scorer = make_scorer([data], "minilm", kfold=k, train_config=cfg)
    manifest = reward([data], out, scorer=scorer, engine=engine, force=True)
    return time.perf_counter() - t0, manifest


def _rewards(out: Path) -> dict[str, tuple[float, float]]:
    from curate import dataset as D

    t = D.Dataset.open(out).read(columns=["pair_id", "chosen_reward", "rejected_reward"])
    return {p: (c, r) for p, c, r in zip(t["pair_id"].to_pylist(), t["chosen_reward"].to_pylist(),
                                         t["rejected_reward"].to_pylist(), strict=True)}


def main(argv: list[str] | None = None) -> None:
    from curate.engine import get_engine
    from curate.stages.ingest import ingest

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500, help="pairs (the first N of the file)")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--surrogate", choices=["frozen", "full"], default="frozen")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--workers", type=int, default=2, help="Ray CPUs (one fold actor each)")
    ap.add_argument("--local-threads", type=int, default=None,
                    help="torch threads of the local run (default: torch's, one per core; "
                    "a Ray actor has one per CPU it holds)")
    args = ap.parse_args(argv)
    if args.local_threads:
        import torch

        torch.set_num_threads(args.local_threads)
    work = OUT / f"{args.surrogate}-{args.n}-k{args.k}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    with gzip.open(HH, "rt") as src, open(work / "hh.jsonl", "w") as dst:
        dst.writelines(itertools.islice(src, args.n))
    local_engine = get_engine("local", workers=1)
    ingest("hh-rlhf", [str(work / "hh.jsonl")], work / "hh", engine=local_engine)
    data = work / "hh"
    runs: dict[str, tuple[float, dict[str, Any]]] = {}
    ray_engine = get_engine("ray", workers=args.workers)
    try:
        for name, engine in (("local", local_engine), ("ray", ray_engine)):
            cfg = _config(work, args.surrogate, args.max_length, work / f"features-{name}")
            runs[name] = _run(data, work / name, cfg, args.k, engine)
            if args.surrogate == "frozen":  # heads only: every feature is cached now
                runs[f"{name}, warm"] = _run(data, work / f"{name}-warm", cfg, args.k, engine)
    finally:
        ray_engine.close()
    base = _rewards(work / "local")
    for name, (seconds, m) in runs.items():
        got = _rewards(work / name.replace(", warm", "-warm"))
        diff = max(abs(a - b) for p in base for a, b in zip(base[p], got[p], strict=True))
        folds = m["reward"]["kfold"]
        pids = {f["pid"] for f in folds}
        where = "this process" if pids == {os.getpid()} else f"{len(pids)} other processes"
        threads = sorted({f["threads"] for f in folds})
        accuracy = np.mean([f["oof_accuracy"] for f in folds])
        print(f"{name:11s} {seconds:7.1f}s wall; folds {[f['seconds'] for f in folds]} s, "
              f"in {where}, torch threads {threads}; max |reward - local| {diff:.3g}; "
              f"out-of-fold accuracy {accuracy:.3f}", flush=True)


if __name__ == "__main__":
    main()
