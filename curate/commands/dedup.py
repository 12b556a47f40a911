"""`curate dedup`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import typer

from curate.commands.common import handle_errors, make_engine, print_summary
from curate.commands.options import (
    EngineOpt,
    ForceOpt,
    InputsArg,
    OutOpt,
    QuietOpt,
    RayAddressOpt,
    WorkersOpt,
)
from curate.stages.dedup import DedupConfig, run


@handle_errors
def dedup(
    inputs: InputsArg,
    out: OutOpt,
    image_hash: Annotated[str, typer.Option(
        help="Perceptual hash: phash, dhash, ahash or whash (64 bits, stored per image as "
        "the column image_<hash> and reused when the input has it)."
    )] = DedupConfig.image_hash,
    max_distance: Annotated[int | None, typer.Option(
        help="Images at most this many bits apart are near duplicates. Default: 10 for phash "
        "and dhash, 6 for ahash and whash. Evidence (28 ukbench and scikit-image photos): "
        "re-encoded (JPEG q30-95, PNG) and resized (50-200%) copies stay within 6 bits with "
        "phash (dhash 9, ahash 4, whash 2), 1-2% crops of the ukbench photos within 8 "
        "(phash); ukbench's hflip and rotation are 32-34 bits away and distinct photos 20+ "
        "(dhash 16+, ahash 11+, whash 10+). 10 is also imagededup's pHash threshold."
    )] = None,
    prefer: Annotated[str | None, typer.Option(
        help="SOURCE,SOURCE,...: whose copy survives a duplicate group, first listed first; "
        "then the larger image, then the larger file, then the smallest pair_id."
    )] = None,
    conflicts: Annotated[str, typer.Option(
        help="Same prompt, images and responses with chosen/rejected swapped: 'drop' rejects "
        "every copy; 'keep-majority' keeps the majority label given 3+ votes."
    )] = DedupConfig.conflicts,
    near_match: Annotated[str, typer.Option(
        help="Near duplicates need the same normalised prompt ('prompt') or the same prompt "
        "and responses ('pair', which keeps several response pairs per image and question)."
    )] = DedupConfig.near_match,
    engine: EngineOpt = "local",
    workers: WorkersOpt = None,
    ray_address: RayAddressOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Remove exact duplicates, label conflicts and near-duplicate images across sources.

    Several inputs are merged (their kept rows, in order). Exact duplicates share the
    normalised prompt (NFKC, case-folded, whitespace collapsed), the decoded pixels of
    every image and both responses. Near duplicates share the prompt and have every
    image within --max-distance bits of the surviving row's (a chain of near matches
    does not reach further). Rejected rows name the surviving pair_id in
    reject_detail (and the distance, for near duplicates).

    Example:
        curate dedup work/rlaif work/llava --out work/dedup --prefer rlaif-v
    """
    cfg = DedupConfig(image_hash=image_hash, max_distance=max_distance,
                      prefer=tuple(s.strip() for s in (prefer or "").split(",") if s.strip()),
                      conflicts=conflicts, near_match=near_match)
    manifest = run(inputs, out, cfg, engine=make_engine(engine, workers, ray_address),
                   force=force)
    if not quiet:
        print_summary(manifest, out)
        _print_dedup(manifest)


def _print_dedup(manifest: Mapping[str, Any]) -> None:
    from curate.progress import console

    d = manifest.get("dedup")
    if not d:
        return
    sizes = ", ".join(f"{k}: {v}" for k, v in d["cluster_size_histogram"].items()) or "-"
    dists = ", ".join(f"{k}: {v}" for k, v in d["distance_histogram"].items()) or "-"
    console().print(
        f"{d['image_hash']} <= {d['max_distance']} bits: {d['images_decoded']} images decoded, "
        f"{d['images_reused']} hashes reused; {d['clusters']} image clusters (sizes {sizes}); "
        f"matched image pairs by distance {dists}", highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.command()(dedup)
