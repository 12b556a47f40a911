"""Dedup benchmarks, each against a baseline measured in the same run.

1. Hashing throughput on generated 1024x768 JPEGs: `curate`'s hashing (draft decode,
   in one process, then through the dedup stage's `annotate` on the local engine's
   worker threads, as `curate dedup` runs it) against
   `imagehash.phash(Image.open(f).convert("RGB"))` in one process. Wanted: >= 3x.
2. Near-duplicate search (all pairs within 8 bits) over random 64-bit codes at 100k,
   400k and 1M: wanted 1M <= 90 s and time(400k) / time(100k) <= 6. The baseline is
   faiss `IndexBinaryFlat` (exhaustive), whose pairs must be the same.
3. With --decide-rows: the global step, `decide`, over N synthetic rows of keys (one
   image each, duplicates as in `synthetic_keys`), in a fresh process per size (after a
   warm-up on 1,000 rows, so that one-time imports are not counted): wall time and peak
   memory over the keys table (peak RSS minus RSS with the keys loaded). Wanted: at
   most 200 B/row, and 4x the rows in at most 4.5x the memory and 5x the time.
   --baseline also runs the pre-columnar implementation (tests/dedup_reference.py).

    python -m bench bench_dedup                 (the defaults below)
    python -m bench.bench_dedup [--images 300] [--sizes 100000,400000,1000000]
                                [--flat-sizes 100000,400000] [--radius 8] [--workers N]
    python -m bench bench_dedup --images 0 --sizes "" --decide-rows 1000000,4000000 \\
                                [--decide-repeat 3] [--baseline]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np


def _make_jpegs(folder: Path, n: int, size: tuple[int, int], seed: int = 0) -> list[Path]:
    """Photo-like JPEGs: smooth random colour fields plus grain, quality 90."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    files = []
    for i in range(n):
        coarse = rng.integers(0, 256, (6 + i % 5, 8 + i % 7, 3), dtype=np.uint8)
        im = Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)
        grain = rng.integers(-12, 13, (h, w, 3))
        arr = np.clip(np.asarray(im, dtype=np.int16) + grain, 0, 255).astype(np.uint8)
        path = folder / f"img-{i:05d}.jpg"
        Image.fromarray(arr).save(path, format="JPEG", quality=90)
        files.append(path)
    return files


def _timed(fn: Any) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def _cpu_timed(fn: Any) -> tuple[float, float, Any]:
    """(wall, this process' CPU seconds, result): CPU time is steadier on a shared machine."""
    c = time.process_time()
    wall, out = _timed(fn)
    return wall, time.process_time() - c, out


def _cpu_of(fn: Any, item: Any) -> tuple[Any, float]:
    """`fn(item)` and the CPU seconds it took on its worker (thread or process)."""
    c = time.thread_time()
    out = fn(item)
    return out, time.thread_time() - c


def _load() -> str:
    return "load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


def _dataset(files: list[Path], size: tuple[int, int], folder: Path) -> Path:
    """The files as a dataset folder, one pair a file, as ingest would have written it."""
    import hashlib

    import pyarrow as pa

    from curate import schema as S
    from curate.pipeline.runner import StageRun

    rows = []
    for f in files:
        data = f.read_bytes()
        rows.append({"pair_id": f.stem, "source": "bench", "source_id": f.stem,
                     "prompt": [{"role": "user", "content": f"Describe image {f.stem}."}],
                     "chosen": "a", "rejected": "b",
                     "images": [{"bytes": data, "sha256": hashlib.sha256(data).hexdigest(),
                                 "width": size[0], "height": size[1], "format": "JPEG"}]})
    with StageRun("ingest", folder, {}, []) as run:
        run.open()
        run.add_in(len(rows))
        run.keep(pa.Table.from_pylist(rows, schema=S.PAIR_SCHEMA))
    return folder


def bench_hashing(n: int, size: tuple[int, int], workers: int | None) -> dict[str, float]:
    import imagehash
    from PIL import Image

    from curate.dataset import Dataset
    from curate.engine import get_engine
    from curate.hashing import hamming, perceptual_hash
    from curate.stages.dedup import ANNOTATE_COLUMNS, BATCH_SIZE, annotate, hash_on_threads

    with tempfile.TemporaryDirectory(prefix="bench-dedup-") as tmp:
        t_gen, files = _timed(lambda: _make_jpegs(Path(tmp), n, size))
        mb = sum(f.stat().st_size for f in files) / 1e6
        print(f"hashing: {n} JPEGs {size[0]}x{size[1]} ({mb:.0f} MB, made in {t_gen:.1f} s)")

        def baseline() -> list[int]:
            return [int(str(imagehash.phash(Image.open(f).convert("RGB"))), 16) for f in files]

        def single() -> list[int]:
            return [perceptual_hash(f.read_bytes()) for f in files]

        engine = get_engine("local", workers=workers)
        datasets = [Dataset.open(_dataset(files, size, Path(tmp) / "dataset"))]

        worker_cpu: list[float] = []

        def engine_run() -> list[int]:
            """Pass 1 of `curate dedup`: read the dataset, hash on worker threads."""
            out = []
            fn = partial(_cpu_of, annotate)
            threads = hash_on_threads([d.path for d in datasets])  # as `curate dedup` does
            for res, cpu in engine.map_inputs(fn, datasets, ANNOTATE_COLUMNS, BATCH_SIZE,
                                              releases_gil=threads):
                out += [codes[0] for codes in res.column("codes").to_pylist()]
                worker_cpu.append(cpu)
            return out

        print(f"  ({_load()} on {os.cpu_count()} cores)")
        t_base, c_base, base = _cpu_timed(baseline)
        t_one, c_one, one = _cpu_timed(single)
        t_eng, eng = _timed(engine_run)
    assert one == eng, "the engine path must give the same hashes"
    dists = [hamming(a, b) for a, b in zip(base, one, strict=True)]
    r_one, r_eng = t_base / t_one, t_base / t_eng
    print(f"  baseline imagehash.phash(Image.open(f).convert('RGB')), 1 process: "
          f"{t_base:.2f} s ({n / t_base:.0f} img/s; CPU {1e3 * c_base / n:.2f} ms/img)")
    print(f"  curate perceptual_hash (draft decode), 1 process: {t_one:.2f} s "
          f"({n / t_one:.0f} img/s; CPU {1e3 * c_one / n:.2f} ms/img): {r_one:.1f}x "
          f"(CPU: {c_base / c_one:.1f}x)")
    print(f"  curate dedup pass 1 (parquet in, annotate on the local engine, "
          f"{engine.workers} workers, threads for photos): {t_eng:.2f} s "
          f"({n / t_eng:.0f} img/s; CPU in the tasks {1e3 * sum(worker_cpu) / n:.2f} ms/img): "
          f"{r_eng:.1f}x (wanted >= 3)")
    print(f"  bits from the baseline's hash: mean {np.mean(dists):.2f}, max {max(dists)}")
    print(f"  ({_load()})")
    return {"baseline_s": t_base, "single_s": t_one, "engine_s": t_eng,
            "ratio_single": r_one, "ratio_engine": r_eng, "cpu_ratio_single": c_base / c_one}


def _flat_pairs(codes: np.ndarray, radius: int) -> set[tuple[int, int]]:
    import faiss

    index = faiss.IndexBinaryFlat(64)
    x = np.ascontiguousarray(codes.view(np.uint8).reshape(-1, 8))
    index.add(x)
    lims, _, ids = index.range_search(x, radius + 1)  # faiss' radius is strict
    q = np.repeat(np.arange(len(codes)), np.diff(lims).astype(np.int64))
    keep = q < ids
    return set(zip(q[keep].tolist(), ids[keep].tolist(), strict=True))


def bench_search(sizes: list[int], radius: int, flat_sizes: list[int],
                 repeat: int = 5) -> dict[str, float]:
    """Best of `repeat` runs for sizes under 1M (one run at 1M and above): on a shared
    machine the minimum is the figure least disturbed by other work. The repeated sizes
    run interleaved (100k, 400k, 100k, ...), so a drift in the machine's load falls on
    both sides of the scaling ratio alike."""
    from curate.index.hamming import plan_for, radius_pairs

    rng = np.random.default_rng(0)
    print(f"near-duplicate search: all pairs within {radius} bits of random 64-bit codes "
          f"({_load()})")
    codes_of = {n: rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False) for n in sizes}
    runs_of: dict[int, list[tuple[float, Any]]] = {n: [] for n in sizes}
    for r in range(repeat):
        for n in sizes:
            if r == 0 or n < 1_000_000:
                runs_of[n].append(_timed(lambda c=codes_of[n]: radius_pairs(c, radius)))
    times: dict[int, float] = {}
    flat: dict[int, float] = {}
    for n in sizes:
        codes, runs = codes_of[n], runs_of[n]
        t, (i, j, _) = min(runs, key=lambda run: run[0])
        times[n] = t
        every = ", ".join(f"{run[0]:.2f}" for run in runs)
        print(f"  curate radius_pairs n={n:,}: {t:.2f} s (runs: {every}), {len(i)} pairs, "
              f"blocks {plan_for(n, radius).widths}")
        if n in flat_sizes:
            tf, pairs = _timed(lambda c=codes: _flat_pairs(c, radius))
            flat[n] = tf
            same = pairs == set(zip(i.tolist(), j.tolist(), strict=True))
            print(f"  faiss IndexBinaryFlat n={n:,}: {tf:.2f} s, {len(pairs)} pairs, "
                  f"same pairs: {'yes' if same else 'NO'}")
            assert same, "the index must find exactly the exhaustive search's pairs"
    out: dict[str, float] = {f"t_{n}": t for n, t in times.items()}
    if 100_000 in times and 400_000 in times:
        out["scaling"] = times[400_000] / times[100_000]
        print(f"  time(400k)/time(100k): {out['scaling']:.2f} (wanted <= 6; quadratic: 16)")
    if 100_000 in flat and 400_000 in flat:
        print(f"  IndexBinaryFlat time(400k)/time(100k): {flat[400_000] / flat[100_000]:.2f}")
    if 100_000 in flat and 100_000 in times:
        print(f"  speed-up over IndexBinaryFlat at 100k: {flat[100_000] / times[100_000]:.1f}x")
    if 1_000_000 in times:
        print(f"  1M codes: {times[1_000_000]:.1f} s (wanted <= 90 s)")
    return out


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a fast, well-spread 64-bit hash of each element."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _digests(tag: int, *parts: np.ndarray) -> Any:
    """A 16-byte digest of each row of `parts` (unsigned integers), as a fixed-size binary
    column: equal parts give equal digests, as blake2b over the same values would."""
    import pyarrow as pa

    h = _mix(np.full(len(parts[0]), tag, dtype=np.uint64))
    with np.errstate(over="ignore"):
        for part in parts:
            h = _mix(h ^ part.astype(np.uint64))
        words = np.stack([h, _mix(h ^ np.uint64(0x9E3779B97F4A7C15))], axis=1)
    return pa.Array.from_buffers(pa.binary(16), len(h), [None, pa.py_buffer(words.tobytes())])


def synthetic_keys(n: int, seed: int = 0) -> Any:
    """`n` rows of dedup keys (`KEY_SCHEMA`), one image each, in record batches of
    `BATCH_SIZE` as the engine returns them: 76% distinct rows (a third of them ask one of
    1,000 common prompts), 10% exact copies of one of those (another source or file size),
    8% near copies (the same text, another image 1-12 bits away: most within the phash
    radius, 10), 4% copies with chosen and rejected swapped (label conflicts), 2% the same
    prompt with an unrelated image, and 1 in 10,000 a corrupt image."""
    import pyarrow as pa

    from curate.stages.dedup import BATCH_SIZE, KEY_SCHEMA

    rng = np.random.default_rng(seed)
    kind = rng.choice(5, size=n, p=[0.76, 0.10, 0.08, 0.04, 0.02])
    distinct = np.flatnonzero(kind == 0)
    if distinct.size == 0:
        distinct, kind[0] = np.zeros(1, dtype=np.int64), 0
    of = distinct[rng.integers(0, distinct.size, n)]  # the row a copy copies
    of[kind == 0] = np.flatnonzero(kind == 0)
    u64 = np.iinfo(np.uint64).max
    common = rng.random(n) < 1 / 3
    prompt = np.where(common, rng.integers(0, 1000, n), np.arange(n) + 1000).astype(np.uint64)
    image = rng.integers(0, u64, n, dtype=np.uint64, endpoint=True)
    code = rng.integers(0, u64, n, dtype=np.uint64, endpoint=True)
    response = np.arange(n, dtype=np.uint64)
    swapped = rng.random(n) < 0.5
    copy = kind > 0
    prompt[copy] = prompt[of[copy]]
    same = np.isin(kind, (1, 2, 3))  # copies that keep the responses
    response[same], swapped[same] = response[of[same]], swapped[of[same]]
    exact_or_swapped = np.isin(kind, (1, 3))
    image[exact_or_swapped], code[exact_or_swapped] = (image[of[exact_or_swapped]],
                                                       code[of[exact_or_swapped]])
    swapped[kind == 3] = ~swapped[kind == 3]
    near = np.flatnonzero(kind == 2)
    bits = rng.integers(1, 13, near.size)
    flips = np.zeros(near.size, dtype=np.uint64)
    for k in range(12):  # up to 12 distinct random bits each
        flips |= np.where(bits > k, np.uint64(1) << rng.integers(0, 64, near.size,
                                                                 dtype=np.uint64), 0)
    code[near] = code[of[near]] ^ flips
    corrupt = rng.random(n) < 1e-4

    hexdigits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    raw = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    text = np.empty((n, 64), dtype=np.uint8)
    text[:, 0::2], text[:, 1::2] = hexdigits[raw >> 4], hexdigits[raw & 15]
    offsets = np.arange(0, 64 * (n + 1), 64, dtype=np.int32)
    pair_id = pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets),
                                                     pa.py_buffer(text.tobytes())])
    del raw, text
    one = np.arange(n + 1, dtype=np.int32)
    valid = pa.py_buffer(np.packbits(~corrupt, bitorder="little"))
    codes = pa.ListArray.from_arrays(pa.array(one), pa.Array.from_buffers(
        pa.uint64(), n, [valid, pa.py_buffer(code)], null_count=int(corrupt.sum())))
    pixels = np.array([640 * 480, 800 * 600, 1024 * 768])[rng.integers(0, 3, n)]
    nbytes = rng.integers(20_000, 200_000, n)
    nbytes[kind == 1] = np.where(rng.random(int((kind == 1).sum())) < 0.5,
                                 nbytes[of[kind == 1]], nbytes[kind == 1])
    error = pa.array(np.where(corrupt, "image 0: UnidentifiedImageError: cannot identify "
                                       "image file", None).tolist(), pa.string())
    columns = {
        "pair_id": pair_id,
        "source": pa.array(["src0", "src1", "src2"]).take(pa.array(rng.integers(0, 3, n))),
        "prompt_key": _digests(1, prompt),
        "responses_key": _digests(2, response, swapped),
        "exact_key": _digests(3, prompt, image, response, swapped),
        "pair_key": _digests(4, prompt, image, response),
        "swapped": pa.array(swapped),
        "image_ids": pa.ListArray.from_arrays(pa.array(one), pa.array(image)),
        "codes": codes,
        "pixels": pa.array(pixels, pa.int64()),
        "nbytes": pa.array(nbytes, pa.int64()),
        "decoded": pa.array(np.ones(n, dtype=np.int32)),
        "reused": pa.array(np.zeros(n, dtype=np.int32)),
        "error": error,
    }
    table = pa.table(columns, schema=KEY_SCHEMA)
    return pa.Table.from_batches(table.to_batches(max_chunksize=BATCH_SIZE), schema=KEY_SCHEMA)


def _proc_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def _decide_child(path: str, impl: str) -> dict[str, Any]:
    """Run one `decide` over the keys in `path` (Arrow IPC) in this fresh process: its wall
    time, the Hamming search's share, and the peak RSS over the RSS with the keys loaded."""
    import gc
    import resource

    import pyarrow as pa

    import curate.index.hamming as hamming
    from curate.stages.dedup import DedupConfig

    search, depth = [0.0], [0]

    def timed(plain: Any) -> Any:
        def timed_search(*args: Any, **kw: Any) -> Any:
            depth[0] += 1
            try:
                t, out = _timed(lambda: plain(*args, **kw))
            finally:
                depth[0] -= 1
            if depth[0] == 0:  # radius_pairs_within calls radius_pairs: count it once
                search[0] += t
            return out
        return timed_search

    # before the reference imports them
    hamming.radius_pairs = timed(hamming.radius_pairs)
    hamming.radius_pairs_within = timed(hamming.radius_pairs_within)
    if impl == "reference":
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from tests.dedup_reference import decide
    else:
        from curate.stages.dedup import decide
    cfg = DedupConfig(prefer=("src1",))
    decide(synthetic_keys(1000, seed=1), cfg)  # one-time costs first: imports (pandas: 50 MB)
    with pa.OSFile(path) as f:  # read into memory, not mapped
        keys = pa.ipc.open_file(f).read_all()
    gc.collect()
    base = _proc_bytes("VmRSS")
    try:  # Linux: reset the peak RSS (VmHWM) to the current RSS
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        peak_of = "VmHWM"
    except OSError:
        peak_of = "ru_maxrss"
    cpu = time.process_time()
    wall, decisions = _timed(lambda: decide(keys, cfg))
    cpu = time.process_time() - cpu
    peak = (_proc_bytes("VmHWM") if peak_of == "VmHWM"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    reasons = decisions.table["reject_reason"].drop_null().value_counts().to_pylist()
    return {"rows": keys.num_rows, "wall": wall, "cpu": cpu, "search": search[0], "base": base,
            "peak": peak, "peak_of": peak_of, "keys_bytes": keys.nbytes,
            "rejected": {r["values"]: r["counts"] for r in reasons}}


def _argsort_seconds(n: int) -> float:
    """The best of three argsorts of `n` random uint64: the machine's own cost of one
    random-access pass at that size, against which decide's growth can be read."""
    keys = np.random.default_rng(0).integers(0, 2**63, n, dtype=np.uint64)
    return min(_timed(lambda: np.argsort(keys))[0] for _ in range(3))


def bench_decide(sizes: list[int], baseline: bool, repeat: int = 1) -> dict[str, float]:
    """`decide` over synthetic keys, one fresh process per size, implementation and run;
    the fastest of `repeat` runs is the figure (on a shared machine the one least
    disturbed by other work: here single runs of the same code at 1M and 4M rows gave
    ratios from 3.3x to 6.0x)."""
    import pyarrow as pa

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p)}
    impls = ["columnar", *(["reference"] if baseline else [])]
    print(f"dedup decide over synthetic keys, one image a row ({_load()})")
    runs: dict[tuple[str, int], dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-decide-") as tmp:
        for n in sizes:
            path = str(Path(tmp) / f"keys-{n}.arrow")
            t_gen, keys = _timed(lambda n=n: synthetic_keys(n))
            with pa.OSFile(path, "wb") as f, pa.ipc.new_file(f, keys.schema) as w:
                w.write_table(keys)
            del keys
            for impl in impls:
                tries = []
                for _ in range(max(repeat, 1)):
                    proc = subprocess.run(
                        [sys.executable, "-m", "bench.bench_dedup", "--decide-child", path,
                         "--impl", impl], cwd=root, env=env, capture_output=True, text=True)
                    if proc.returncode != 0:
                        raise RuntimeError(f"decide ({impl}, {n} rows) failed:\n{proc.stderr}")
                    tries.append(json.loads(proc.stdout.strip().splitlines()[-1]))
                r = min(tries, key=lambda t: t["wall"])
                runs[impl, n] = r
                per_row = (r["peak"] - r["base"]) / n
                every = ", ".join(f"{t['wall']:.1f}" for t in tries)
                print(f"  {impl} n={n:,}: {r['wall']:.1f} s (runs: {every}; CPU "
                      f"{r['cpu']:.1f} s; Hamming search {r['search']:.1f} s), peak "
                      f"{per_row:.0f} B/row over the keys "
                      f"({r['keys_bytes'] / n:.0f} B/row; {r['peak_of']}; keys made in "
                      f"{t_gen:.1f} s); rejected {r['rejected']}")
    out: dict[str, float] = {}
    for impl in impls:
        done = [n for n in sizes if (impl, n) in runs]
        for n in done:
            r = runs[impl, n]
            out[f"{impl}_s_{n}"] = r["wall"]
            out[f"{impl}_cpu_s_{n}"] = r["cpu"]
            out[f"{impl}_bytes_per_row_{n}"] = (r["peak"] - r["base"]) / n
        if len(done) >= 2:
            a, b = runs[impl, done[0]], runs[impl, done[-1]]
            k = done[-1] / done[0]
            t_ratio = b["wall"] / a["wall"]
            m_ratio = (b["peak"] - b["base"]) / (a["peak"] - a["base"])
            out[f"{impl}_time_ratio"], out[f"{impl}_memory_ratio"] = t_ratio, m_ratio
            sort_ratio = _argsort_seconds(done[-1]) / _argsort_seconds(done[0])
            out["argsort_time_ratio"] = sort_ratio
            print(f"  this machine: one argsort of {done[-1]:,} random 64-bit keys takes "
                  f"{sort_ratio:.2f}x the time of {done[0]:,} (n log n alone: "
                  f"{k * np.log(done[-1]) / np.log(done[0]):.2f}x; the rest is the caches)")
            rest = (b["wall"] - b["search"]) / (a["wall"] - a["search"])
            print(f"  {impl}: {k:g}x the rows: {t_ratio:.2f}x the time (CPU "
                  f"{b['cpu'] / a['cpu']:.2f}x; wanted <= {1.25 * k:g}), {m_ratio:.2f}x the "
                  f"memory (wanted <= {1.125 * k:g}); without the Hamming search "
                  f"{rest:.2f}x the time, the search {b['search'] / max(a['search'], 1e-9):.2f}x")
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench bench_dedup", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=300, help="0: skip the hashing benchmark")
    p.add_argument("--size", default="1024x768")
    p.add_argument("--workers", type=int, default=None, help="default: all cores")
    p.add_argument("--sizes", default="100000,400000,1000000")
    p.add_argument("--radius", type=int, default=8)
    p.add_argument("--repeat", type=int, default=5, help="search runs per size under 1M")
    p.add_argument("--flat-sizes", default="100000",
                   help="sizes for the exhaustive baseline (400000 takes minutes)")
    p.add_argument("--decide-rows", default="",
                   help="rows of synthetic keys for `decide`, e.g. 1000000,4000000")
    p.add_argument("--baseline", action="store_true",
                   help="with --decide-rows: also the pre-columnar decide (slow, 1.6 KB/row)")
    p.add_argument("--decide-repeat", type=int, default=1,
                   help="with --decide-rows: runs per size, the fastest is reported")
    p.add_argument("--decide-child", help=argparse.SUPPRESS)
    p.add_argument("--impl", default="columnar", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.decide_child:
        print(json.dumps(_decide_child(args.decide_child, args.impl)))
        return 0
    w, h = (int(x) for x in args.size.split("x"))
    sizes = [int(x) for x in args.sizes.split(",") if x]
    flat_sizes = [int(x) for x in args.flat_sizes.split(",") if x]
    if args.images > 0:
        bench_hashing(args.images, (w, h), args.workers)
    if sizes:
        bench_search(sizes, args.radius, flat_sizes, args.repeat)
    decide_rows = [int(x) for x in args.decide_rows.split(",") if x]
    if decide_rows:
        bench_decide(decide_rows, args.baseline, args.decide_repeat)
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
