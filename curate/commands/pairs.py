"""`curate pairs`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Annotated, Any

import typer

from curate.commands.common import (
    check_model_engine,
    given,
    handle_errors,
    make_engine,
    print_summary,
)
from curate.commands.options import (
    CHECKPOINT_HELP,
    MODEL_BATCH,
    DeviceOpt,
    EngineOpt,
    ForceOpt,
    GpusPerWorkerOpt,
    InputsArg,
    MinMarginOpt,
    ModelBatchOpt,
    OutOpt,
    QuietOpt,
    RayAddressOpt,
    ScoreCacheOpt,
    WorkersOpt,
)
from curate.stages.pairs import PairsConfig, run


@handle_errors
def pairs(
    inputs: InputsArg,
    out: OutOpt,
    model: Annotated[str, typer.Option(
        help=f"{CHECKPOINT_HELP}, that scores every response."
    )],
    strategy: Annotated[str, typer.Option(
        help="best-worst: the best against the worst response; top-bottom: each of the --k "
        "best against each of the --k worst; all: every two responses."
    )] = PairsConfig.strategy,
    k: Annotated[int | None, typer.Option(
        "--k", help="top-bottom: responses on each side (default 2; at most half of them)."
    )] = None,
    min_margin: MinMarginOpt = None,
    near_identical: Annotated[float, typer.Option(
        help="Responses whose normalised texts are equal, or whose word-level similarity "
        "(difflib ratio) is at least T, count as one and are never paired (1: equality only)."
    )] = PairsConfig.near_identical,
    score_cache: ScoreCacheOpt = None,
    batch_size: ModelBatchOpt = None,
    device: DeviceOpt = None,
    engine: EngineOpt = "local",
    workers: WorkersOpt = None,
    ray_address: RayAddressOpt = None,
    gpus_per_worker: GpusPerWorkerOpt = 0.0,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Build preference pairs (DPO / MPO data) from a policy's sampled responses.

    Reads candidates folders (`curate ingest candidates`), scores every distinct
    response once with the reward model (cached by model fingerprint and text hash, so
    a rerun with another strategy or margin scores nothing) and writes canonical pairs
    with chosen_score / rejected_score and source pairs:<policy model>. A prompt with no
    pair is rejected: too_few_candidates, near_identical_candidates or ambiguous.
    --engine ray: the uncached responses of each batch are scored in a pool of Ray
    actors, each holding its own copy of the reward model (--gpus-per-worker GPUs each:
    one actor per that many GPUs; else --workers actors); this process still plans,
    caches and writes, so the output is the same as --engine local's.

    Example:
        curate pairs work/cands --model work/rm --out work/pairs --min-margin 0.5
        curate pairs work/cands --model work/rm --out work/pairs-tb --strategy top-bottom --k 2
        curate pairs work/cands --model work/rm --out work/pairs --engine ray \
            --gpus-per-worker 1
    """
    from curate.stages.pairs import make_scorer

    check_model_engine(engine, workers, gpus_per_worker)
    cfg = PairsConfig(strategy=strategy, k=k, near_identical=near_identical,
                      score_cache=score_cache, **given(min_margin=min_margin))
    cfg = replace(cfg, scorer=make_scorer(model, batch_size or MODEL_BATCH, device=device))
    runner = make_engine(engine, workers, ray_address, gpus_per_worker)
    try:
        manifest = run(inputs, out, cfg, force=force, engine=runner)
    finally:
        runner.close()
    if not quiet:
        print_summary(manifest, out)
        _print_pairs(manifest)


def _print_pairs(manifest: Mapping[str, Any]) -> None:
    from curate.progress import console

    info = manifest.get("pairs", {})
    c = console()
    s = info["scores"]
    c.print(f"scores: {s['computed']} computed, {s['cached']} from the cache "
            f"(key {info['score_key'][:12]}); {info['candidates_near_identical']} of "
            f"{info['candidates']} responses near-identical to another", highlight=False)
    c.print(f"pairs: {info['pairs_produced']} from {info['prompts_with_pairs']} of "
            f"{info['prompts']} prompts", highlight=False)
    hist = info["margin_histogram"]
    if hist["counts"]:
        bins = ", ".join(f"{lo:.3g}-{hi:.3g}: {n}" for lo, hi, n in
                         zip(hist["edges"], hist["edges"][1:], hist["counts"], strict=False))
        c.print(f"margins: {bins}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(pairs)
