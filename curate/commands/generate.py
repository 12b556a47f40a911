"""`curate generate`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from curate.commands.common import (
    UsageFailure,
    check_model_engine,
    given,
    handle_errors,
    make_engine,
    print_summary,
)
from curate.commands.options import (
    MODEL_BATCH,
    DeviceOpt,
    EngineOpt,
    ForceOpt,
    GpusPerWorkerOpt,
    InputsArg,
    ModelBatchOpt,
    OutOpt,
    QuietOpt,
    RayAddressOpt,
    SeedOpt,
    WorkersOpt,
    model_aliases,
)
from curate.generation.requests import SamplingParams, Selection
from curate.stages.generate import GenerateConfig, run

BACKENDS = ("transformers", "openai")


@handle_errors
def generate(
    inputs: InputsArg,
    out: OutOpt,
    model: Annotated[str, typer.Option(
        help="The policy model: a local checkpoint folder, a hub id, or "
        f"{model_aliases('tiny-qwen2.5-vl')} for --backend transformers; the served "
        "model's name for --backend openai."
    )],
    n: Annotated[int, typer.Option("--n", help="Responses sampled per prompt.")
                 ] = SamplingParams.n,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (0: greedy).")
                           ] = SamplingParams.temperature,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling: the smallest set of tokens "
                                         "whose probability reaches P.")
                     ] = SamplingParams.top_p,
    max_new_tokens: Annotated[int, typer.Option(
        help="Tokens per response at most; a response cut there has finish_reason=length "
        "and is not offered to `curate pairs` unless --keep-truncated."
    )] = SamplingParams.max_new_tokens,
    seed: SeedOpt = None,
    backend: Annotated[str, typer.Option(
        help="transformers: the model in this process (bf16 on a GPU), or in Ray actors "
        "with --engine ray (one model copy per actor, --gpus-per-worker GPUs each); openai: "
        "any OpenAI-compatible server at --endpoint (vLLM, SGLang, TGI, transformers serve)."
    )] = "transformers",
    endpoint: Annotated[str | None, typer.Option(
        help="--backend openai: the server's base URL, e.g. http://127.0.0.1:8000/v1."
    )] = None,
    api_key_env: Annotated[str | None, typer.Option(
        help="--backend openai: the environment variable holding the API key (sent as a "
        "Bearer token); none by default."
    )] = None,
    concurrency: Annotated[int, typer.Option(
        help="--backend openai: requests in flight at most."
    )] = 8,
    timeout: Annotated[float, typer.Option(
        help="--backend openai: seconds per HTTP request before it counts as failed."
    )] = 600.0,
    retries: Annotated[int, typer.Option(
        help="--backend openai: retries (exponential backoff) of a request that got 429, a "
        "5xx, a timeout or a dropped connection, before its sample is generation_failed."
    )] = 4,
    where: Annotated[str, typer.Option(
        help="all: every kept row's prompt; flagged: only rows `curate reward --action "
        "flag` flagged (needs_regeneration set)."
    )] = Selection.where,
    reason: Annotated[list[str] | None, typer.Option(
        help="Only rows flagged for this reason (repeatable), e.g. low_margin; implies "
        "--where flagged."
    )] = None,
    keep_truncated: Annotated[bool, typer.Option(
        "--keep-truncated", help="Offer responses cut at --max-new-tokens to `curate pairs` "
        "too (by default they are recorded in meta.invalid_responses only)."
    )] = GenerateConfig.keep_truncated,
    max_model_len: Annotated[int | None, typer.Option(
        help="--backend transformers: prompt + new tokens at most (default: the model's "
        "max_position_embeddings); a longer request is rejected as prompt_too_long."
    )] = None,
    batch_size: ModelBatchOpt = None,
    device: DeviceOpt = None,
    cache: Annotated[Path | None, typer.Option(
        help="Generation cache folder: finished samples, so a killed run resumes (default "
        "$CURATE_CACHE/generate or ~/.cache/curate/generate)."
    )] = None,
    engine: EngineOpt = "local",
    workers: WorkersOpt = None,
    ray_address: RayAddressOpt = None,
    gpus_per_worker: GpusPerWorkerOpt = 0.0,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Sample N responses per prompt from a policy model into a candidates folder.

    The prompts (and images) of IN's kept rows are the requests, one per distinct
    normalised prompt and images. The output is a candidates folder exactly as
    `curate ingest candidates` writes it, so `curate pairs` scores it into new pairs.
    Every finished sample is cached, so a killed run resumes without redoing it. A
    request that fails for good is a rejected row (prompt_too_long, generation_failed).
    --seed: sample i of a prompt uses a seed derived from it, the prompt and i, so the
    same seed gives the same responses whatever the batching. --batch-size and --device
    go with --backend transformers (sequences per generate call; bf16 on a GPU).
    --engine ray (--backend transformers): each chunk of prompts is generated in a pool
    of Ray actors, each holding its own copy of the model (--gpus-per-worker GPUs each:
    one actor per that many GPUs; else --workers actors); this process still plans,
    caches and writes, so the output is the same as --engine local's.

    Example:
        curate generate work/reward --where flagged --model tiny-qwen2.5-vl --out work/regen
        curate generate work/reward --model Qwen/Qwen2.5-VL-7B-Instruct --engine ray \
            --gpus-per-worker 1 --out work/regen
        vllm serve Qwen/Qwen2.5-VL-72B-Instruct --tensor-parallel-size 8
        curate generate work/reward --where flagged --backend openai \\
            --endpoint http://localhost:8000/v1 --model Qwen/Qwen2.5-VL-72B-Instruct \\
            --out work/regen
    """
    if backend not in BACKENDS:
        raise UsageFailure(f"--backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    sampling = SamplingParams(n=n, temperature=temperature, top_p=top_p,
                              max_new_tokens=max_new_tokens, **given(seed=seed))
    selection = Selection(where=where, reasons=tuple(reason or ()))
    check_model_engine(engine, workers, gpus_per_worker)
    if engine == "ray" and backend == "openai":
        raise UsageFailure("--engine ray goes with --backend transformers: with --backend "
                           "openai the server does the parallel work (raise --concurrency)")
    if backend == "openai":
        from curate.generation.openai_api import OpenAIBackend, check_reachable

        if not endpoint:
            raise UsageFailure("--backend openai needs --endpoint URL (e.g. "
                               "http://127.0.0.1:8000/v1)")
        if device or batch_size:
            raise UsageFailure("--device and --batch-size go with --backend transformers "
                               "(the server places and batches its model)")
        policy: Any = OpenAIBackend(endpoint, model, api_key_env=api_key_env,
                                    concurrency=concurrency, timeout=timeout, retries=retries)
        check_reachable(policy)
    else:
        if endpoint or api_key_env:
            raise UsageFailure("--endpoint and --api-key-env go with --backend openai")
        from curate.generation.hf import TransformersBackend

        policy = TransformersBackend(model, batch_size=batch_size or MODEL_BATCH,
                                     max_model_len=max_model_len, device=device)
    runner = make_engine(engine, workers, ray_address, gpus_per_worker)
    try:
        cfg = GenerateConfig(backend=policy, sampling=sampling, selection=selection,
                             keep_truncated=keep_truncated, cache=cache)
        manifest = run(inputs, out, cfg, force=force, engine=runner)
    finally:
        runner.close()
    if not quiet:
        print_summary(manifest, out)
        _print_generate(manifest)


def _print_generate(manifest: Mapping[str, Any]) -> None:
    from curate.progress import console

    g = manifest.get("generate", {})
    console().print(
        f"generate: {g['requests']} requests from {g['rows_selected']} of {g['rows_read']} rows; "
        f"{g['samples_generated']} samples generated, {g['samples_cached']} from the cache, "
        f"{g['samples_failed']} failed; {g['tokens_in']} tokens in, {g['tokens_out']} out, "
        f"{g['tokens_per_second'] or 0:.1f} tokens/s", highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(generate)
