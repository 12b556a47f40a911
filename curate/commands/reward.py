"""`curate reward`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from curate.commands.common import handle_errors, make_engine, print_summary
from curate.commands.options import (
    BASE_MODEL_HELP,
    CHECKPOINT_HELP,
    MODEL_BATCH,
    Bf16Opt,
    DeviceOpt,
    EngineOpt,
    ForceOpt,
    FreezeOpt,
    GpusPerWorkerOpt,
    InputsArg,
    MinMarginOpt,
    ModelBatchOpt,
    OutOpt,
    QuietOpt,
    RayAddressOpt,
    ScoreCacheOpt,
    SeedOpt,
    WorkersOpt,
)
from curate.scoring.rules import RewardRules
from curate.stages.reward import RewardConfig, run


@handle_errors
def reward(
    inputs: InputsArg,
    out: OutOpt,
    model: Annotated[str | None, typer.Option(
        help=f"{CHECKPOINT_HELP}, that scores every pair. "
        f"With --kfold: the base model the surrogates train from (default minilm): "
        f"{BASE_MODEL_HELP}."
    )] = None,
    kfold: Annotated[int | None, typer.Option(
        help="Train K surrogates with `curate train`, each on K-1 folds, and score each "
        "fold with the one that did not see it (out-of-fold scores)."
    )] = None,
    train_config: Annotated[Path | None, typer.Option(
        help="--kfold: the surrogates' training config (YAML/JSON, as `curate train`)."
    )] = None,
    freeze: FreezeOpt = None,
    surrogates: Annotated[Path | None, typer.Option(
        help="--kfold: keep the fold checkpoints in this folder (default: removed)."
    )] = None,
    ensemble: Annotated[int, typer.Option(
        help="--kfold: train N k-fold runs (fold split and training seed shifted by one "
        "each) and average their calibrated log-odds; N times the training."
    )] = 1,
    min_margin: MinMarginOpt = None,
    min_chosen: Annotated[float | None, typer.Option(
        help="Chosen reward below the Q-quantile of all chosen rewards: low_chosen_score."
    )] = None,
    keep_top: Annotated[list[str] | None, typer.Option(
        help="F or GROUP=F, repeatable: keep the top fraction F of pairs by margin in each "
        "group of --by (F alone: every group not named), the rest: not_top_margin. "
        "Skywork-Reward: --keep-top 0.1 --keep-top math=0.3 --keep-top code=0.3."
    )] = None,
    by: Annotated[str, typer.Option(help="--keep-top groups: category or source.")]
    = RewardRules.by,
    disagree: Annotated[bool, typer.Option(
        "--disagree", help="Margin below 0 (the model prefers the rejected): rm_disagrees."
    )] = RewardRules.disagree,
    min_precision: Annotated[float, typer.Option(
        help="--disagree, --min-margin, --min-chosen reject only pairs whose probability "
        "of being mislabelled is at least P even at the low end of what the out-of-fold "
        "margins allow (the label-noise rate's 95% interval); and nothing at all, with a "
        "warning, when the surrogate is not significantly better than chance, cannot tell "
        "label noise from its own errors (the interval reaches 0), or no pair reaches P. "
        "0: the plain rules. With --action flag the rules mark every pair they match "
        "(nothing is removed; the quality figures are still reported)."
    )] = RewardRules.min_precision,
    max_reject_fraction: Annotated[float | None, typer.Option(
        help="Those rules reject at most this fraction of the pairs (the most probably "
        "mislabelled first)."
    )] = None,
    validate: Annotated[bool, typer.Option(
        "--validate/--no-validate", help="--kfold: retrain the surrogates without the pairs "
        "the guard would reject and abstain unless their out-of-fold agreement rises "
        "significantly (the 95% interval of the gain above 0; a "
        "second k-fold round: seconds on a frozen backbone, as long as the first otherwise)."
    )] = RewardRules.validate,
    source_scores: Annotated[bool, typer.Option(
        "--source-scores", help="Calibrate on the surrogate's margin and the source's own "
        "judge score gap (chosen_score - rejected_score, where the source has them)."
    )] = RewardRules.source_scores,
    min_source_gap: Annotated[float | None, typer.Option(
        help="The source's own chosen_score - rejected_score below G, where it gives both: "
        "ambiguous."
    )] = None,
    action: Annotated[str, typer.Option(
        help="drop: reject with the rule as reason; flag: keep, naming the rule in a "
        "needs_regeneration column; relabel: keep the pairs --disagree marks with chosen "
        "and rejected swapped (recorded in meta), drop the other rules' pairs."
    )] = RewardConfig.action,
    score_cache: ScoreCacheOpt = None,
    batch_size: ModelBatchOpt = None,
    bf16: Bf16Opt = None,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    engine: EngineOpt = "local",
    workers: WorkersOpt = None,
    ray_address: RayAddressOpt = None,
    gpus_per_worker: GpusPerWorkerOpt = 0.0,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Score chosen and rejected of every pair with a reward model and act on the scores.

    Every row, kept or rejected, gets chosen_reward, rejected_reward and reward_margin
    (and, for the margin rules, p_mislabelled: its 95% lower bound, and cleanlab's
    label_issue). The manifest's reward.quality says how good the surrogate is: its
    out-of-fold agreement with the labels and 95% interval, the label-noise rate's
    estimate and 95% interval (no estimate where the surrogate cannot tell noise from
    its own errors), and the expected precision (with its lower bound) and fraction of
    the rejections; when it cannot help it abstains. See docs/quality.md.
    Scores are cached by (model fingerprint, pair_id) in the output folder, so a rerun
    with other thresholds scores nothing. A pair several rules match is rejected with
    the first of ambiguous, rm_disagrees, low_margin, low_chosen_score, not_top_margin.
    --seed: the --kfold fold split and cleanlab's orientation of the pairs.

    Example:
        curate reward work/decontam --out work/reward --model work/rm --min-margin 0.5
        curate reward work/decontam --out work/reward --kfold 5 --model minilm \\
            --train-config recipes/train/minilm-frozen.yaml --disagree --min-precision 0.7
    """
    from curate.scoring.rules import parse_keep_top
    from curate.stages.reward import make_scorer

    seed = seed or RewardRules.seed
    rules = RewardRules(min_margin=min_margin, min_chosen=min_chosen,
                        keep_top=parse_keep_top(keep_top), by=by, disagree=disagree,
                        min_source_gap=min_source_gap, min_precision=min_precision,
                        max_reject_fraction=max_reject_fraction, source_scores=source_scores,
                        seed=seed, validate=validate)
    scorer = make_scorer(inputs, model, kfold=kfold, train_config=train_config, freeze=freeze,
                         seed=seed, surrogates=surrogates,
                         batch_size=batch_size or MODEL_BATCH, bf16=bf16, quiet=quiet,
                         ensemble=ensemble, device=device)
    cfg = RewardConfig(scorer=scorer, rules=rules, action=action, score_cache=score_cache)
    manifest = run(inputs, out, cfg, force=force,
                   engine=make_engine(engine, workers, ray_address, gpus_per_worker))
    if not quiet:
        print_summary(manifest, out)
        _print_reward(manifest)
    _warn(manifest)


def _warn(manifest: Mapping[str, Any]) -> None:
    """The guard's warnings, on stderr even under --quiet: a filter that abstained or
    rejects mostly correct pairs must not pass unnoticed."""
    for w in manifest.get("reward", {}).get("quality", {}).get("warnings", []):
        typer.echo(f"warning: {w}", err=True)


def _print_reward(manifest: Mapping[str, Any]) -> None:
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
    q = info.get("quality")
    if q:
        _print_quality(q)
    if info.get("flagged"):
        flagged = ", ".join(f"{k}: {v}" for k, v in info["flagged"].items())
        c.print(f"flagged (needs_regeneration): {flagged}", highlight=False)


def _print_quality(q: dict[str, Any]) -> None:
    from rich.table import Table

    from curate.progress import console

    def num(v: Any, fmt: str = ".3f") -> str:
        return "-" if v is None else format(v, fmt)

    lo, hi = q["oof_accuracy_ci95"]
    t = Table(title="reward filter quality", show_header=False)
    t.add_row("surrogate agreement with the labels" + (" (out of fold)" if q["out_of_fold"]
              else ""), f"{num(q['oof_accuracy'])} [95% CI {lo:.3f}, {hi:.3f}]"
              + ("" if q["better_than_chance"] else "  NOT above chance"))
    ci = q.get("estimated_noise_rate_ci95")
    t.add_row("estimated label-noise rate", (num(q["estimated_noise_rate"]) if ci is None else
              f"{num(q['estimated_noise_rate'])} [95% CI {ci[0]:.3f}, {ci[1]:.3f}]")
              + ("" if q.get("noise_rate_identified") else
                 "  NOT identified: noise and the surrogate's errors look alike"))
    t.add_row("pairs the rules mark / their expected precision (at least)",
              f"{q['marked_by_rules']} / {_precision(q, 'marked_expected_precision')}")
    t.add_row(f"rejected with --min-precision {q['min_precision']:g}",
              f"{q['rejected']} ({q['rejected_fraction']:.1%})")
    t.add_row("expected precision of the rejections (at least)",
              _precision(q, "expected_precision"))
    v = q.get("validation")
    if v:
        lo_, hi_ = v["gain_ci95"]
        t.add_row("retrained without them: out-of-fold agreement",
                  f"{v['accuracy_raw']:.3f} -> {v['accuracy_filtered']:.3f} "
                  f"(gain {v['gain']:+.3f}, 95% CI {lo_:+.3f}, {hi_:+.3f})")
    if q["abstained"]:
        t.add_row("[bold red]ABSTAINED[/]", f"[bold red]{q['abstain_reason']}[/]")
    console().print(t)


def _precision(q: dict[str, Any], key: str) -> str:
    """An expected precision and its 95% lower bound, as `0.812 (0.640)`."""
    est, low = q.get(key), q.get(key + "_lower")
    if low is None:
        return "-" if est is None else f"{est:.3f}"
    return ("unknown" if est is None else f"{est:.3f}") + f" (at least {low:.3f})"


def register(app: typer.Typer) -> None:
    app.command()(reward)
