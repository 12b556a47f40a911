"""`curate similar` (and the embedding options `curate decontam` shares)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from curate.commands.common import handle_errors, make_engine, print_summary
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
from curate.models.embedder import EmbedSettings
from curate.stages.similar import SimilarConfig, run


def embed_settings(inputs: list[Any], model: str | None, precision: str, cache: str | None,
                   device: str | None, batch_size: int | None = None) -> EmbedSettings:
    """The EmbedSettings a command's --model/--precision/--cache/--device name (no
    --device: the CPU, as these stages always embedded)."""
    from curate.models.embedder import cache_option

    return EmbedSettings(model=model, precision=precision, device=device or "cpu",
                         batch_size=batch_size, cache=cache_option(cache, inputs))


def print_embeddings(manifest: Mapping[str, Any]) -> None:
    from curate.progress import console

    e = manifest.get("embeddings") or {}
    if not e:
        return
    model = e.get("model") or {}
    how = (f", model {model.get('model')} {model.get('precision')} "
           f"(probe cosine {model.get('probe_cosine')})" if model else ", model not loaded")
    console().print(f"embeddings: {e.get('unique_texts')} unique texts, {e.get('from_store')} "
                    f"stored, {e.get('computed')} computed{how}", highlight=False)


@handle_errors
def similar(
    inputs: InputsArg,
    out: OutOpt,
    threshold: Annotated[float, typer.Option(
        help="Prompts with cosine >= this are near duplicates (one kept per group). 0.95: of "
        "the hh-rlhf questions, every pair at 0.95+ asks the same thing; 0.90-0.95 are "
        "rewordings too, but from 0.85-0.90 distinct requests of one template appear (two "
        "people's home addresses: 0.898), so 0.95 keeps a margin. Hand-written paraphrases "
        "score 0.96-0.99, distinct questions on one topic 0.40-0.66. The model is uncased: "
        "case and spacing edits score 1.0; on very short prompts punctuation can cost 0.1."
    )] = SimilarConfig.threshold,
    response_threshold: Annotated[float, typer.Option(
        help="chosen vs rejected cosine >= this: responses_too_similar (no preference signal). "
        "Above 1 turns the test off and skips embedding responses."
    )] = SimilarConfig.response_threshold,
    image_distance: ImageDistanceOpt = SimilarConfig.image_distance,
    k: Annotated[int, typer.Option(help="Neighbours searched per unique prompt.")
                 ] = SimilarConfig.k,
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
    """Reject near-duplicate prompts (similar_prompt) and pairs whose responses are
    near-identical (responses_too_similar), by sentence-embedding cosine.

    Each unique text is embedded once; the vectors go into OUT/embeddings/ and the cache,
    so a rerun with another threshold costs no model time. Rows with images are near
    duplicates only if every image matches too (--image-distance). Every row gets the
    columns similar_prompt_sim, similar_prompt_match, similar_response_sim and
    similar_group.

    Example:
        curate similar work/dedup --out work/similar --threshold 0.95
    """
    cfg = SimilarConfig(
        threshold=threshold, response_threshold=response_threshold,
        image_distance=image_distance, k=k,
        embed=embed_settings(list(inputs), model, precision, cache, device, batch_size))
    manifest = run(inputs, out, cfg, force=force,
                   engine=make_engine(engine, workers, ray_address, gpus_per_worker))
    if not quiet:
        print_summary(manifest, Path(str(out)))
        print_embeddings(manifest)


def register(app: typer.Typer) -> None:
    app.command()(similar)
