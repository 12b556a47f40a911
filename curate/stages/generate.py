"""`curate generate`: sample N responses per prompt from a policy model, as a candidates folder.

Input: any dataset folders; their kept rows' prompts (with images) are the requests,
one per distinct normalised prompt + images (`curate.generation.requests`), all rows
or only those `curate reward --action flag` flagged. Output: a candidates folder
written through the same row builder as `curate ingest candidates`
(`curate.stages.ingest_candidates.candidates_record`), so `curate pairs` reads it unchanged:
`source` "generate", `source_id` the pair_id of the request's first input row,
`model` the policy, `meta.generation` the facts of each sample (seed, finish reason,
tokens) and the pair ids of every input row the request stands for.

Conservation counts the selected input rows: each candidates row, kept or rejected,
consumes the rows that share its prompt. A request whose every sample failed for
good is a rejected row (`prompt_too_long`, `generation_failed`); one with no usable
response (empty, or cut at --max-new-tokens unless --keep-truncated) is rejected as
`no_responses`, as ingest would. Left-out samples are named in
`meta.invalid_responses` like ingest's.

Resume: each finished sample goes to the generation cache (`curate.generation.cache`)
as it finishes, so a killed run redoes only what it had not finished.

Engines: by default the backend runs in this process. With an engine that has
workers of its own (`curate generate --engine ray`), the driver still plans, reads
and writes the cache and writes the output; only the backend's `generate` of each
chunk's cache misses runs in the engine's actors (`engine.map_actors`), each building
the backend once from its picklable `spec()` (a model load per actor, with
--gpus-per-worker GPUs). Results come back in chunk order and every sample has its
own seed, so the output is the same as this process's. A chunk's samples are cached
when the chunk comes back (in this process: as each batch finishes).
"""

from __future__ import annotations

import functools
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa

from curate import dataset as D
from curate import schema as S
from curate.engine.protocol import distributed
from curate.generation.cache import GenerationCache, default_generation_cache
from curate.generation.requests import (
    Job,
    Request,
    Sample,
    SamplingParams,
    Selection,
    check_selectable,
    iter_requests,
    jobs_for,
    plan_requests,
)
from curate.manifest import Manifest
from curate.pipeline.entry import RUN_ONLY, configured
from curate.pipeline.runner import register_stage

if TYPE_CHECKING:
    from curate.engine.protocol import Engine

SOURCE = "generate"
OnSample = Callable[[int, Sample], None]  # (index in the jobs given, its sample) as each ends


class Backend(Protocol):
    """What `generate` needs of a backend (transformers in process, or an OpenAI server)."""

    name: str

    @property
    def fingerprint(self) -> str: ...

    @property
    def model_name(self) -> str: ...

    def describe(self) -> dict[str, Any]: ...

    def generate(self, jobs: Sequence[Job], sampling: SamplingParams,
                 on_sample: OnSample | None = None) -> list[Sample]: ...


def _worker_setup(spec: Any, sampling: SamplingParams) -> Callable[[list[Job]], list[Sample]]:
    """Run once per engine worker: its own backend, built from `spec` (loaded on first
    use, so a run whose samples are all cached loads nothing); returns jobs -> samples."""
    backend = spec.build()

    def run(jobs: list[Job]) -> list[Sample]:
        return backend.generate(jobs, sampling) if jobs else []

    return run


@dataclass
class Totals:
    """Throughput facts for the manifest."""

    samples_generated: int = 0
    samples_cached: int = 0
    samples_failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    generate_seconds: float = 0.0
    finish: Counter[str] | None = None

    def __post_init__(self) -> None:
        self.finish = Counter()

    def to_dict(self) -> dict[str, Any]:
        secs = self.generate_seconds
        return {
            "samples_generated": self.samples_generated, "samples_cached": self.samples_cached,
            "samples_failed": self.samples_failed, "tokens_in": self.prompt_tokens,
            "tokens_out": self.completion_tokens, "seconds": round(secs, 3),
            "tokens_per_second": round(self.completion_tokens / secs, 2) if secs > 0 else None,
            "samples_per_second": round(self.samples_generated / secs, 3) if secs > 0 else None,
            "finish_reasons": dict(sorted((self.finish or {}).items())),
        }


def request_row(request: Request, samples: list[Sample], jobs: list[Job], model: str,
                keep_truncated: bool) -> tuple[dict[str, Any], tuple[str, str] | None]:
    """The candidates row for one request's samples and its refusal (reason, detail), if any."""
    from curate.stages.ingest_candidates import candidates_record

    responses: list[str] = []
    response_samples: list[int] = []
    invalid: list[dict[str, Any]] = []
    facts: list[dict[str, Any]] = []
    for job, s in zip(jobs, samples, strict=True):
        fact: dict[str, Any] = {"index": job.index, "seed": job.seed}
        if s.error is not None:
            fact["error"] = s.error[0]
            invalid.append({"index": job.index, "reason": s.error[0], "raw": s.error[1]})
        else:
            fact.update(finish_reason=s.finish_reason, prompt_tokens=s.prompt_tokens,
                        completion_tokens=s.completion_tokens)
            if not s.text.strip():
                invalid.append({"index": job.index, "reason": "empty_response", "raw": s.text})
            elif s.finish_reason == "length" and not keep_truncated:
                invalid.append({"index": job.index, "reason": "truncated", "raw": s.text})
            else:
                responses.append(s.text)
                response_samples.append(job.index)
        facts.append(fact)
    meta: dict[str, Any] = {"generation": {
        "model": model, "samples": facts, "response_samples": response_samples,
        "input_pair_ids": request.pair_ids}}
    if invalid:
        meta["invalid_responses"] = invalid
    row = candidates_record(SOURCE, request.source_id, request.prompt, responses,
                            request.images, model, request.category, meta)
    problem: tuple[str, str] | None = None
    errors = [s.error for s in samples if s.error is not None]
    if len(errors) == len(samples):
        problem = errors[0]
    elif not responses:
        why = Counter(i["reason"] for i in invalid)
        problem = ("no_responses", "none of the {} samples is usable ({})".format(
            len(samples), ", ".join(f"{k}: {v}" for k, v in sorted(why.items()))))
    return row, problem


def _chunks(requests: Iterator[Request], size: int) -> Iterator[list[Request]]:
    chunk: list[Request] = []
    for r in requests:
        chunk.append(r)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@dataclass(frozen=True)
class GenerateConfig:
    """`backend`: the policy model's (`make_backend`: in process, vLLM or an
    OpenAI-compatible server; recorded as its `describe()`). `cache`: the generation
    cache folder (None: `default_generation_cache()`). `requests_per_chunk`: requests
    handed to the backend at once (and written together)."""

    backend: Backend | None = None
    sampling: SamplingParams = field(default_factory=SamplingParams)
    selection: Selection = field(default_factory=Selection)
    keep_truncated: bool = False
    cache: str | os.PathLike[str] | None = field(default=None, metadata=RUN_ONLY)
    requests_per_chunk: int = field(default=32, metadata=RUN_ONLY)


def run(inputs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str],
        cfg: GenerateConfig, *, engine: Engine | None = None, force: bool = False) -> Manifest:
    """Sample responses for the prompts of `inputs` into the candidates folder `out`.

    `engine`: None or a local engine: the backend generates in this process; a Ray engine:
    each chunk's cache misses are generated in its actors, each with a backend built from
    `backend.spec()` (see the module docstring). Returns the manifest."""
    from curate.pipeline.runner import StageRun, input_record
    from curate.progress import bar

    backend, sampling, selection = cfg.backend, cfg.sampling, cfg.selection
    cache, keep_truncated = cfg.cache, cfg.keep_truncated
    if backend is None:
        raise ValueError("generate: give a backend (--model, or --server URL)")
    datasets = [D.Dataset.open(p) for p in inputs]
    check_selectable(datasets, selection)
    config = {"backend": backend.describe(), "sampling": sampling.to_dict(),
              "selection": selection.to_dict(), "keep_truncated": keep_truncated}
    workers = engine if distributed(engine) else None
    if workers is not None and not callable(getattr(backend, "spec", None)):
        raise ValueError(f"the {backend.name} backend cannot run in engine workers (its "
                         "server does the parallel work): use the local engine")
    engine_info = ({**workers.describe(), "backend": backend.name} if workers is not None
                   else {"engine": "local", "workers": 1, "backend": backend.name})
    stage_run = StageRun("generate", out, config, [input_record(d) for d in datasets],
                         force=force, base_schema=S.CANDIDATES_SCHEMA, engine=engine_info)
    with stage_run:
        if stage_run.skipped:
            return stage_run.manifest
        stage_run.open()
        t0 = time.perf_counter()
        plan = plan_requests(datasets, selection)
        stage_run.steps["plan"] = time.perf_counter() - t0
        store = GenerationCache(cache or default_generation_cache(), backend.fingerprint,
                                sampling)
        totals = Totals()
        per_prompt: Counter[int] = Counter()
        left_out = 0
        try:
            chunks = _chunks(iter_requests(datasets, plan), cfg.requests_per_chunk)
            if workers is not None:
                done = _generate_in_workers(chunks, sampling, backend, store, totals, workers)
            else:
                done = ((c, _generate_chunk(c, sampling, backend, store, totals))
                        for c in chunks)
            with bar("generate", len(plan.first), unit="prompts") as b:
                for chunk, results in done:
                    kept, rejected, reasons, details = [], [], [], []
                    used_kept = used_rejected = 0
                    for request, jobs, samples in results:
                        row, problem = request_row(request, samples, jobs, backend.model_name,
                                                   keep_truncated)
                        if problem is None:
                            kept.append(row)
                            used_kept += len(request.pair_ids)
                            per_prompt[len(row["responses"])] += 1
                            left_out += len(jobs) - len(row["responses"])
                        else:
                            rejected.append(row)
                            reasons.append(problem[0])
                            details.append(problem[1])
                            used_rejected += len(request.pair_ids)
                    stage_run.add_in(sum(len(r.pair_ids) for r in chunk))
                    stage_run.keep(pa.Table.from_pylist(kept, schema=S.CANDIDATES_SCHEMA),
                             consumed=used_kept)
                    stage_run.reject(pa.Table.from_pylist(rejected, schema=S.CANDIDATES_SCHEMA),
                               reasons, details, consumed=used_rejected)
                    b.advance(len(chunk))
        finally:
            store.close()
        stage_run.steps["generate"] = time.perf_counter() - t0 - stage_run.steps["plan"]
        info = totals.to_dict()
        stage_run.extra["generate"] = {
            "model": backend.model_name, "backend": backend.describe(),
            "sampling": sampling.to_dict(), "selection": selection.to_dict(),
            "rows_read": plan.rows_read, "rows_selected": plan.selected,
            "requests": len(plan.first), **info,
        }
        stage_run.extra["candidates"] = {
            "responses": sum(k * v for k, v in per_prompt.items()),
            "responses_per_prompt": {str(k): v for k, v in sorted(per_prompt.items())},
            "invalid_responses_left_out": left_out,
        }
    return stage_run.manifest


ChunkResults = list[tuple[Request, list[Job], list[Sample]]]


class _Lookup:
    """One chunk's jobs per request, the samples the cache has, and the jobs it lacks."""

    def __init__(self, chunk: list[Request], sampling: SamplingParams, store: GenerationCache,
                 totals: Totals) -> None:
        self.chunk = chunk
        self.per_request = [(r, jobs_for(r, sampling)) for r in chunk]
        self.found: dict[tuple[str, int], Sample] = {}
        self.todo: list[Job] = []
        for _, jobs in self.per_request:
            for job in jobs:
                hit = store.get(job)
                if hit is None:
                    self.todo.append(job)
                else:
                    self.found[(job.request.key, job.index)] = hit
        totals.samples_cached += len(self.found)
        self.reported: set[int] = set()

    def record(self, i: int, s: Sample, store: GenerationCache, totals: Totals) -> None:
        """Sample `s` of `todo[i]` finished: cached and counted (once)."""
        if i in self.reported:
            return
        self.reported.add(i)
        job = self.todo[i]
        store.add(job, s)
        self.found[(job.request.key, job.index)] = s
        if s.error is None:
            totals.samples_generated += 1
            totals.prompt_tokens += s.prompt_tokens
            totals.completion_tokens += s.completion_tokens
            assert totals.finish is not None
            totals.finish[s.finish_reason] += 1
        else:
            totals.samples_failed += 1

    def finish(self, samples: list[Sample], backend_name: str, store: GenerationCache,
               totals: Totals) -> ChunkResults:
        if len(samples) != len(self.todo):
            raise RuntimeError(f"the {backend_name} backend returned {len(samples)} samples "
                               f"for {len(self.todo)} jobs")
        for i, s in enumerate(samples):
            self.record(i, s, store, totals)
        store.flush()
        return [(r, jobs, [self.found[(r.key, j.index)] for j in jobs])
                for r, jobs in self.per_request]


def _generate_chunk(chunk: list[Request], sampling: SamplingParams, backend: Backend,
                    store: GenerationCache, totals: Totals) -> ChunkResults:
    """Every sample of `chunk`'s requests: from the cache, else from the backend (whose
    finished samples are cached before anything else happens)."""
    look = _Lookup(chunk, sampling, store, totals)
    samples: list[Sample] = []
    if look.todo:
        t = time.perf_counter()
        try:
            samples = backend.generate(look.todo, sampling,
                                       lambda i, s: look.record(i, s, store, totals))
        finally:
            store.flush()
        totals.generate_seconds += time.perf_counter() - t
    return look.finish(samples, backend.name, store, totals)


def _generate_in_workers(chunks: Iterable[list[Request]], sampling: SamplingParams,
                         backend: Backend, store: GenerationCache, totals: Totals, engine: Engine
                         ) -> Iterator[tuple[list[Request], ChunkResults]]:
    """(chunk, its samples) in chunk order, the cache misses generated by `engine`'s
    actors (a few chunks in flight per actor). `generate_seconds` counts the time this
    process waits for them, so tokens/s is the pool's throughput."""
    setup = functools.partial(_worker_setup, backend.spec(), sampling)  # type: ignore[attr-defined]
    pending: deque[_Lookup] = deque()

    def items() -> Iterator[list[Job]]:
        for chunk in chunks:
            look = _Lookup(chunk, sampling, store, totals)
            pending.append(look)
            yield look.todo

    results = iter(engine.map_actors(setup, items()))
    while True:
        t = time.perf_counter()
        try:
            samples = next(results)
        except StopIteration:
            break
        finally:
            totals.generate_seconds += time.perf_counter() - t
        look = pending.popleft()
        yield look.chunk, look.finish(samples, backend.name, store, totals)


def generate(inputs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *,
             config: GenerateConfig | None = None, engine: Engine | None = None,
             force: bool = False, **options: Any) -> Manifest:
    """`run` with `config` (default: GenerateConfig()) and GenerateConfig's fields as
    keywords (`sampling=None`, `selection=None`: their defaults)."""
    options = {k: v for k, v in options.items()
               if not (k in ("sampling", "selection") and v is None)}
    return run(inputs, out, configured(GenerateConfig, config, options), engine=engine,
               force=force)


register_stage("generate", 52, run=run, config=GenerateConfig)
