"""The whole recipe at seed scale: ingest -> dedup -> similar -> decontam -> reward -> shard.

Builds a preference corpus offline, shaped like the Skywork-VL seed mix (70% of the
pairs with a photo), and runs every stage through the CLI on the local engine, as a
user would. Per stage it reports wall time, rows/s, the peak RSS of the stage's whole
process tree, the bytes it wrote, and what it found against what was planted.

The corpus (`--rows` pairs, seeded):
- texts stitched from real hh-rlhf sentences (prompts of 1-4 sentences, responses of
  2-8), so lengths and vocabulary are those of a real preference set;
- photos of 512-1024 px made from the scikit-image photos and the ukbench photos in
  ../shared/data by real transformations (crop, resize, small rotation, colour and
  contrast jitter, JPEG quality 70-95); like LLaVA-Critic's COCO images, each photo is
  asked about by about three different prompts;
- planted: exact copies of rows (5%), copies whose photo was re-encoded smaller and at
  another quality (5% of the photo rows: near duplicates), copies with chosen and
  rejected swapped (1%: label conflicts), text-only rows whose prompt is another's
  with one word dropped (3%: near-identical prompts), and text-only rows asking a
  VL-RewardBench prompt (1%: contamination, decontam runs against VL-RewardBench).

    python -m bench bench_recipe --rows 12500,50000
    python -m bench.bench_recipe --rows 200000 --work /big/disk/recipe
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CURATE_SHARED_DATA", ROOT.parent / "shared" / "data"))
PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field",
          "immunohistochemistry", "retina", "colorwheel"]
PHOTO_SHARE = 0.7
PER_PHOTO = 3  # prompts asked about each photo
PLANTS = {"exact": 0.05, "near_image": 0.05, "conflict": 0.01, "near_prompt": 0.03,
          "eval": 0.01}
FROZEN = ROOT / "recipes" / "train" / "minilm-frozen.yaml"


# -- the corpus -------------------------------------------------------------------------
def sentences() -> list[str]:
    """The distinct sentences of the hh-rlhf conversations in ../shared/data."""
    out: set[str] = set()
    with gzip.open(SHARED / "hh-rlhf" / "harmless-base-test.jsonl.gz", "rt") as f:
        for line in f:
            rec = json.loads(line)
            for text in (rec["chosen"], rec["rejected"]):
                for turn in re.split(r"\n\n(?:Human|Assistant): ", text):
                    out.update(s.strip() for s in re.split(r"(?<=[.?!])\s+", turn)
                               if 20 <= len(s.strip()) <= 300)
    return sorted(out)


def _sources() -> list:
    import skimage.data
    from PIL import Image

    out = [Image.fromarray(getattr(skimage.data, n)()).convert("RGB") for n in PHOTOS]
    for p in sorted((SHARED / "ukbench").glob("ukbench*.jpg")):
        if re.fullmatch(r"ukbench\d+\.jpg", p.name):  # the originals, not the variants
            out.append(Image.open(p).convert("RGB"))
    return out


_SRC: list = []


def photo(seed: int) -> bytes:
    """One photo of 512-1024 px: a transformed crop of a source photo (seeded)."""
    from PIL import Image, ImageEnhance

    if not _SRC:
        _SRC.extend(_sources())
    rng = np.random.default_rng(seed)
    src = _SRC[int(rng.integers(len(_SRC)))]
    cw, ch = (int(d * rng.uniform(0.5, 1.0)) for d in src.size)
    x0, y0 = int(rng.integers(0, src.width - cw + 1)), int(rng.integers(0, src.height - ch + 1))
    w = int(rng.integers(512, 1025))
    im = src.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, max(64, int(w * ch / cw))))
    im = im.rotate(float(rng.uniform(-8, 8)), resample=Image.BILINEAR, expand=False)
    im = ImageEnhance.Color(im).enhance(float(rng.uniform(0.6, 1.4)))
    im = ImageEnhance.Contrast(im).enhance(float(rng.uniform(0.7, 1.3)))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=int(rng.integers(70, 96)))
    return buf.getvalue()


def reencode(data: bytes, seed: int) -> bytes:
    """The same photo, resized to 60-90% and saved at another JPEG quality."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    im = Image.open(io.BytesIO(data))
    f = float(rng.uniform(0.6, 0.9))
    buf = io.BytesIO()
    im.resize((int(im.width * f), int(im.height * f))).save(
        buf, "JPEG", quality=int(rng.integers(60, 90)))
    return buf.getvalue()


def _eval_prompts() -> list[str]:
    out = []
    with open(SHARED / "vl-rewardbench" / "data.jsonl") as f:
        for line in f:
            q = json.loads(line).get("query")
            if isinstance(q, str) and len(q.split()) >= 6:
                out.append(q)
    return out


def build_corpus(path: Path, rows: int, seed: int = 0, workers: int = 2) -> dict[str, int]:
    """Write `rows` pairs to `path` (parquet: id, prompt, chosen, rejected, image);
    returns the planted counts."""
    import multiprocessing as mp

    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    sents = sentences()
    evals = _eval_prompts()
    planted = {k: round(v * rows) for k, v in PLANTS.items()}
    base = rows - sum(planted.values())

    def text(lo: int, hi: int) -> str:
        k = int(rng.integers(lo, hi + 1))
        return " ".join(sents[i] for i in rng.integers(len(sents), size=k))

    with_photo = rng.random(base) < PHOTO_SHARE
    n_photos = int(np.ceil(with_photo.sum() / PER_PHOTO))
    with mp.get_context("fork").Pool(workers) as pool:
        photos = pool.map(photo, [seed * 1_000_003 + i for i in range(n_photos)], chunksize=64)
    photo_of = np.full(base, -1)
    photo_of[with_photo] = rng.permutation(np.arange(with_photo.sum()) % n_photos)
    recs: list[dict[str, Any]] = []
    for i in range(base):
        recs.append({"id": f"b{i}", "prompt": text(1, 4), "chosen": text(2, 8),
                     "rejected": text(2, 8),
                     "image": photos[photo_of[i]] if photo_of[i] >= 0 else None})
    img_rows = [r for r in recs if r["image"] is not None]
    txt_rows = [r for r in recs if r["image"] is None]
    for j, i in enumerate(rng.choice(base, planted["exact"], replace=False)):
        recs.append({**recs[i], "id": f"exact{j}"})
    for j, i in enumerate(rng.choice(len(img_rows), planted["near_image"], replace=False)):
        r = img_rows[i]
        recs.append({**r, "id": f"nearimg{j}", "image": reencode(r["image"], j)})
    for j, i in enumerate(rng.choice(base, planted["conflict"], replace=False)):
        r = recs[i]
        recs.append({**r, "id": f"conflict{j}", "chosen": r["rejected"], "rejected": r["chosen"]})
    for j, i in enumerate(rng.choice(len(txt_rows), planted["near_prompt"], replace=False)):
        words = txt_rows[i]["prompt"].split()
        if len(words) > 4:
            del words[int(rng.integers(1, len(words) - 1))]
        recs.append({"id": f"nearprompt{j}", "prompt": " ".join(words), "chosen": text(2, 8),
                     "rejected": text(2, 8), "image": None})
    many = len(evals) < planted["eval"]
    for j, q in enumerate(rng.choice(len(evals), planted["eval"], replace=many)):
        recs.append({"id": f"eval{j}", "prompt": evals[q], "chosen": text(2, 8),
                     "rejected": text(2, 8), "image": None})
    order = rng.permutation(len(recs))
    schema = pa.schema([("id", pa.string()), ("prompt", pa.string()), ("chosen", pa.string()),
                        ("rejected", pa.string()), ("image", pa.binary())])
    path.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(path, schema) as w:
        for s in range(0, len(order), 2048):
            w.write_table(pa.Table.from_pylist([recs[k] for k in order[s:s + 2048]], schema))
    return {**planted, "photos": n_photos,
            "photo_rows": sum(r["image"] is not None for r in recs)}


# -- running a stage --------------------------------------------------------------------
def run_stage(args: list[str]) -> dict[str, Any]:
    """`curate ARGS` in a child process: wall seconds and the peak RSS of its tree."""
    from bench.bench_ingest import peak_tree_rss

    cmd = [sys.executable, "-m", "curate.cli", *[str(a) for a in args]]
    peak, seconds = peak_tree_rss(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)},
                                  quiet=True, interval=0.2)
    return {"seconds": round(seconds, 1), "peak_rss_mb": round(peak / 2**20)}


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def recipe(work: Path, rows: int, seed: int, keep: bool = False) -> dict[str, Any]:
    """Build the corpus of `rows` pairs in `work` and run the recipe; one record per stage.
    Unless `keep`, a stage's input folder is removed once the stage has read it (each
    folder holds a copy of the corpus: six copies of 200k pairs would not fit most disks)."""
    work.mkdir(parents=True, exist_ok=True)
    raw = work / "raw.parquet"
    t0 = time.perf_counter()
    planted = build_corpus(raw, rows, seed) if not raw.exists() else \
        json.loads((work / "planted.json").read_text())
    (work / "planted.json").write_text(json.dumps(planted))
    corpus_s = time.perf_counter() - t0
    ev = work / "eval-vlrb"
    if not (ev / "manifest.json").is_file():
        run_stage(["ingest", "vl-rewardbench", SHARED / "vl-rewardbench" / "data.jsonl",
                   "--out", ev, "--quiet"])
    steps = [
        ("ingest", ["ingest", "generic", raw, "--out", work / "ingest", "--source", "seed"]),
        ("dedup", ["dedup", work / "ingest", "--out", work / "dedup"]),
        ("similar", ["similar", work / "dedup", "--out", work / "similar"]),
        ("decontam", ["decontam", work / "similar", "--against", ev, "--out", work / "decontam"]),
        ("reward", ["reward", work / "decontam", "--kfold", "2", "--model", "minilm",
                    "--train-config", FROZEN, "--disagree", "--out", work / "reward"]),
        ("shard", ["shard", work / "reward", "--out", work / "shards", "--shards", "8",
                   "--eval-fraction", "0.05"]),
    ]
    out = []
    for name, args in steps:
        folder = Path(args[args.index("--out") + 1])
        rec = {"stage": name, **run_stage([*args, "--quiet", "--force"])}
        m = json.loads((folder / "manifest.json").read_text())
        rec["rows_in"] = m.get("rows_in")
        rec["rows_per_s"] = round((m.get("rows_in") or 0) / max(rec["seconds"], 1e-9))
        rec["bytes_written_mb"] = round(folder_bytes(folder) / 2**20, 1)
        rec["reasons"] = m.get("rejected_by_reason") or {}
        out.append(rec)
        print(json.dumps(rec), flush=True)
        before = Path(args[1])
        if not keep and before.parent == work and before.is_dir():
            shutil.rmtree(before)
    return {"rows": rows, "corpus_seconds": round(corpus_s, 1), "planted": planted,
            "stages": out}


def print_table(results: list[dict[str, Any]]) -> None:
    print("| rows | stage | seconds | rows/s | peak RSS (MB) | written (MB) | rejected by reason |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        for s in r["stages"]:
            reasons = ", ".join(f"{k} {v}" for k, v in sorted(s["reasons"].items())) or "-"
            print(f"| {r['rows']:,} | {s['stage']} | {s['seconds']} | {s['rows_per_s']:,} | "
                  f"{s['peak_rss_mb']:,} | {s['bytes_written_mb']} | {reasons} |")
    for r in results:
        print(f"{r['rows']:,} rows: planted {r['planted']} (corpus built in "
              f"{r['corpus_seconds']} s)")
    if len(results) > 1:
        a, b = results[0], results[-1]
        k = b["rows"] / a["rows"]
        for sa, sb in zip(a["stages"], b["stages"], strict=True):
            t = sb["seconds"] / max(sa["seconds"], 1e-9)
            m = sb["peak_rss_mb"] / max(sa["peak_rss_mb"], 1)
            print(f"{sa['stage']}: x{k:g} rows -> time x{t:.2f}, peak RSS x{m:.2f}")


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", default="12500,50000", help="comma-separated corpus sizes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "out" / "recipe")
    ap.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    ap.add_argument("--keep", action="store_true",
                    help="keep every stage's output (default: remove a stage's input once read)")
    args = ap.parse_args(argv)
    if not (SHARED / "hh-rlhf").is_dir():
        print(f"bench_recipe: {SHARED} has no hh-rlhf; skipped")
        return
    results = [recipe(args.work / f"rows-{n}", n, args.seed, args.keep)
               for n in (int(x) for x in args.rows.split(","))]
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
