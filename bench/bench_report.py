"""Report size and load time on a big run, against a run a tenth its size made the same way.

A generated three-stage run (ingest -> dedup -> shard, written through `StageRun`
so the manifests are real) of ROWS text pairs, a share of them with one JPEG image;
ingest and dedup reject a few percent by several reasons, dedup's rejects name
their survivors. Measured: the time to build the report, its size (wanted < 5 MB),
and the time Chromium takes to load it (navigation start to the load event, wanted
< 2 s), each for the big run and for the baseline run of ROWS / 10, with the ratio.

    python -m bench bench_report
    python -m bench.bench_report [--rows 200000] [--image-share 0.1] [--keep DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

LIMIT_MB = 5.0
LIMIT_LOAD_S = 2.0
BATCH = 20_000
WORDS = ("the model answer image shows a clear detail of colour light shape text person "
         "object scene left right small large because however therefore").split()


def _jpegs(n: int, rng: np.random.Generator) -> list[tuple[bytes, int, int]]:
    """`n` distinct photo-like JPEGs of a few sizes (bytes, width, height)."""
    from PIL import Image

    out = []
    for i in range(n):
        w, h = [(320, 240), (256, 256), (400, 300), (240, 320)][i % 4]
        coarse = rng.integers(0, 256, (4 + i % 5, 5 + i % 7, 3), dtype=np.uint8)
        im = Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=80)
        out.append((buf.getvalue(), w, h))
    return out


def _text(rng: np.random.Generator, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS, int(rng.integers(lo, hi))).tolist())


def _rows(start: int, n: int, rng: np.random.Generator, images: list[tuple[bytes, int, int]],
          image_share: float) -> list[dict[str, Any]]:
    rows = []
    for i in range(start, start + n):
        pid = hashlib.md5(str(i).encode()).hexdigest()
        imgs = []
        if rng.random() < image_share:
            data, w, h = images[i % len(images)]
            imgs = [{"bytes": data, "sha256": hashlib.sha256(data).hexdigest(),
                     "pixel_hash": None, "width": w, "height": h, "format": "JPEG"}]
        rows.append({"pair_id": pid, "source": ["alpha", "beta", "gamma", "delta"][i % 4],
                     "source_id": str(i), "category": ["chat", "reasoning", "safety"][i % 3],
                     "prompt": [{"role": "user", "content": _text(rng, 8, 40)}],
                     "chosen": _text(rng, 20, 200), "rejected": _text(rng, 10, 160),
                     "images": imgs, "chosen_score": None, "rejected_score": None,
                     "meta": None})
    return rows


def make_run(root: Path, rows: int, image_share: float, seed: int = 0) -> Path:
    """Write ingest, dedup and shard folders of `rows` generated pairs under `root`."""
    import pyarrow as pa

    from curate import schema as S
    from curate.dataset import Dataset
    from curate.pipeline.runner import StageRun, input_record

    rng = np.random.default_rng(seed)
    images = _jpegs(400, rng)
    ingest_reasons = ["empty_response", "ambiguous", "corrupt_image", "identical_responses",
                      "image_path_escape", "unparseable_judgment"]
    with StageRun("ingest", root / "01-ingest", {"bench": rows}, []) as run:
        run.open()
        for start in range(0, rows, BATCH):
            t = pa.Table.from_pylist(_rows(start, min(BATCH, rows - start), rng, images,
                                           image_share), schema=S.PAIR_SCHEMA)
            run.add_in(t.num_rows)
            bad = rng.random(t.num_rows) < 0.02
            run.keep(t.filter(pa.array(~bad)))
            run.reject(t.filter(pa.array(bad)),
                       [ingest_reasons[k % len(ingest_reasons)] for k in range(int(bad.sum()))])
    ingest = Dataset.open(root / "01-ingest")
    with StageRun("dedup", root / "02-dedup", {"max_distance": 8},
                  [input_record(ingest)]) as run:
        run.open()
        for batch in ingest.iter_batches(batch_size=BATCH):
            t = pa.Table.from_batches([batch])
            run.add_in(t.num_rows)
            dup = np.zeros(t.num_rows, dtype=bool)
            dup[1::20] = True  # every twentieth row duplicates the row before it
            ids = t["pair_id"].to_pylist()
            details = [f"{ids[k - 1]} distance={k % 5}" for k in np.flatnonzero(dup)]
            has_image = [bool(x) for x in t["images"].to_pylist()]
            reasons = ["near_duplicate_image" if has_image[k] else "exact_duplicate"
                       for k in np.flatnonzero(dup)]
            run.keep(t.filter(pa.array(~dup)))
            run.reject(t.filter(pa.array(dup)), reasons, details)
    dedup = Dataset.open(root / "02-dedup")
    shards: list[dict[str, Any]] = []
    with StageRun("shard", root / "03-shard", {"shards": "per batch", "eval_fraction": 0.05},
                  [input_record(dedup)]) as run:
        schema = S.PAIR_SCHEMA.append(pa.field("split", pa.string())).append(
            pa.field("stage", pa.string())).append(pa.field("est_tokens", pa.int64()))
        run.open(schema)
        for k, batch in enumerate(dedup.iter_batches(batch_size=BATCH)):
            t = pa.Table.from_batches([batch])
            n = t.num_rows
            mm = np.array([bool(x) for x in t["images"].to_pylist()])
            split = np.where(rng.random(n) < 0.05, "eval", "train")
            tokens = (pa.compute.utf8_length(t["chosen"]).to_numpy() // 4 + 40 + 256 * mm)
            t = (t.append_column("split", pa.array(split.tolist()))
                 .append_column("stage", pa.array(np.where(mm, "multimodal", "text").tolist()))
                 .append_column("est_tokens", pa.array(tokens.astype(np.int64))))
            run.add_in(n)
            run.keep(t)
            for s in ("train", "eval"):
                sel = split == s
                shards.append({"file": f"batch-{k}", "split": s, "rows": int(sel.sum()),
                               "est_tokens": int(tokens[sel].sum()),
                               "multimodal_rows": int((mm & sel).sum())})
        run.extra["shards"] = shards
    return root


def _report(root: Path, out: Path) -> tuple[float, float]:
    from curate.report import build_report

    t = time.perf_counter()
    build_report([root], out)
    return time.perf_counter() - t, out.stat().st_size / 1e6


def _load_seconds(page: Path, repeats: int = 3) -> float:
    """Best of `repeats` loads in headless Chromium: navigation start to the load event end."""
    from tests.test_report_browser import CHROMIUM, Chromium

    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        return float("nan")
    times = []
    browser = Chromium(CHROMIUM, width=1400, height=1000)
    try:
        url = page.resolve().as_uri()
        for _ in range(repeats):
            browser.call("Page.navigate", {"url": url}, session=True)
            deadline = time.monotonic() + 120
            while True:  # the load event of this page, whatever events came before
                state = json.loads(browser.evaluate(
                    "JSON.stringify({href: location.href, nav: "
                    "performance.getEntriesByType('navigation')[0] || null})"))
                nav = state["nav"]
                if state["href"] == url and nav and nav["loadEventEnd"] > 0:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{page} did not load in 120 s")
                time.sleep(0.05)
            times.append((nav["loadEventEnd"] - nav["startTime"]) / 1000)
            browser.call("Page.navigate", {"url": "about:blank"}, session=True)
            time.sleep(0.2)
    finally:
        browser.close()
    return min(times)


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="bench_report")
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--image-share", type=float, default=0.1)
    ap.add_argument("--keep", type=Path, default=None, help="write the runs here and keep them")
    args = ap.parse_args(argv)
    from curate.progress import set_quiet

    set_quiet(True)
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        base = args.keep or Path(tmp)
        results = {}
        for label, rows in (("baseline", max(args.rows // 10, 1000)), ("big", args.rows)):
            t0 = time.perf_counter()
            root = make_run(base / f"run-{rows}", rows, args.image_share)
            made = time.perf_counter() - t0
            data_mb = sum(f.stat().st_size for f in root.rglob("*.parquet")) / 1e6
            secs, mb = _report(root, base / f"report-{rows}.html")
            load = _load_seconds(base / f"report-{rows}.html")
            results[label] = (rows, secs, mb, load)
            print(f"{label}: {rows} rows ({args.image_share:.0%} with an image, {data_mb:.0f} MB "
                  f"of parquet, made in {made:.0f} s): report built in {secs:.1f} s, "
                  f"{mb:.2f} MB, loads in {load:.2f} s", flush=True)
        (n0, s0, m0, l0), (n1, s1, m1, l1) = results["baseline"], results["big"]
        print(f"ratios big / baseline ({n1 / n0:.0f}x the rows): build {s1 / s0:.2f}x, "
              f"size {m1 / m0:.2f}x, load {l1 / l0:.2f}x")
        print(f"big run: size {m1:.2f} MB (wanted < {LIMIT_MB:.0f}: "
              f"{'yes' if m1 < LIMIT_MB else 'NO'}), load {l1:.2f} s (wanted < "
              f"{LIMIT_LOAD_S:.0f}: {'yes' if l1 < LIMIT_LOAD_S else 'NO'})")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
