"""`curate shard` on the local engine: wall time and peak RSS, one code tree against another.

Builds `bench_recipe`'s corpus (`--rows` pairs, 70% with a 512-1024 px photo), ingests
it once, then runs `curate shard` through the CLI, as a user would, on each code tree:
this checkout, and every `--compare` folder (another checkout of the package, e.g. the
commit before a change, `git archive REV | tar -x -C /tmp/old`), in turns, `--repeat`
times each, so both figures come from the same machine in the same minutes. It reports
the best and the mean wall time and the peak RSS of the whole process tree, and checks
that every tree wrote the same shard and export files (names and sha256).

    python -m bench bench_shard --rows 8000 --compare /tmp/curate-old
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def corpus(work: Path, rows: int, seed: int) -> Path:
    """The ingested corpus of `rows` pairs (built once, kept in `work`)."""
    from bench.bench_ingest import peak_tree_rss
    from bench.bench_recipe import build_corpus

    ingested = work / "ingest"
    if (ingested / "manifest.json").is_file():
        return ingested
    raw = work / "raw.parquet"
    if not raw.is_file():
        build_corpus(raw, rows, seed)
    peak_tree_rss([sys.executable, "-m", "curate.cli", "ingest", "generic", str(raw), "--out",
                   str(ingested), "--source", "seed", "--quiet", "--force"],
                  env={**os.environ, "PYTHONPATH": str(ROOT)}, quiet=True, interval=0.5)
    return ingested


def run_shard(code: Path, src: Path, out: Path, args: list[str]) -> dict[str, Any]:
    """`curate shard` with the package at `code`: seconds, peak RSS and the files written."""
    from bench.bench_ingest import peak_tree_rss

    # -P: the package comes from PYTHONPATH, not from the working directory
    cmd = [sys.executable, "-P", "-m", "curate.cli", "shard", str(src), "--out", str(out),
           *args, "--quiet", "--force"]
    peak, seconds = peak_tree_rss(cmd, env={**os.environ, "PYTHONPATH": str(code)},
                                  quiet=True, interval=0.05)
    m = json.loads((out / "manifest.json").read_text())
    return {"seconds": seconds, "peak_rss_mb": peak / 2**20, "files": m["files"],
            "steps": m.get("steps", {})}


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=8000, help="corpus size (pairs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="runs per code tree")
    ap.add_argument("--compare", type=Path, action="append", default=[],
                    help="another code tree (a folder holding the curate package); repeatable")
    ap.add_argument("--format", default="trl", help="export formats, comma-separated ('' none)")
    ap.add_argument("--workers", type=int, default=None, help="the local engine's workers")
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "out" / "shard")
    args = ap.parse_args(argv)
    work = args.work / f"rows-{args.rows}"
    work.mkdir(parents=True, exist_ok=True)
    src = corpus(work, args.rows, args.seed)
    shard_args = ["--shards", "8", "--eval-fraction", "0.05"]
    for f in filter(None, args.format.split(",")):
        shard_args += ["--format", f]
    if args.workers:
        shard_args += ["--workers", str(args.workers)]
    trees = [ROOT, *(p.resolve() for p in args.compare)]
    runs: dict[Path, list[dict[str, Any]]] = {t: [] for t in trees}
    for r in range(args.repeat):
        for k, tree in enumerate(trees):
            rec = run_shard(tree, src, work / f"out-{k}", shard_args)
            runs[tree].append(rec)
            print(json.dumps({"tree": str(tree), "run": r, "seconds": round(rec["seconds"], 2),
                              "peak_rss_mb": round(rec["peak_rss_mb"]),
                              "steps": {s: round(v, 2) for s, v in rec["steps"].items()}}),
                  flush=True)
    rows_in = json.loads((work / "out-0" / "manifest.json").read_text())["rows_in"]
    print(f"\ncurate shard {' '.join(shard_args)}: {rows_in} rows, best / mean of "
          f"{args.repeat}")
    print(f"{'code tree':<40} {'best s':>8} {'mean s':>8} {'peak RSS MB':>12}")
    for tree, recs in runs.items():
        secs = [x["seconds"] for x in recs]
        print(f"{str(tree)[-40:]:<40} {min(secs):>8.2f} {statistics.mean(secs):>8.2f} "
              f"{max(x['peak_rss_mb'] for x in recs):>12.0f}")
    files = {t: recs[-1]["files"] for t, recs in runs.items()}
    same = all(f == files[ROOT] for f in files.values())
    print("same files (names and sha256) in every tree:", same)


if __name__ == "__main__":
    main(sys.argv[1:])
