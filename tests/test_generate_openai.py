"""`curate generate --backend openai` against a real OpenAI-compatible server.

The server is `transformers serve` (fastapi + uvicorn, the `dev` extra) on
127.0.0.1, serving a tiny random LLaVA checkpoint offline on the CPU
(`curate.generation.serve`: the tiny Qwen2.5-VL cannot be served here, its
processor needs torchvision). It decodes the base64 images it is sent: an image
prompt costs exactly the vision tokens more than the same text without one, and a
broken image makes it answer a client error (4xx). Starting it takes up to a minute on a busy
machine, so these tests are slow-marked.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from curate import dataset as D
from curate.generation.openai_api import EndpointUnreachable, OpenAIBackend
from curate.generation.requests import Job, Request, SamplingParams
from tests.helpers import assert_conserved, jpeg_bytes, rows, write_parquet

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytestmark = pytest.mark.slow

IMAGE_TOKENS = 5  # the tiny LLaVA: 28x28 pixels, 14-pixel patches, plus the CLS position


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    from curate.generation.serve import save_tiny_llava, transformers_serve

    root = tmp_path_factory.mktemp("server")
    model = save_tiny_llava(root / "tiny-llava")
    with transformers_serve(model, log=root / "serve.log") as (url, proc):
        yield url, str(model), proc


def _dataset(tmp_path: Path, run_cli) -> Path:
    raw = [{"q": f"Question {i}: what is shown?", "c": f"good {i}", "r": f"bad {i}",
            "img": jpeg_bytes(seed=i) if i % 2 == 0 else None} for i in range(6)]
    src = write_parquet(tmp_path / "raw.parquet", raw)
    run_cli("ingest", "generic", src, "--map", "prompt=q,chosen=c,rejected=r,image=img",
            "--out", tmp_path / "in", "--quiet")
    return tmp_path / "in"


def test_responses_come_back_with_images_sent(server, tmp_path: Path, run_cli) -> None:
    url, model, _ = server
    src = _dataset(tmp_path, run_cli)
    out = tmp_path / "gen"
    res = run_cli("generate", src, "--backend", "openai", "--endpoint", url, "--model", model,
                  "--out", out, "--n", "2", "--max-new-tokens", "6", "--keep-truncated",
                  "--cache", tmp_path / "cache", "--concurrency", "3")
    assert "12 samples generated" in res.output
    m = assert_conserved(out)
    assert m["rows_kept"] == 6 and m["generate"]["backend"]["backend"] == "openai"
    assert m["generate"]["tokens_out"] == 12 * 6
    tokens = {}
    for r in rows(out):
        assert len(r["responses"]) == 2 and r["model"] == model
        samples = json.loads(r["meta"])["generation"]["samples"]
        assert all(s["completion_tokens"] == 6 and s["finish_reason"] == "length"
                   for s in samples)
        tokens[r["prompt"][-1]["content"]] = (len(r["images"]), samples[0]["prompt_tokens"])
    # questions 0 and 1 have as many text tokens; 0 has an image: the server saw it
    assert tokens["Question 0: what is shown?"] == (1, tokens["Question 1: what is shown?"][1]
                                                     + IMAGE_TOKENS)
    # a rerun of the same command skips; with --force, every sample comes from the cache
    res = run_cli("generate", src, "--backend", "openai", "--endpoint", url, "--model", model,
                  "--out", out, "--n", "2", "--max-new-tokens", "6", "--keep-truncated",
                  "--cache", tmp_path / "cache", "--force")
    assert "0 samples generated, 12 from the cache" in res.output


def test_concurrency_is_bounded(server) -> None:
    url, model, _ = server
    sampling = SamplingParams(n=1, max_new_tokens=4)
    jobs = [Job(Request(f"k{i}", [{"role": "user", "content": f"Say {i}."}], [], f"p{i}", None),
                0, i) for i in range(10)]
    for limit in (1, 3):
        b = OpenAIBackend(url, model, concurrency=limit)
        samples = b.generate(jobs, sampling)
        assert all(s.error is None and s.completion_tokens == 4 for s in samples)
        assert b.max_in_flight == limit and b.http_requests == 10


def test_a_client_error_is_that_samples_failure_without_retries(server) -> None:
    """A broken image is the request's fault (transformers serve answers 4xx): retrying
    cannot help, so it is `generation_failed` at once and the other request succeeds."""
    url, model, _ = server
    bad = {"bytes": b"\xff\xd8 not really a jpeg", "format": "jpeg", "sha256": "x"}
    good = {"bytes": jpeg_bytes(), "format": "jpeg", "sha256": "y"}
    jobs = [Job(Request(k, [{"role": "user", "content": "<image>What is it?"}], [im], k, None),
                0, 1) for k, im in (("bad", bad), ("good", good))]
    b = OpenAIBackend(url, model, retries=2, backoff=0.05)
    got = b.generate(jobs, SamplingParams(n=1, max_new_tokens=3))
    assert got[0].error is not None and got[0].error[0] == "generation_failed"
    assert got[0].error[1].startswith("HTTP 4"), got[0].error
    assert got[1].error is None and got[1].completion_tokens == 3
    assert b.http_requests == 2 and b.retried == 0


def test_server_errors_are_retried_then_generation_failed() -> None:
    """A 5xx may pass: retried with backoff, then that sample's `generation_failed`
    (a stdlib HTTP server that always answers 500, so the retries are certain)."""
    import http.server

    class Always500(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server hook's name
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b"overloaded")

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Always500)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
        b = OpenAIBackend(url, "m", retries=2, backoff=0.01)
        job = Job(Request("q", [{"role": "user", "content": "Hi?"}], [], "q", None), 0, 1)
        got = b.generate([job], SamplingParams(n=1, max_new_tokens=3))
    finally:
        httpd.shutdown()
    assert got[0].error is not None and got[0].error[0] == "generation_failed"
    assert "HTTP 500" in got[0].error[1] and "after 2 retries" in got[0].error[1]
    assert b.http_requests == 3 and b.retried == 2


def test_server_stopped_mid_run_exits_2_and_keeps_finished_samples(server, tmp_path: Path,
                                                                   run_cli) -> None:
    url, model, proc = server  # runs last in this module: it stops the server
    src = _dataset(tmp_path, run_cli)
    cache = tmp_path / "cache"

    def stop_after_two_samples() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            files = list(cache.glob("*.jsonl"))
            if files and len(files[0].read_text().splitlines()) >= 2:
                proc.terminate()
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=stop_after_two_samples)
    watcher.start()
    res = run_cli("generate", src, "--backend", "openai", "--endpoint", url, "--model", model,
                  "--out", tmp_path / "gen", "--n", "4", "--max-new-tokens", "40",
                  "--concurrency", "1", "--retries", "2", "--cache", cache, expect=2)
    watcher.join()
    assert "stopped answering" in res.output and "rerun the same command" in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "gen").exists()
    finished = len(next(cache.glob("*.jsonl")).read_text().splitlines())
    assert 2 <= finished < 24
    with pytest.raises(EndpointUnreachable):
        OpenAIBackend(url, model, retries=1, backoff=0.01).one(
            Job(Request("k", [{"role": "user", "content": "hi"}], [], "p", None), 0, 0),
            SamplingParams(n=1, max_new_tokens=2))
    assert D.read_manifest(tmp_path / "gen") is None
