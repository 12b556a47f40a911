"""Ingest throughput and memory on a generated image-heavy parquet.

1. Throughput: `curate ingest generic` against a baseline measured in the same
   run that reads the parquet with pyarrow, fully decodes every image with Pillow
   in one process and writes the rows back (target ratio >= 1.5).
2. Memory: peak RSS (whole process tree) of ingesting 4x the rows against 1x
   (target <= 1.3).

    python -m bench bench_ingest            # >= 500 MB file
    python -m bench.bench_ingest --mb 100   # smaller, for a quick look
"""

from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

OUT = Path(__file__).parent / "out"
PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field",
          "immunohistochemistry", "retina", "colorwheel"]


def _jpegs(rng: np.random.Generator, sources: list) -> bytes:
    from PIL import Image

    src = sources[int(rng.integers(len(sources)))]
    w = int(rng.integers(512, 1025))
    h = int(w * rng.uniform(0.6, 1.0))
    x0 = int(rng.integers(0, max(1, src.width // 4)))
    y0 = int(rng.integers(0, max(1, src.height // 4)))
    im = src.crop((x0, y0, src.width - x0 // 2, src.height - y0 // 2)).resize((w, h))
    arr = np.asarray(im, dtype=np.int16) + rng.integers(-6, 7, size=(h, w, 3), dtype=np.int16)
    buf = io.BytesIO()
    Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=92)
    return buf.getvalue()


def make_parquet(path: Path, target_mb: int, seed: int = 0) -> int:
    """Write prompt/chosen/rejected/image rows until the file holds `target_mb` of JPEGs."""
    import skimage.data
    from PIL import Image

    if path.exists():
        return pq.ParquetFile(path).metadata.num_rows
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sources = [Image.fromarray(getattr(skimage.data, n)()).convert("RGB") for n in PHOTOS]
    schema = pa.schema([("id", pa.int64()), ("prompt", pa.string()), ("chosen", pa.string()),
                        ("rejected", pa.string()), ("image", pa.binary())])
    total = rows = 0
    tmp = path.with_suffix(".tmp")
    with pq.ParquetWriter(tmp, schema) as w:
        while total < target_mb * 1024 * 1024:
            batch = []
            for _ in range(64):
                img = _jpegs(rng, sources)
                total += len(img)
                batch.append({"id": rows, "prompt": f"Describe image {rows}.",
                              "chosen": f"A detailed description {rows}.",
                              "rejected": f"Wrong {rows}.", "image": img})
                rows += 1
            w.write_table(pa.Table.from_pylist(batch, schema=schema))
    tmp.rename(path)
    return rows


def baseline(src: Path, dst: Path) -> float:
    """pyarrow read -> full Pillow decode of every image, one process -> parquet write."""
    from PIL import Image

    t = time.perf_counter()
    pf = pq.ParquetFile(src)
    with pq.ParquetWriter(dst, pf.schema_arrow, compression="zstd") as w:
        for batch in pf.iter_batches(batch_size=64):
            for data in batch.column("image").to_pylist():
                Image.open(io.BytesIO(data)).load()
            w.write_batch(batch)
    return time.perf_counter() - t


def curate_ingest(src: Path, dst: Path) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "curate.cli", "ingest", "generic", str(src), "--out",
                    str(dst), "--force", "--quiet"], check=True)
    return time.perf_counter() - t


def peak_tree_rss(cmd: list[str], env: dict[str, str] | None = None, quiet: bool = False,
                  interval: float = 0.02) -> tuple[int, float]:
    """Run `cmd`, sampling the RSS of it and all its children every `interval` seconds;
    returns (peak bytes, seconds). `quiet`: its output is not shown, and the end of its
    stderr goes into the error when it fails."""
    import psutil

    t = time.perf_counter()
    pipe = subprocess.PIPE if quiet else None
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL if quiet else None,
                            stderr=pipe, text=True)
    ps = psutil.Process(proc.pid)
    peak = 0
    done = threading.Event()

    def rss(p: psutil.Process) -> int:
        try:
            return p.memory_info().rss
        except psutil.Error:  # it ended between the listing and the reading
            return 0

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            try:
                procs = [ps, *ps.children(recursive=True)]
            except psutil.Error:
                procs = []
            peak = max(peak, sum(rss(p) for p in procs))
            time.sleep(interval)

    th = threading.Thread(target=sample)
    th.start()
    _, err = proc.communicate()  # reads a piped stderr while it runs: no full pipe
    done.set()
    th.join()
    if proc.returncode:
        raise SystemExit(f"{cmd} failed ({proc.returncode})" + (f":\n{err[-3000:]}" if err else ""))
    return peak, time.perf_counter() - t


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="bench_ingest")
    ap.add_argument("--mb", type=int, default=520, help="size of the generated image parquet")
    ap.add_argument("--memory-rows", type=int, default=600, help="rows of the 1x memory run")
    ap.add_argument("--rounds", type=int, default=3,
                    help="baseline and curate run alternately this many times; medians compared")
    args = ap.parse_args(argv)

    src = OUT / f"images-{args.mb}mb.parquet"
    rows = make_parquet(src, args.mb)
    size_mb = src.stat().st_size / 2**20
    print(f"input: {src.name}, {rows} rows, {size_mb:.0f} MB")
    # alternating rounds and medians: a shared machine's load drifts by +-20% between runs
    tbs, tcs = [], []
    for r in range(args.rounds):
        tbs.append(baseline(src, OUT / "baseline.parquet"))
        tcs.append(curate_ingest(src, OUT / "ingest-full"))
        print(f"round {r + 1}: baseline {tbs[-1]:.1f} s, curate {tcs[-1]:.1f} s, "
              f"ratio {tbs[-1] / tcs[-1]:.2f}")
    tb, tc = statistics.median(tbs), statistics.median(tcs)
    print(f"baseline (pyarrow + Pillow decode, 1 process): median {tb:.1f} s, "
          f"{rows / tb:.1f} rows/s")
    print(f"curate ingest:                                median {tc:.1f} s, "
          f"{rows / tc:.1f} rows/s")
    print(f"throughput ratio curate/baseline (medians): {tb / tc:.2f} (target >= 1.5)")

    n1 = min(args.memory_rows, rows // 4)
    table = pq.read_table(src).slice(0, 4 * n1)
    for k in (1, 4):
        # row groups of 64 rows, as real image datasets have: a reader holds one at a time
        pq.write_table(table.slice(0, k * n1), OUT / f"mem-{k}x.parquet", row_group_size=64)
    del table
    peaks = {}
    for k in (1, 4):
        cmd = [sys.executable, "-m", "curate.cli", "ingest", "generic",
               str(OUT / f"mem-{k}x.parquet"), "--out", str(OUT / f"mem-{k}x"), "--force",
               "--quiet"]
        peaks[k], secs = peak_tree_rss(cmd)
        print(f"peak RSS (process tree) {k}x = {k * n1} rows: {peaks[k] / 2**20:.0f} MiB "
              f"in {secs:.1f} s")
    print(f"memory ratio 4x/1x: {peaks[4] / peaks[1]:.2f} (target <= 1.3)")


if __name__ == "__main__":
    main(sys.argv[1:])
