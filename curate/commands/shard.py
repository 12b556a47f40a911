"""`curate shard`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from curate.commands.common import given, handle_errors, make_engine, print_summary
from curate.commands.help_style import live_help
from curate.commands.options import (
    EngineOpt,
    EvalFractionOpt,
    ForceOpt,
    InputsArg,
    OutOpt,
    QuietOpt,
    RayAddressOpt,
    SeedOpt,
    WorkersOpt,
)
from curate.export import formats_help


@handle_errors
def shard(
    inputs: InputsArg,
    out: OutOpt,
    rows_per_shard: Annotated[int | None, typer.Option(
        help="At most this many rows a shard (default 50000 when --shards is not given)."
    )] = None,
    shards: Annotated[int | None, typer.Option(
        help="Number of train shards (instead of --rows-per-shard)."
    )] = None,
    eval_fraction: EvalFractionOpt = None,
    seed: SeedOpt = None,
    formats: Annotated[list[str] | None, live_help(
        typer.Option("--format"), lambda: "Also write a training framework's format under "
        f"OUT/FORMAT: {formats_help()}. Repeat for several.")] = None,
    only: Annotated[str | None, typer.Option(
        "--only", metavar="text|vision", help="Exports only: write just the 'text' (no "
        "image) or just the 'vision' (with images) pairs; the kept shards always hold both.",
    )] = None,
    absolute_paths: Annotated[bool | None, typer.Option(
        "--absolute-paths/--no-absolute-paths", help="Exports that name files (mpo's "
        "meta.json annotation and root, its image paths): absolute paths of OUT, so "
        "InternVL's scripts run from any working directory, or paths relative to "
        "OUT/FORMAT for a folder you will move or upload. Default: absolute when OUT is "
        "a local folder.", show_default=False,
    )] = None,
    engine: EngineOpt = "local",
    workers: WorkersOpt = None,
    ray_address: RayAddressOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Write deterministic, length-balanced parquet shards and an eval split.

    Rows are shuffled by --seed (independently of input order), an --eval-fraction of
    each source goes to eval, and rows are dealt to shards longest first in snake
    order, so shards have equal row counts (within one) and similar token totals.
    Every row gets `split` (train|eval), `stage` (multimodal|text: what the two-stage
    schedule of `curate train` selects by) and `est_tokens`. kept/ holds
    train-*.parquet and eval-*.parquet; the manifest lists each shard's rows and sha256.

    Example:
        curate shard work/reward --out work/shards --shards 8 --eval-fraction 0.02 --format trl
    """
    from curate.stages.shard import ShardConfig, run

    cfg = ShardConfig(formats=tuple(formats or ()), **given(
        rows_per_shard=rows_per_shard, shards=shards, eval_fraction=eval_fraction, seed=seed,
        only=only, absolute_paths=absolute_paths))
    manifest = run(inputs, out, cfg, engine=make_engine(engine, workers, ray_address),
                   force=force)
    if not quiet:
        print_summary(manifest, out)
        _print_shards(manifest, out)


def _print_shards(manifest: Mapping[str, Any], out: Path) -> None:
    from rich.table import Table

    from curate.progress import console

    t = Table(title=f"shards in {out}/kept")
    t.add_column("file", no_wrap=True)
    t.add_column("split")
    for col in ("rows", "multimodal", "est. tokens"):
        t.add_column(col, justify="right")
    t.add_column("sha256")
    for s in manifest.get("shards", []):
        t.add_row(Path(s["file"]).name, s["split"], str(s["rows"]), str(s["multimodal_rows"]),
                  str(s["est_tokens"]), s["sha256"][:12])
    console().print(t)
    for name, summary in manifest.get("exports", {}).items():
        subsets = summary.get("subsets")
        if subsets:
            for kind, sub in subsets.items():
                console().print(f"{name}: {out}/{name}/{kind} ({sub['rows']} rows)",
                                highlight=False)
        else:
            console().print(f"{name}: {out}/{name}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(shard)
