"""`curate reward`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from curate.commands.common import (
    EngineOpt,
    ForceOpt,
    GpusPerWorkerOpt,
    InputsArg,
    OutOpt,
    QuietOpt,
    RayAddressOpt,
    WorkersOpt,
    handle_errors,
    make_engine,
    print_summary,
)


@handle_errors
def reward(
    inputs: InputsArg,
    out: OutOpt,
    model: Annotated[str | None, typer.Option(
        help="A reward-model checkpoint (from `curate train`) that scores every pair. "
        "With --kfold: the base model the surrogates train from (default minilm)."
    )] = None,
    kfold: Annotated[int | None, typer.Option(
        help="Train K surrogates with `curate train`, each on K-1 folds, and score each "
        "fold with the one that did not see it (out-of-fold scores)."
    )] = None,
    train_config: Annotated[Path | None, typer.Option(
        help="--kfold: the surrogates' training config (YAML/JSON, as `curate train`)."
    )] = None,
    freeze: Annotated[str | None, typer.Option(
        help="--kfold: override the config's freeze (backbone: head only, on cached "
        "features; minutes on a CPU)."
    )] = None,
    surrogates: Annotated[Path | None, typer.Option(
        help="--kfold: keep the fold checkpoints in this folder (default: removed)."
    )] = None,
    min_margin: Annotated[float | None, typer.Option(
        help="Margin (chosen - rejected reward) below M: low_margin."
    )] = None,
    min_chosen: Annotated[float | None, typer.Option(
        help="Chosen reward below the Q-quantile of all chosen rewards: low_chosen_score."
    )] = None,
    keep_top: Annotated[list[str] | None, typer.Option(
        help="F or GROUP=F, repeatable: keep the top fraction F of pairs by margin in each "
        "group of --by (F alone: every group not named), the rest: not_top_margin. "
        "Skywork-Reward: --keep-top 0.1 --keep-top math=0.3 --keep-top code=0.3."
    )] = None,
    by: Annotated[str, typer.Option(help="--keep-top groups: category or source.")]
    = "category",
    disagree: Annotated[bool, typer.Option(
        "--disagree", help="Margin below 0 (the model prefers the rejected): rm_disagrees."
    )] = False,
    min_source_gap: Annotated[float | None, typer.Option(
        help="The source's own chosen_score - rejected_score below G, where it gives both: "
        "ambiguous."
    )] = None,
    action: Annotated[str, typer.Option(
        help="drop: reject with the rule as reason; flag: keep, naming the rule in a "
        "needs_regeneration column."
    )] = "drop",
    score_cache: Annotated[Path | None, typer.Option(
        help="A score cache folder shared by runs (the previous --out is always one)."
    )] = None,
    batch_size: Annotated[int, typer.Option(help="Sequences per model forward.")] = 16,
    bf16: Annotated[bool | None, typer.Option(
        "--bf16/--no-bf16", help="--model: force bf16 autocast on or off (default: the "
        "precision the checkpoint was trained in, where the hardware has bf16)."
    )] = None,
    seed: Annotated[int, typer.Option(help="--kfold: seed of the fold split.")] = 0,
    engine: EngineOpt = "local",
    workers: WorkersOpt = None,
    ray_address: RayAddressOpt = None,
    gpus_per_worker: GpusPerWorkerOpt = 0.0,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Score chosen and rejected of every pair with a reward model and act on the scores.

    Every row, kept or rejected, gets chosen_reward, rejected_reward and reward_margin.
    Scores are cached by (model fingerprint, pair_id) in the output folder, so a rerun
    with other thresholds scores nothing. A pair several rules match is rejected with
    the first of ambiguous, rm_disagrees, low_margin, low_chosen_score, not_top_margin.

    Example:
        curate reward work/decontam --out work/reward --model ckpt/surrogate --min-margin 0.5
        curate reward work/hh --out work/hh-rm --kfold 5 --train-config rm.yaml \\
            --freeze backbone --disagree
    """
    from curate.scoring.rules import RewardRules, parse_keep_top
    from curate.stages.reward import make_scorer
    from curate.stages.reward import reward as run_reward

    rules = RewardRules(min_margin=min_margin, min_chosen=min_chosen,
                        keep_top=parse_keep_top(keep_top), by=by, disagree=disagree,
                        min_source_gap=min_source_gap)
    scorer = make_scorer(inputs, model, kfold=kfold, train_config=train_config, freeze=freeze,
                         seed=seed, surrogates=surrogates, batch_size=batch_size, bf16=bf16,
                         quiet=quiet)
    manifest = run_reward(inputs, out, scorer=scorer, rules=rules, action=action,
                          score_cache=score_cache, force=force,
                          engine=make_engine(engine, workers, ray_address, gpus_per_worker))
    if not quiet:
        print_summary(manifest, out)
        _print_reward(manifest)


def _print_reward(manifest: dict[str, Any]) -> None:
    from curate.progress import console

    info = manifest.get("reward", {})
    c = console()
    if "scores" in info:
        s = info["scores"]
        c.print(f"scores: {s['computed']} computed, {s['cached']} from the cache "
                f"(key {info['score_key'][:12]})", highlight=False)
    stats = info.get("stats", {})
    if stats.get("scored_pairs"):
        q = stats["margin_quantiles"]
        c.print(f"margin: mean {stats['margin_mean']:.4g}, median {q['0.5']:.4g}; "
                f"{stats['agreement']:.1%} of pairs have margin > 0", highlight=False)
    folds = info.get("kfold", [])
    if folds and not info.get("kfold_trained", True):
        c.print("k-fold surrogates (from the run that computed the cached scores):",
                highlight=False)
    for f in folds:
        c.print(f"fold {f['fold'] + 1}/{len(folds)}: trained on {f['train_pairs']}, scored "
                f"{f['scored_pairs']}, out-of-fold agreement {f['oof_accuracy']:.3f} "
                f"({f['seconds']:.0f}s)", highlight=False)
    if info.get("flagged"):
        flagged = ", ".join(f"{k}: {v}" for k, v in info["flagged"].items())
        c.print(f"flagged (needs_regeneration): {flagged}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(reward)
