"""Generation throughput of `curate generate`'s backends, and the openai client's peak RSS.

One run, on this machine's CPU:

1. the `openai` backend (`OpenAIBackend`) against a local `transformers serve` of a tiny
   random LLaVA (`curate.generation.serve`), at concurrency 1, 4 and 16: --requests
   distinct prompts (every other one with a small JPEG, which the server decodes), --n
   samples each (one HTTP request per sample), --max-new-tokens. Printed: requests/s
   (prompts), samples/s (= HTTP requests/s), completion tokens/s, the server's CPU (cores,
   its process tree) and the speed-up over concurrency 1 in the same run (the baseline).
   Levels alternate for --rounds rounds; the best round of each is compared.
   Wanted: throughput rises with concurrency until the server saturates, and does not
   fall past it (each level >= 0.9x the best lower one). `transformers serve` runs one
   `generate` at a time for a vision model (its continuous batching is for text-only
   LLMs), so it saturates early; the control below tells the client's limit from the
   server's.
2. control: the same client against a stdlib server in this process that answers every
   request after --control-latency-ms without computing anything (a server that never
   saturates): wanted speed-up at 16 >= 8x, i.e. the client keeps 16 requests in flight.
3. the in-process `transformers` backend (`TransformersBackend`, tiny-qwen2.5-vl, one
   torch thread like the server) on the same requests: samples/s, tokens/s.
4. peak RSS of the real `curate generate --backend openai` (a fresh process per size, its
   own ru_maxrss from wait4) on a dataset of --rss-requests and 4x as many prompts made by
   `curate ingest generic`. Wanted: peak RSS(4N) <= 1.3x peak RSS(N).

    python -m bench bench_generate
    python -m bench bench_generate --requests 96 --n 4 --max-new-tokens 32 --rss-requests 500
"""

from __future__ import annotations

import argparse
import http.server
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LEVELS = (1, 4, 16)
TINY_QWEN = "tiny-qwen2.5-vl"


def jpeg(seed: int, size: tuple[int, int] = (64, 48)) -> bytes:
    """A small textured JPEG, different for each seed."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    arr = np.full((size[1], size[0], 3), (seed * 37 % 200, 90, 160), dtype=np.uint8)
    arr += rng.integers(0, 50, size=arr.shape, dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def question(i: int) -> str:
    return f"Question {i}: what is shown here, in a few words?"


def make_jobs(requests: int, n: int, max_new_tokens: int) -> tuple[list[Any], Any]:
    """(jobs, sampling): `requests` distinct prompts, every other one with an image."""
    from curate.generation.requests import Request, SamplingParams, jobs_for, request_key

    sampling = SamplingParams(n=n, temperature=0.8, top_p=0.95, max_new_tokens=max_new_tokens)
    jobs = []
    for i in range(requests):
        prompt = [{"role": "user", "content": question(i)}]
        images = ([{"bytes": jpeg(i), "format": "jpeg", "sha256": None}] if i % 2 == 0 else [])
        req = Request(request_key(prompt, images), prompt, images, f"p{i}", None, [f"p{i}"])
        jobs.extend(jobs_for(req, sampling))
    return jobs, sampling


class CpuMeter:
    """CPU seconds of a process and its descendants (the server spawns its model worker)."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.proc = psutil.Process(pid)

    def seconds(self) -> float:
        total = 0.0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except Exception:  # a child that just ended
                pass
        return total


def run_level(backend: Any, jobs: list[Any], sampling: Any, requests: int,
              meter: CpuMeter | None) -> dict[str, float]:
    cpu0 = meter.seconds() if meter else 0.0
    t = time.perf_counter()
    samples = backend.generate(jobs, sampling)
    secs = time.perf_counter() - t
    failed = [s.error for s in samples if s.error is not None]
    if failed:
        raise RuntimeError(f"{len(failed)} samples failed, e.g. {failed[0]}")
    tokens = sum(s.completion_tokens for s in samples)
    return {"seconds": secs, "requests_s": requests / secs, "samples_s": len(samples) / secs,
            "tokens_s": tokens / secs,
            "server_cores": (meter.seconds() - cpu0) / secs if meter else float("nan")}


def openai_levels(url: str, model: str, jobs: list[Any], sampling: Any, requests: int,
                  rounds: int, meter: CpuMeter | None) -> dict[int, dict[str, float]]:
    """The best round (most samples/s) of each concurrency level, levels alternating."""
    from curate.generation.openai_api import OpenAIBackend

    OpenAIBackend(url, model, concurrency=4).generate(jobs[:8], sampling)  # warm up
    best: dict[int, dict[str, float]] = {}
    for _ in range(rounds):
        for c in LEVELS:
            r = run_level(OpenAIBackend(url, model, concurrency=c), jobs, sampling, requests,
                          meter)
            if c not in best or r["samples_s"] > best[c]["samples_s"]:
                best[c] = r
    return best


def print_levels(title: str, best: dict[int, dict[str, float]]) -> dict[int, float]:
    print(f"\n{title}")
    print(f"{'concurrency':>11} {'requests/s':>11} {'samples/s':>10} {'tokens/s':>9} "
          f"{'server cores':>13} {'speed-up':>9}")
    base = best[LEVELS[0]]["samples_s"]
    ups = {}
    for c in LEVELS:
        r = best[c]
        ups[c] = r["samples_s"] / base
        cores = "" if r["server_cores"] != r["server_cores"] else f"{r['server_cores']:.2f}"
        print(f"{c:>11} {r['requests_s']:11.1f} {r['samples_s']:10.1f} {r['tokens_s']:9.0f} "
              f"{cores:>13} {'x' + format(ups[c], '.2f'):>9}", flush=True)
    return ups


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default listen backlog of 5 drops connections at 16 in flight


class _Answers(http.server.BaseHTTPRequestHandler):
    """A chat-completions answer after a fixed delay: a server that never saturates."""

    latency = 0.05
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - the http.server hook's name
        self._json({"object": "list", "data": [{"id": "control", "object": "model"}]})

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        time.sleep(self.latency)
        k = int(body.get("max_tokens") or 16)
        self._json({"choices": [{"index": 0, "finish_reason": "length",
                                 "message": {"role": "assistant", "content": "ok " * k}}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": k}})

    def _json(self, data: dict[str, Any]) -> None:
        raw = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: object) -> None:
        pass


def control_levels(latency: float, jobs: list[Any], sampling: Any, requests: int,
                   rounds: int) -> dict[int, dict[str, float]]:
    _Answers.latency = latency
    httpd = _Server(("127.0.0.1", 0), _Answers)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
        return openai_levels(url, "control", jobs, sampling, requests, rounds, None)
    finally:
        httpd.shutdown()
        httpd.server_close()


def in_process(jobs: list[Any], sampling: Any, requests: int, batch_size: int,
               rounds: int) -> tuple[float, dict[str, float]]:
    """(load seconds, the best round) of TransformersBackend(tiny-qwen2.5-vl)."""
    import torch

    from curate.generation.hf import TransformersBackend

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        backend = TransformersBackend(TINY_QWEN, batch_size=batch_size, device="cpu")
        t = time.perf_counter()
        backend.generate(jobs[:2], sampling)  # loads the model
        load = time.perf_counter() - t
        best: dict[str, float] | None = None
        for _ in range(rounds):
            r = run_level(backend, jobs, sampling, requests, None)
            if best is None or r["samples_s"] > best["samples_s"]:
                best = r
        assert best is not None
        return load, best
    finally:
        torch.set_num_threads(threads)


def _cli(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "curate.cli", *map(str, args)]


def _env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else "")}


def ingest_dataset(folder: Path, requests: int, image_size: tuple[int, int]) -> Path:
    """`curate ingest generic` over `requests` distinct prompts, every other with a JPEG."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    raw = folder / "raw.parquet"
    pq.write_table(pa.Table.from_pylist(
        [{"q": question(i), "c": f"a good answer {i}", "r": f"a bad answer {i}",
          "img": jpeg(i, image_size) if i % 2 == 0 else None} for i in range(requests)]), raw)
    out = folder / "in"
    subprocess.run(_cli("ingest", "generic", raw, "--map", "prompt=q,chosen=c,rejected=r,image=img",
                        "--out", out, "--quiet"), cwd=ROOT, env=_env(), check=True)
    return out


def generate_peak_rss(src: Path, folder: Path, url: str, model: str, n: int,
                      max_new_tokens: int, concurrency: int) -> tuple[float, float]:
    """(seconds, peak RSS MiB) of one `curate generate --backend openai` process."""
    cmd = _cli("generate", src, "--backend", "openai", "--endpoint", url, "--model", model,
               "--n", str(n), "--max-new-tokens", str(max_new_tokens), "--keep-truncated",
               "--concurrency", str(concurrency), "--out", folder / "gen",
               "--cache", folder / "cache", "--quiet")
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env())
    _, status, usage = os.wait4(proc.pid, 0)
    secs = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"curate generate exited {proc.returncode}: {' '.join(cmd)}")
    return secs, usage.ru_maxrss / 1024  # KiB on Linux


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench bench_generate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=48,
                    help="distinct prompts per throughput run (every other with an image)")
    ap.add_argument("--n", type=int, default=2, help="samples per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2, help="rounds per level; the best counts")
    ap.add_argument("--batch-size", type=int, default=16, help="the in-process backend's")
    ap.add_argument("--control-latency-ms", type=float, default=50.0,
                    help="the control server's answer delay (0: no control run)")
    ap.add_argument("--rss-requests", type=int, default=150,
                    help="N: prompts of the smaller RSS run (the other has 4N)")
    ap.add_argument("--rss-image-px", type=int, default=256,
                    help="side of the JPEGs in the RSS datasets")
    ap.add_argument("--rss-concurrency", type=int, default=16)
    ap.add_argument("--serve-arg", action="append", default=[],
                    help="extra `transformers serve` argument (repeatable)")
    ap.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: temp)")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from curate.generation.serve import save_tiny_llava, transformers_serve

    jobs, sampling = make_jobs(args.requests, args.n, args.max_new_tokens)
    print(f"{args.requests} prompts ({(args.requests + 1) // 2} with a 64x48 JPEG) x n={args.n} = "
          f"{len(jobs)} samples, max_new_tokens {args.max_new_tokens}, temperature "
          f"{sampling.temperature}; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    tmp = tempfile.TemporaryDirectory(prefix="bench_generate_") if args.keep is None else None
    work = Path(tmp.name) if tmp else args.keep
    work.mkdir(parents=True, exist_ok=True)
    try:
        model = str(save_tiny_llava(work / "tiny-llava"))
        t = time.perf_counter()
        with transformers_serve(model, log=work / "serve.log",
                                extra_args=args.serve_arg) as (url, proc):
            print(f"transformers serve (tiny LLaVA, CPU, {' '.join(args.serve_arg) or 'defaults'})"
                  f" up in {time.perf_counter() - t:.1f} s", flush=True)
            served = openai_levels(url, model, jobs, sampling, args.requests, args.rounds,
                                   CpuMeter(proc.pid))
            ups = print_levels("openai backend -> transformers serve (baseline: concurrency 1)",
                               served)
            control_ups = None
            if args.control_latency_ms > 0:
                control = control_levels(args.control_latency_ms / 1000, jobs, sampling,
                                         args.requests, args.rounds)
                control_ups = print_levels(
                    f"control: openai backend -> a stdlib server answering after "
                    f"{args.control_latency_ms:.0f} ms (never saturates)", control)

            load, hf = in_process(jobs, sampling, args.requests, args.batch_size, args.rounds)
            print(f"\nin-process transformers backend ({TINY_QWEN}, batch {args.batch_size}, "
                  f"1 torch thread; model load {load:.1f} s)")
            print(f"{'':>11} {'requests/s':>11} {'samples/s':>10} {'tokens/s':>9}")
            print(f"{'':>11} {hf['requests_s']:11.1f} {hf['samples_s']:10.1f} "
                  f"{hf['tokens_s']:9.0f}", flush=True)

            n_small = args.rss_requests
            px = (args.rss_image_px, args.rss_image_px)
            rss = {}
            print(f"\npeak RSS of `curate generate --backend openai` (fresh process each, "
                  f"n={args.n}, concurrency {args.rss_concurrency}, {px[0]}px JPEGs on every "
                  "other prompt)")
            print(f"{'prompts':>9} {'samples':>8} {'seconds':>8} {'samples/s':>10} "
                  f"{'peak RSS MiB':>13}")
            for size in (n_small, 4 * n_small):
                folder = work / f"rss-{size}"
                src = ingest_dataset(folder, size, px)
                secs, peak = generate_peak_rss(src, folder, url, model, args.n,
                                               args.max_new_tokens, args.rss_concurrency)
                rss[size] = peak
                print(f"{size:>9} {size * args.n:>8} {secs:8.1f} {size * args.n / secs:10.1f} "
                      f"{peak:13.1f}", flush=True)
    finally:
        if tmp:
            tmp.cleanup()

    print("\nratios")
    base = served[LEVELS[0]]
    best_lower = 1.0
    holds = True
    for c in LEVELS[1:]:
        holds &= ups[c] >= 0.9 * best_lower
        best_lower = max(best_lower, ups[c])
    sat = next((c for c, nxt in zip(LEVELS, LEVELS[1:], strict=False)
                if ups[nxt] < 1.1 * ups[c]), LEVELS[-1])
    print(f"  transformers serve: speed-up x{ups[4]:.2f} at 4, x{ups[16]:.2f} at 16 over "
          f"{base['samples_s']:.1f} samples/s at 1; saturated from concurrency {sat} (server "
          f"CPU {served[sat]['server_cores']:.2f} cores); no fall past saturation "
          f"(each level >= 0.9x the best lower): {'ok' if holds else 'NOT MET'}")
    if control_ups is not None:
        print(f"  control server: speed-up x{control_ups[4]:.2f} at 4, x{control_ups[16]:.2f} at "
              f"16 (wanted >= 8 at 16): {'ok' if control_ups[16] >= 8 else 'NOT MET'}")
    print(f"  in-process / openai at concurrency {LEVELS[-1]}: "
          f"x{hf['samples_s'] / served[LEVELS[-1]]['samples_s']:.2f} samples/s "
          "(different tiny models: Qwen2.5-VL in process, LLaVA served)")
    ratio = rss[4 * n_small] / rss[n_small]
    print(f"  peak RSS {4 * n_small} vs {n_small} prompts: x{ratio:.3f} "
          f"(+{rss[4 * n_small] - rss[n_small]:.1f} MiB; wanted <= 1.3): "
          f"{'ok' if ratio <= 1.3 else 'NOT MET'}")


if __name__ == "__main__":
    main(sys.argv[1:])
