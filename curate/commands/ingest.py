"""`curate ingest` and `curate info`."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

from curate.commands.common import (
    UsageFailure,
    handle_errors,
    location,
    make_engine,
    print_summary,
)
from curate.commands.help_style import live_help
from curate.commands.options import (
    EngineOpt,
    ForceOpt,
    JsonOpt,
    OutOpt,
    QuietOpt,
    RayAddressOpt,
    WorkersOpt,
)
from curate.sources import ADAPTERS, kinds_help
from curate.stages.ingest import IngestConfig, run


def mappable_kinds() -> dict[str, tuple[str, ...]]:
    """KIND -> the FIELDs its --map may name, for every kind that takes --map."""
    from curate.stages.ingest_candidates import FIELDS

    fields = {k: cls.map_fields for k, cls in ADAPTERS.items() if hasattr(cls, "map_fields")}
    return {**fields, "candidates": FIELDS}


def map_help() -> str:
    kinds = "; ".join(f"{k}: {', '.join(f)}" for k, f in mappable_kinds().items())
    return (f"FIELD=COLUMN,... where FIELD is, for {kinds}. COLUMN may reach into nested "
            "values: a.b, a[0].")


@handle_errors
def ingest(
    kind: Annotated[str, live_help(typer.Argument(),
                                   lambda: f"Source format: {kinds_help()}.")],
    inputs: Annotated[list[str], typer.Argument(
        help="Files, folders or globs (.jsonl/.json/.parquet/.csv, .gz allowed; .arrow), "
        "save_to_disk folders, or hf://ORG/NAME."
    )],
    out: OutOpt,
    image_root: Annotated[Path | None, typer.Option(
        help="Folder that relative image paths resolve under; paths escaping it are rejected."
    )] = None,
    mapping: Annotated[str | None, live_help(typer.Option("--map"), map_help)] = None,
    source: Annotated[str | None, typer.Option(help="Source label (default: the KIND).")] = None,
    config: Annotated[str | None, typer.Option(
        help="Dataset config (hub datasets; llava-critic: pairwise or pointwise)."
    )] = None,
    split: Annotated[str, typer.Option(
        help="Split of a hub dataset (or of a save_to_disk DatasetDict folder).")
    ] = IngestConfig.split,
    revision: Annotated[str | None, typer.Option(
        help="Hub dataset revision: a branch, tag or commit sha (default: main). The commit "
        "it resolves to is recorded in the manifest and the input fingerprint."
    )] = None,
    data_dir: Annotated[str | None, typer.Option(
        help="Folder inside a hub dataset to read (e.g. hh-rlhf's harmless-base).")] = None,
    min_score_gap: Annotated[float, typer.Option(
        help="With chosen/rejected scores: a pair whose chosen score leads by less than this "
        "is ambiguous (equal scores always are; chosen below rejected is "
        "score_contradicts_label)."
    )] = IngestConfig.min_score_gap,
    max_pixels: Annotated[int, typer.Option(
        help="Images with more pixels are rejected (image_too_large) before decoding."
    )] = IngestConfig.max_pixels,
    max_image_bytes: Annotated[int, typer.Option(
        help="Encoded images larger than this many bytes are rejected (image_too_large): a "
        "file by its size on disk, before it is read."
    )] = IngestConfig.max_image_bytes,
    engine: EngineOpt = "local",
    workers: WorkersOpt = None,
    ray_address: RayAddressOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Read a source dataset into a canonical dataset folder (kept/, rejected/, manifest.json).

    Every image is fully decoded once, as JPEG (MPO too), PNG, WEBP, GIF, BMP or TIFF;
    other formats (PostScript, PSD, ...) are rejected, never decoded. Rows with a corrupt,
    oversized or unreachable image, no prompt, a missing/empty/identical response, a NaN
    score or any value that cannot be read go to rejected/ with a reason: one bad row
    never stops the run. A file that cannot be read at all (not UTF-8, broken JSON or
    gzip, a corrupt parquet page) stops it with exit code 2, naming the file and line.
    An empty file (or one of whitespace only) holds no rows, whatever its format.

    Example:
        curate ingest hh-rlhf data/harmless-base-test.jsonl.gz --out work/hh
        curate ingest generic pairs.parquet --map prompt=question,image=img --out work/g
    """
    from curate.sources.generic import parse_mapping

    fields = mappable_kinds().get(kind)
    if mapping and fields is None:
        raise UsageFailure(f"--map does not apply to {kind!r}; it is for "
                           f"{', '.join(mappable_kinds())}")
    cfg = IngestConfig(
        kind, source=source, mapping=parse_mapping(mapping, fields or ()), config=config,
        split=split, image_root=image_root, max_pixels=max_pixels,
        max_image_bytes=max_image_bytes, revision=revision, data_dir=data_dir,
        min_score_gap=min_score_gap)
    manifest = run(inputs, out, cfg, engine=make_engine(engine, workers, ray_address),
                   force=force)
    if manifest.get("text_only"):
        from curate.progress import console

        console().print(f"[yellow]warning:[/yellow] {kind} was ingested text-only (no "
                        "--image-root): its rows keep their image paths in meta but no images, "
                        "and `curate eval` labels the score text-only", highlight=False)
    if not quiet:
        print_summary(manifest, out)


@handle_errors
def info(
    folder: Annotated[Path, typer.Argument(
        parser=location, help="A dataset folder: a path or a filesystem URI (s3://...).")],
    as_json: JsonOpt = False,
) -> None:
    """Rows kept and rejected, by source and by reason.

    Example:
        curate info work/hh --json
    """
    from rich.console import Console
    from rich.table import Table

    from curate.dataset import KEPT, REJECTED, Dataset

    ds = Dataset.open(folder)
    m = ds.manifest
    kept_by_source = Counter(ds.read(KEPT, columns=["source"])["source"].to_pylist())
    rej = ds.read(REJECTED, columns=["source", "reject_reason"])
    rej_by = Counter(zip(rej["source"].to_pylist(), rej["reject_reason"].to_pylist(),
                         strict=True))
    summary = {
        "path": str(folder),
        "stage": m["stage"],
        "rows_in": m["rows_in"],
        "rows_kept": m["rows_kept"],
        "rows_rejected": m["rows_rejected"],
        "kept_by_source": dict(sorted(kept_by_source.items())),
        "rejected_by_reason": m["rejected_by_reason"],
        "rejected_by_source_and_reason": {
            f"{s}/{r}": n for (s, r), n in sorted(rej_by.items())
        },
    }
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    out = Console()
    out.print(f"{folder} ({m['stage']}): {m['rows_in']} in, {m['rows_kept']} kept, "
              f"{m['rows_rejected']} rejected", highlight=False, soft_wrap=True)
    t = Table()
    t.add_column("source")
    t.add_column("kept", justify="right")
    t.add_column("rejected: reason", justify="left")
    sources = sorted(set(kept_by_source) | {s for s, _ in rej_by})
    for s in sources:
        reasons = ", ".join(f"{r}: {n}" for (src, r), n in sorted(rej_by.items()) if src == s)
        t.add_row(s, str(kept_by_source.get(s, 0)), reasons or "-")
    out.print(t)


def register(app: typer.Typer) -> None:
    app.command()(ingest)
    app.command()(info)
