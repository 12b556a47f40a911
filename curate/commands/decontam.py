"""`curate decontam`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from curate.commands.common import handle_errors, location, make_engine, print_summary
from curate.commands.options import (
    DeviceOpt,
    EmbedCacheOpt,
    EmbedModelOpt,
    EngineOpt,
    ForceOpt,
    GpusPerWorkerOpt,
    ImageDistanceOpt,
    InputsArg,
    ModelBatchOpt,
    OutOpt,
    PrecisionOpt,
    QuietOpt,
    RayAddressOpt,
    WorkersOpt,
)
from curate.commands.similar import embed_settings, print_embeddings
from curate.models.embedder import EmbedSettings
from curate.stages.decontam import DecontamConfig, run


@handle_errors
def decontam(
    inputs: InputsArg,
    out: OutOpt,
    against: Annotated[list[Path], typer.Option(
        "--against", parser=location,
        help="An eval dataset folder (ingested rewardbench, vl-rewardbench, or any); repeat "
        "the option for several. All its rows with a prompt count, kept or rejected."
    )],
    ngram: Annotated[int, typer.Option(
        help="Contaminated when the prompt shares this many consecutive normalised words "
        "(NFKC, case-folded, no punctuation) with an eval prompt. Eval prompts shorter than "
        "this are compared whole."
    )] = DecontamConfig.ngram,
    embed_threshold: Annotated[float, typer.Option(
        help="Contaminated when the last user message's embedding is within this cosine of an "
        "eval prompt's. 0.9: with VL-RewardBench prompts planted into hh-rlhf under light "
        "edits, all four tests together found 96.3% (embedding alone 92%) and no untouched "
        "hh-rlhf pair came closer than 0.79 to any VL-RewardBench prompt; below 0.9 distinct "
        "requests of one template start to match (two people's home addresses: 0.898). "
        "Above 1 turns the test off."
    )] = DecontamConfig.embed_threshold,
    image_distance: ImageDistanceOpt = DecontamConfig.image_distance,
    image_prompt_threshold: Annotated[float, typer.Option(
        help="An image match is contamination when the prompts also overlap: cosine >= this "
        "(or an exact / n-gram match with the same eval row). 0.4: rewordings of 'describe "
        "this image' score 0.47 with each other (median), unrelated questions 0.17 (p95 0.37)."
    )] = DecontamConfig.image_prompt_threshold,
    contain_min: Annotated[int, typer.Option(
        help="An eval prompt of this many words up to --ngram - 1 also matches (exact) when a "
        "training prompt contains it whole. 5: no hh-rlhf prompt contains a VL-RewardBench "
        "prompt of 4+ words; 3-word ones ('what is this') already match unrelated chats."
    )] = DecontamConfig.contain_min,
    model: EmbedModelOpt = None,
    precision: PrecisionOpt = EmbedSettings.precision,
    cache: EmbedCacheOpt = None,
    device: DeviceOpt = None,
    engine: EngineOpt = "local",
    workers: WorkersOpt = None,
    ray_address: RayAddressOpt = None,
    gpus_per_worker: GpusPerWorkerOpt = 0.0,
    batch_size: ModelBatchOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Reject training pairs whose prompt overlaps an eval set's (contaminated).

    Four tests: a shared N-gram (ngram), the same normalised prompt (exact), an embedding
    within --embed-threshold (embedding), and a near-duplicate image plus an overlapping
    prompt (image). reject_detail names the test(s), the eval set and the eval row id,
    e.g. "ngram: vl-rewardbench:RLAIF-V-14 (3 shared 13-grams)". For training rows with
    images, a match to a short generic eval prompt ("Describe this image in detail.")
    counts only with a matching image. Every row gets decontam_max_sim, decontam_match,
    decontam_ngram_hits, decontam_image_distance and decontam_tests.

    Example:
        curate decontam work/similar --against work/eval-vlrb --against work/eval-rb \\
            --out work/decontam
    """
    cfg = DecontamConfig(
        ngram=ngram, embed_threshold=embed_threshold, image_distance=image_distance,
        image_prompt_threshold=image_prompt_threshold, contain_min=contain_min,
        against=tuple(against),
        embed=embed_settings(list(inputs), model, precision, cache, device, batch_size))
    manifest = run(inputs, out, cfg, force=force,
                   engine=make_engine(engine, workers, ray_address, gpus_per_worker))
    if not quiet:
        print_summary(manifest, Path(str(out)))
        print_embeddings(manifest)
        _print_tests(manifest)


def _print_tests(manifest: Mapping[str, Any]) -> None:
    from curate.progress import console

    fired = manifest.get("tests_fired") or {}
    if any(fired.values()):
        console().print("tests fired: " + ", ".join(f"{k}: {v}" for k, v in fired.items()),
                        highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(decontam)
