"""Does `curate reward` make the training data better? Label noise on real hh-rlhf pairs.

For each noise rate: a seeded 80/20 split by pair of the hh-rlhf harmless-base pairs;
a seeded share of the train pairs gets chosen/rejected swapped; then, all through the
CLI (`curate ingest`, `curate reward --kfold 5 --disagree`, `curate train`):

- *clean*: a reward model trained on the train pairs as they were;
- *noisy raw*: trained on the noisy train pairs;
- *curated*: trained on what `curate reward` kept of the noisy pairs (default rule:
  `--min-precision 0.6`; it abstains when the surrogate cannot tell the noise apart);
- *old rule*: `--min-precision 0` (reject every pair the surrogate disagrees with).

Every model is a frozen MiniLM with a linear head (`recipes/train/minilm-frozen.yaml`)
scored on the clean held-out pairs; accuracy with a 95% Wilson interval. The table also
gives the noise rate of the kept set, the share of clean pairs kept, and the curate
manifest's own estimates (surrogate out-of-fold accuracy, estimated noise rate,
expected precision of the rejections).

`--surrogate full` fine-tunes the whole MiniLM in each fold (slow on a CPU: use
`--max-length 64`); `--surrogate frozen` (default) trains heads on cached features.

    python -m bench bench_quality
    python -m bench.bench_quality --noise 0.3 --surrogate full --max-length 64
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from curate.scoring.calibration import wilson

ROOT = Path(__file__).resolve().parents[1]
HH = Path(os.environ.get("CURATE_SHARED_DATA", ROOT.parent / "shared" / "data")) \
    / "hh-rlhf" / "harmless-base-test.jsonl.gz"
FROZEN = ROOT / "recipes" / "train" / "minilm-frozen.yaml"


def cli(*args: Any) -> None:
    """Run `curate ARGS` in a child process, as a user would; raise on failure."""
    cmd = [sys.executable, "-m", "curate.cli", *[str(a) for a in args]]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stderr[-3000:]}")


def write_split(work: Path, seed: int = 0) -> tuple[Path, Path]:
    """Ingest hh-rlhf, split 80/20 by pair (seeded); write train/test as parquet."""
    import pyarrow.parquet as pq

    from curate.train.data import load_pairs, split_pairs

    if not (work / "hh" / "manifest.json").is_file():
        cli("ingest", "hh-rlhf", HH, "--out", work / "hh", "--quiet")
    train, test = split_pairs(load_pairs(work / "hh"), 0.2, seed=seed)
    pq.write_table(train, work / "train.parquet")
    pq.write_table(test, work / "test.parquet")
    return work / "train.parquet", work / "test.parquet"


def write_noisy(train: Path, out: Path, fraction: float, seed: int) -> set[str]:
    """train's pairs with chosen/rejected swapped on a seeded `fraction`, in the generic
    format (id, prompt, chosen, rejected); returns the flipped ids."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = pq.read_table(train, columns=["pair_id", "prompt", "chosen", "rejected"])
    n = t.num_rows
    flip = np.zeros(n, dtype=bool)
    flip[np.random.default_rng(seed).choice(n, size=round(fraction * n), replace=False)] = True
    c, r = t["chosen"].to_pylist(), t["rejected"].to_pylist()
    ids = t["pair_id"].to_pylist()
    pq.write_table(pa.table({
        "id": ids, "prompt": t["prompt"],
        "chosen": [b if f else a for a, b, f in zip(c, r, flip, strict=True)],
        "rejected": [a if f else b for a, b, f in zip(c, r, flip, strict=True)]}), out)
    return {i for i, f in zip(ids, flip, strict=True) if f}


def train_eval(data: Path, test: Path, out: Path, cache: Path) -> dict[str, Any]:
    """`curate train` a frozen MiniLM head on `data`, scored on `test`."""
    if not (out / "metrics.json").is_file():
        cli("train", data, "--model", "minilm", "--out", out, "--config", FROZEN,
            "--eval", test, "--feature-cache", cache, "--quiet")
    ev = json.loads((out / "metrics.json").read_text())["eval"]
    k = round(ev["accuracy"] * ev["pairs"])
    lo, hi = wilson(k, ev["pairs"])
    return {"accuracy": ev["accuracy"], "ci95": [lo, hi], "pairs": ev["pairs"]}


def surrogate_config(work: Path, kind: str, max_length: int, cache: Path) -> Path:
    if kind == "frozen":
        cfg = {"freeze": "backbone", "max_length": max_length, "min_prompt_tokens": 16,
               "stages": [{"name": "all", "data": "all"}], "head_lr": 3e-3,
               "head_epochs": 20, "head_batch_size": 128, "feature_cache": str(cache)}
    else:  # full fine-tuning, one epoch, head first fitted on frozen features (LP-FT)
        cfg = {"freeze": "none", "probe_head": True, "max_length": max_length,
               "min_prompt_tokens": 16, "batch_size": 16, "warmup_ratio": 0.1,
               "stages": [{"name": "all", "data": "all", "lr": 3e-5, "epochs": 1}],
               "feature_cache": str(cache)}
    path = work / f"surrogate-{kind}-{max_length}.json"
    path.write_text(json.dumps(cfg))
    return path


def kept_stats(folder: Path, flipped: set[str], n_clean: int) -> dict[str, Any]:
    from curate import dataset as D

    ds = D.Dataset.open(folder)
    kept = ds.read(columns=["source_id"])["source_id"].to_pylist()
    noisy_kept = sum(1 for i in kept if i in flipped)
    info = ds.manifest["reward"]
    q = info.get("quality", {})
    rejected = ds.manifest["rows_in"] - len(kept)
    return {"kept": len(kept), "kept_noise": noisy_kept / max(1, len(kept)),
            "clean_kept": (len(kept) - noisy_kept) / n_clean,
            "rejected": rejected,
            "real_precision": (len(flipped) - noisy_kept) / rejected if rejected else None,
            "abstained": q.get("abstained"), "abstain_reason": q.get("abstain_reason"),
            "oof_accuracy": q.get("oof_accuracy"), "oof_accuracy_ci95": q.get("oof_accuracy_ci95"),
            "estimated_noise_rate": q.get("estimated_noise_rate"),
            "estimated_noise_rate_ci95": q.get("estimated_noise_rate_ci95"),
            "expected_precision": q.get("expected_precision"),
            "expected_precision_lower": q.get("expected_precision_lower"),
            "marked_by_rules": q.get("marked_by_rules"), "warnings": q.get("warnings", []),
            "validation": q.get("validation")}


def run_level(work: Path, train: Path, test: Path, noise: float, surrogate: str,
              max_length: int, seed: int, kfold: int, extra: list[str]) -> dict[str, Any]:
    cache = work / "features"
    tag = f"n{round(noise * 100)}"
    flipped = write_noisy(train, work / f"{tag}.parquet", noise, seed)
    noisy = work / f"{tag}-noisy"
    if not (noisy / "manifest.json").is_file():
        cli("ingest", "generic", work / f"{tag}.parquet", "--out", noisy,
            "--source", "hh-rlhf-noisy", "--quiet")
    from curate import dataset as D

    n = D.Dataset.open(noisy).count()
    n_clean = n - len(flipped)
    cfg = surrogate_config(work, surrogate, max_length, cache)
    row: dict[str, Any] = {"noise": noise, "surrogate": surrogate, "pairs": n,
                           "flipped": len(flipped)}
    t0 = time.perf_counter()
    scored = work / f"{tag}-{surrogate}-default"
    scores = work / "score-cache"  # the second run reuses the first one's scores
    common = ["--model", "minilm", "--kfold", kfold, "--train-config", cfg, "--disagree",
              "--score-cache", scores, "--quiet", *extra]
    cli("reward", noisy, "--out", scored, *common)
    row["reward_seconds"] = round(time.perf_counter() - t0, 1)
    old = work / f"{tag}-{surrogate}-old"
    cli("reward", noisy, "--out", old, "--min-precision", 0, *common)
    row["curated"] = kept_stats(scored, flipped, n_clean)
    row["old_rule"] = kept_stats(old, flipped, n_clean)
    row["acc_noisy"] = train_eval(noisy, test, work / f"{tag}-rm-noisy", cache)
    row["acc_curated"] = train_eval(scored, test, work / f"{tag}-{surrogate}-rm-curated", cache)
    row["acc_old_rule"] = train_eval(old, test, work / f"{tag}-{surrogate}-rm-old", cache)
    return row


def fmt_acc(a: dict[str, Any]) -> str:
    return f"{a['accuracy']:.3f} [{a['ci95'][0]:.3f}, {a['ci95'][1]:.3f}]"


def print_table(clean: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    print(f"clean train -> held-out accuracy {fmt_acc(clean)} on {clean['pairs']} pairs")
    head = ("| noise | surrogate | rule | surrogate OOF acc | est. noise [95% CI] | "
            "exp. precision (lower bound) | real precision | rejected | kept-set noise | "
            "clean kept | held-out acc (noisy raw) | held-out acc (curated) |")
    print(head)
    print("|" + "|".join(["---"] * (head.count("|") - 1)) + "|")
    for r in rows:
        for rule, key, acc in (("default (0.6)", "curated", "acc_curated"),
                               ("--min-precision 0", "old_rule", "acc_old_rule")):
            s = r[key]
            ci = s["oof_accuracy_ci95"] or [math.nan, math.nan]
            oof = f"{s['oof_accuracy']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" \
                if s["oof_accuracy"] is not None else "-"
            nci = s["estimated_noise_rate_ci95"]
            est = f"{_num(s['estimated_noise_rate'])} [{nci[0]:.3f}, {nci[1]:.3f}]" \
                if nci else "-"
            prec = f"{_num(s['expected_precision'])} ({_num(s['expected_precision_lower'])})"
            rule_s = rule + (" (abstained)" if s["abstained"] else "")
            print(f"| {r['noise']:.0%} | {r['surrogate']} | {rule_s} | {oof} | {est} | {prec} "
                  f"| {_num(s['real_precision'])} "
                  f"| {s['rejected']} | {s['kept_noise']:.3f} (was {r['noise']:.3f}) | "
                  f"{s['clean_kept']:.1%} | {fmt_acc(r['acc_noisy'])} | {fmt_acc(r[acc])} |")


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--noise", type=float, nargs="+", default=[0.1, 0.2, 0.3])
    ap.add_argument("--surrogate", choices=["frozen", "full"], default="frozen")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--kfold", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None,
                    help="Working folder (kept; reruns reuse finished steps). "
                    "Default: a new temporary folder.")
    ap.add_argument("--json", type=Path, default=None, help="Also write the rows as JSON.")
    ap.add_argument("--reward-arg", action="append", default=[],
                    help="Extra option for `curate reward` (repeatable), e.g. --ensemble=3.")
    args = ap.parse_args(argv)
    if not HH.is_file():
        print(f"bench_quality: {HH} not found; skipped")
        return
    import tempfile

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-quality-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    train, test = write_split(work, args.seed)
    clean = _clean(work, train, test)
    rows = [run_level(work, train, test, p, args.surrogate, args.max_length, args.seed,
                      args.kfold, args.reward_arg) for p in args.noise]
    print_table(clean, rows)
    print(f"bench_quality: {time.perf_counter() - t0:.0f}s; work folder {work}")
    if args.json:
        args.json.write_text(json.dumps({"clean": clean, "rows": rows}, indent=2))


def _clean(work: Path, train: Path, test: Path) -> dict[str, Any]:
    clean = work / "clean"
    if not (clean / "manifest.json").is_file():
        write_noisy(train, work / "n0.parquet", 0.0, 0)
        cli("ingest", "generic", work / "n0.parquet", "--out", clean, "--source",
            "hh-rlhf-clean", "--quiet")
    return train_eval(clean, test, work / "rm-clean", work / "features")


if __name__ == "__main__":
    main(sys.argv[1:])
