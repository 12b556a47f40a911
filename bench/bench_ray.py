"""Ray against local: ingest + dedup of generated pairs with images, same machine, same run.

The raw data is generated once (seeded) with planted problems: exact duplicates,
re-encoded near-duplicate images, label conflicts, text-only rows, corrupt images and
empty responses. Each engine runs `ingest` then `dedup` on it with the same worker
count; the outputs must hold the same rows in the same order, and Ray's time over
local's must stay <= 2x (Ray's own start-up counted, since a CLI run pays it).

    python -m bench bench_ray                    # 100,000 pairs
    python -m bench.bench_ray --n 5000           # a quick look
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

OUT = Path(__file__).parent / "out" / "ray"
QUESTIONS = [
    "What is shown in this picture?", "Describe the colours in the image.",
    "Which object is in the centre?", "Is this photo taken indoors?",
    "What mood does the picture convey?", "Count the shapes you can see.",
]
RAW_SCHEMA = pa.schema([("id", pa.string()), ("prompt", pa.string()), ("chosen", pa.string()),
                        ("rejected", pa.string()), ("image", pa.binary())])


def image_bytes(seed: int, quality: int = 90, scale: float = 1.0) -> bytes:
    """A small photo-like JPEG (a smooth random colour field plus grain), a function of
    `seed`; another `quality` or `scale` gives a near-duplicate of the same picture."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = 96, 72
    coarse = rng.integers(0, 256, (4 + seed % 4, 5 + seed % 5, 3), dtype=np.uint8)
    im = Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)
    grain = rng.integers(-6, 7, (h, w, 3))
    im = Image.fromarray(np.clip(np.asarray(im, dtype=np.int16) + grain, 0, 255).astype(np.uint8))
    if scale != 1.0:
        im = im.resize((int(w * scale), int(h * scale)), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def raw_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """`n` raw pairs (generic adapter columns) with planted problems, in a seeded order."""
    rng = np.random.default_rng(seed)
    base: list[tuple[str, str, str, int]] = []  # prompt, chosen, rejected, image seed
    rows = []
    for i in range(n):
        r = rng.random()
        prompt, chosen, rejected = f"{QUESTIONS[i % len(QUESTIONS)]} (#{i})", f"answer {i}", \
            f"wrong {i}"
        image: bytes | None
        if base and r < 0.08:  # an exact copy of an earlier pair
            prompt, chosen, rejected, s = base[int(rng.integers(len(base)))]
            image = image_bytes(s)
        elif base and r < 0.13:  # the same question on a re-encoded or resized image
            prompt, _, _, s = base[int(rng.integers(len(base)))]
            image = image_bytes(s, quality=int(rng.choice([40, 60])),
                                scale=float(rng.choice([1.0, 1.5])))
        elif base and r < 0.15:  # chosen and rejected swapped: a label conflict
            prompt, rejected, chosen, s = base[int(rng.integers(len(base)))]
            image = image_bytes(s)
        elif r < 0.17:  # text only, from a small pool (so some are exact copies)
            k = int(rng.integers(40))
            prompt, chosen, rejected, image = f"Say something about topic {k}.", \
                f"text answer {k}", f"bad answer {k % 7}", None
        elif r < 0.175:  # a truncated JPEG
            image = image_bytes(10_000_000 + i)[:200]
        elif r < 0.18:  # an empty response
            chosen, image = "  ", image_bytes(10_000_000 + i)
        else:
            s = int(base[int(rng.integers(len(base)))][3]) if base and r > 0.9 else i
            image = image_bytes(s)  # r > 0.9: another question about an earlier image
            base.append((prompt, chosen, rejected, s))
        rows.append({"id": f"r{i}", "prompt": prompt, "chosen": chosen, "rejected": rejected,
                     "image": image})
    return rows


def make_raw(folder: Path, n: int, sources: int = 2, seed: int = 0) -> list[Path]:
    """Write `n` raw pairs as `sources` generic parquet files (rows dealt round-robin), once."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"raw-{n}-{seed}-{k}.parquet" for k in range(sources)]
    if all(p.exists() for p in paths):
        return paths
    rows = raw_rows(n, seed)
    for k, p in enumerate(paths):
        tmp = p.with_suffix(".tmp")
        pq.write_table(pa.Table.from_pylist(rows[k::sources], schema=RAW_SCHEMA), tmp,
                       row_group_size=2048)
        tmp.replace(p)
    return paths


def run_pipeline(raw: list[Path], out: Path, engine: Any) -> list[dict[str, Any]]:
    """ingest each raw file, then dedup them together; returns the manifests."""
    from curate.stages.dedup import dedup
    from curate.stages.ingest import ingest

    manifests, folders = [], []
    for k, path in enumerate(raw):
        folder = out / f"src{k}"
        manifests.append(ingest("generic", [str(path)], folder, source=f"src{k}",
                                engine=engine, force=True))
        folders.append(folder)
    manifests.append(dedup(folders, out / "dedup", engine=engine, force=True))
    return manifests


def rows_digest(folder: Path) -> str:
    """sha256 of a folder's kept rows in reading order and its rejected rows sorted,
    whatever the files and batches (Ray's workers write rows in files cut per part, and
    ingest's workers reject repeated ids at the end of their part)."""
    import hashlib

    import pyarrow.compute as pc

    from curate import dataset as D

    h = hashlib.sha256()
    ds = D.Dataset.open(folder)
    for part in (D.KEPT, D.REJECTED):
        table = ds.read(part)
        if part == D.REJECTED:
            keys = [(c, "ascending") for c in ("pair_id", "reject_reason", "reject_detail")]
            table = table.take(pc.sort_indices(table, sort_keys=keys))
        table = table.combine_chunks()
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as w:
            w.write_table(table)
        h.update(sink.getvalue())
    return h.hexdigest()


def _timed_run(engine_name: str, raw: list[Path], out: Path, workers: int) -> dict[str, Any]:
    from curate.engine import get_engine

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    engine = get_engine(engine_name, workers=workers)
    engine.describe()  # the Ray engine starts Ray on first use: time it apart
    t_start = time.perf_counter() - t0
    try:
        manifests = run_pipeline(raw, out, engine)
    finally:
        engine.close()
    total = time.perf_counter() - t0
    folders = [out / f"src{k}" for k in range(len(raw))] + [out / "dedup"]
    return {"engine": engine_name, "seconds": total, "startup": t_start,
            "steps": [(m["stage"], m["seconds"], m["steps"]) for m in manifests],
            "rows": [rows_digest(f) for f in folders],
            "counts": [(m["rows_in"], m["rows_kept"], m["rows_rejected"],
                        m["rejected_by_reason"]) for m in manifests]}


def main(argv: list[str]) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="bench_ray", description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="pairs to generate")
    ap.add_argument("--workers", type=int, default=None, help="workers (default: all cores)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    from curate.engine.local import default_workers

    workers = args.workers or default_workers()
    t = time.perf_counter()
    raw = make_raw(args.out / "raw", args.n)
    mb = sum(p.stat().st_size for p in raw) / 1e6
    print(f"ray vs local: {args.n} pairs with images ({mb:.0f} MB raw parquet, ready in "
          f"{time.perf_counter() - t:.1f} s), {workers} workers", flush=True)
    results = {}
    for name in ("local", "ray"):
        res = _timed_run(name, raw, args.out / name, workers)
        results[name] = res
        steps = "; ".join(f"{stage} {sec:.1f} s" for stage, sec, _ in res["steps"])
        print(f"  {name}: {res['seconds']:.1f} s (engine start {res['startup']:.1f} s; {steps})",
              flush=True)
    local, ray = results["local"], results["ray"]
    same = local["rows"] == ray["rows"] and local["counts"] == ray["counts"]
    ratio = ray["seconds"] / local["seconds"]
    ratio_warm = (ray["seconds"] - ray["startup"]) / local["seconds"]
    kept = local["counts"][-1]
    print(f"  dedup: {kept[0]} in, {kept[1]} kept, {kept[2]} rejected "
          f"{json.dumps(kept[3], sort_keys=True)}")
    print(f"  outputs identical (rows in order, and counts): {same}")
    print(f"  ray / local: {ratio:.2f}x with Ray's start-up, {ratio_warm:.2f}x without "
          f"(wanted <= 2)")
    if not same:
        raise SystemExit("ray and local outputs differ")
    return {"ratio": ratio, "ratio_warm": ratio_warm, "same": same, "local": local, "ray": ray}


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
