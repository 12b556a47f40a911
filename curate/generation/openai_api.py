"""The `openai` backend: any OpenAI-compatible chat-completions server over HTTP.

vLLM (`vllm serve`), SGLang, TGI and `transformers serve` all speak it. One HTTP
request per sample (`n` is not supported everywhere; `seed` is), at most
`concurrency` in flight. Images go as base64 data-URI `image_url` content parts,
placed where the prompt has `<image>` tags, the rest before the first user text.

Failures: 429, 5xx, timeouts and dropped connections are retried with exponential
backoff; a request still failing after `retries` is that sample's
`generation_failed`; a 400 that names the context length is `prompt_too_long`, any
other 4xx `generation_failed`. When the server stops answering at all (connection
refused after the retries), the run stops with `EndpointUnreachable` (exit 2): the
samples that finished are in the cache, so a rerun resumes.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from curate.generation.requests import Job, Sample, SamplingParams

_IMAGE_TAG = re.compile(r"<image>\s*")
_TOO_LONG = re.compile(r"context length|context window|maximum context|too long|max_model_len|"
                       r"maximum model length|input length", re.IGNORECASE)
RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class EndpointUnreachable(ValueError):
    """The server cannot be reached (exit 2: start it, or fix --endpoint)."""


def data_uri(image: dict[str, Any]) -> str:
    fmt = (image.get("format") or "png").lower()
    mime = "jpeg" if fmt in ("jpeg", "jpg") else fmt
    return f"data:image/{mime};base64,{base64.b64encode(image['bytes']).decode('ascii')}"


def chat_messages(prompt: Sequence[dict[str, Any]],
                  images: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI chat messages: text content, or content parts with the images as data URIs."""
    if not images:
        return [{"role": m["role"], "content": _IMAGE_TAG.sub("", m["content"] or "")}
                for m in prompt]
    uris = [data_uri(im) for im in images]
    left = list(uris)
    out: list[dict[str, Any]] = []
    for m in prompt:
        text = m["content"] or ""
        if m["role"] != "user":
            out.append({"role": m["role"], "content": _IMAGE_TAG.sub("", text)})
            continue
        parts: list[dict[str, Any]] = []
        for k, piece in enumerate(_IMAGE_TAG.split(text)):
            if k and left:
                parts.append({"type": "image_url", "image_url": {"url": left.pop(0)}})
            if piece:
                parts.append({"type": "text", "text": piece})
        out.append({"role": "user", "content": parts})
    if left:  # images without a tag: before the first user message's text
        first = next((m for m in out if m["role"] == "user"), None)
        if first is None:
            first = {"role": "user", "content": []}
            out.append(first)
        first["content"] = [{"type": "image_url", "image_url": {"url": u}} for u in left] + \
            first["content"]
    return out


class OpenAIBackend:
    """`generate(jobs, sampling)` as chat-completions requests to `endpoint`."""

    name = "openai"

    def __init__(self, endpoint: str, model: str, *, api_key_env: str | None = None,
                 concurrency: int = 8, timeout: float = 600.0, retries: int = 4,
                 backoff: float = 0.5, max_backoff: float = 20.0) -> None:
        if concurrency < 1:
            raise ValueError(f"--concurrency must be at least 1, not {concurrency}")
        self.endpoint = endpoint.rstrip("/")
        self.model = model
        self.concurrency = concurrency
        self.timeout = timeout
        self.retries = retries
        self.backoff, self.max_backoff = backoff, max_backoff
        self._headers = {"Content-Type": "application/json"}
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise ValueError(f"--api-key-env {api_key_env}: that environment variable is "
                                 "not set")
            self._headers["Authorization"] = f"Bearer {key}"
        self.http_requests = 0  # attempts, retries included
        self.retried = 0
        self.max_in_flight = 0
        self._in_flight = 0

    @property
    def fingerprint(self) -> str:
        return f"openai:{self.model}"

    @property
    def model_name(self) -> str:
        return self.model

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model, "fingerprint": self.fingerprint,
                "endpoint": self.endpoint}

    # -- HTTP ------------------------------------------------------------------------------
    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        req = urllib.request.Request(f"{self.endpoint}/chat/completions",
                                     data=json.dumps(body).encode("utf-8"),
                                     headers=self._headers, method="POST")
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            return json.loads(resp.read().decode("utf-8"))

    def body(self, job: Job, sampling: SamplingParams) -> dict[str, Any]:
        return {"model": self.model,
                "messages": chat_messages(job.request.prompt, job.request.images),
                "temperature": sampling.temperature, "top_p": sampling.top_p,
                "max_tokens": sampling.max_new_tokens, "seed": job.seed, "stream": False}

    def one(self, job: Job, sampling: SamplingParams) -> Sample:
        """One sample with retries; raises EndpointUnreachable when nothing answers."""
        body = self.body(job, sampling)
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self.retried += 1
                time.sleep(min(self.max_backoff, self.backoff * 2 ** (attempt - 1)))
            self.http_requests += 1
            try:
                data = self._post(body)
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode("utf-8", "replace")[:500]
                last = f"HTTP {exc.code}: {detail}"
                if exc.code in RETRY_STATUS:
                    continue
                reason = ("prompt_too_long" if exc.code in (400, 413) and _TOO_LONG.search(detail)
                          else "generation_failed")
                return Sample(error=(reason, last))
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                cause: object = getattr(exc, "reason", exc)  # URLError, SSLError: the cause
                last = f"{type(cause).__name__}: {cause}"
                if _refused(exc) and attempt == self.retries:
                    raise EndpointUnreachable(
                        f"{self.endpoint} stopped answering ({last}) after {self.retries} "
                        "retries; the finished samples are cached: start the server again and "
                        "rerun the same command to resume") from None
                continue
            return _sample(data)
        return Sample(error=("generation_failed", f"after {self.retries} retries: {last}"))

    def generate(self, jobs: Sequence[Job], sampling: SamplingParams,
                 on_sample: Callable[[int, Sample], None] | None = None) -> list[Sample]:
        """One sample per job, at most `concurrency` requests in flight."""
        out: list[Sample | None] = [None] * len(jobs)

        def run(i: int) -> tuple[int, Sample]:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            try:
                return i, self.one(jobs[i], sampling)
            finally:
                self._in_flight -= 1

        todo = iter(range(len(jobs)))
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            pending: set[Future[tuple[int, Sample]]] = set()
            try:
                for i in todo:
                    pending.add(pool.submit(run, i))
                    if len(pending) >= self.concurrency:
                        break
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for f in done:
                        i, sample = f.result()
                        out[i] = sample
                        if on_sample is not None:
                            on_sample(i, sample)
                        nxt = next(todo, None)
                        if nxt is not None:
                            pending.add(pool.submit(run, nxt))
            except BaseException:
                for f in pending:
                    f.cancel()
                raise
        return [s if s is not None else Sample(error=("generation_failed", "no answer"))
                for s in out]


def _refused(exc: BaseException) -> bool:
    reason = getattr(exc, "reason", exc)
    return isinstance(reason, ConnectionRefusedError | ConnectionResetError) or (
        isinstance(reason, OSError) and getattr(reason, "errno", None) in (61, 111))


def _sample(data: dict[str, Any]) -> Sample:
    try:
        choice = data["choices"][0]
        text = choice["message"].get("content") or ""
        finish = choice.get("finish_reason") or "stop"
    except (KeyError, IndexError, TypeError, AttributeError):
        return Sample(error=("generation_failed", f"unexpected response: {str(data)[:300]}"))
    usage = data.get("usage") or {}
    return Sample(text=text, finish_reason="length" if finish == "length" else "stop",
                  prompt_tokens=int(usage.get("prompt_tokens") or 0),
                  completion_tokens=int(usage.get("completion_tokens") or 0))


def check_reachable(backend: OpenAIBackend, timeout: float = 10.0) -> None:
    """GET /models once: exit 2 now, not after every request's retries, when nothing answers."""
    req = urllib.request.Request(f"{backend.endpoint}/models", headers=backend._headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout):
            return
    except urllib.error.HTTPError:
        return  # something answers; the chat endpoint may still work
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise EndpointUnreachable(
            f"cannot reach {backend.endpoint} ({type(reason).__name__}: {reason}); start the "
            "server (e.g. `vllm serve MODEL`) or fix --endpoint") from None
