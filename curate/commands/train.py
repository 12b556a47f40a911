"""`curate train`: train the reward model (backbone + linear head) on dataset folders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from curate.commands.common import UsageFailure, handle_errors
from curate.commands.options import (
    BASE_MODEL_HELP,
    Bf16Opt,
    DeviceOpt,
    EvalFractionOpt,
    FreezeOpt,
    QuietOpt,
    SeedOpt,
)

TrainDataArg = Annotated[list[Path] | None, typer.Argument(
    show_default=False, help="Training pairs: dataset folder(s) (their kept rows; a `curate "
    "shard` folder's train and eval shards), folders of parquet shards or parquet files.",
)]
# the form before training data became positional, kept so old scripts run
DeprecatedDataOpt = Annotated[list[Path] | None, typer.Option("--data", hidden=True)]
# what `--bf16 VALUE` (its form before --bf16/--no-bf16) leaves as a positional argument
_OLD_BF16_VALUES = {"auto", "true", "false", "yes", "no", "1", "0", "on", "off"}


@handle_errors
def train(
    model: Annotated[str, typer.Option("--model", help=f"Base model: {BASE_MODEL_HELP}.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Checkpoint folder to write.")],
    data: TrainDataArg = None,
    config: Annotated[Path | None, typer.Option(
        "--config", help="YAML/JSON training config; any field overrides the Skywork-VL "
        "defaults (see recipes/train/).")] = None,
    eval_data: Annotated[list[Path] | None, typer.Option(
        "--eval", help="Held-out pairs to evaluate on (folders or parquet; repeatable); the "
        "training data then trains whole, its split column ignored. Default: the training "
        "rows whose split column is eval, test or validation (a `curate shard "
        "--eval-fraction` folder's eval shards) are held out; only if there are none, the "
        "config's eval_fraction (--eval-fraction) of the pairs.")] = None,
    freeze: FreezeOpt = None,
    max_length: Annotated[int | None, typer.Option(
        help="Tokens per sequence; longer prompts lose their oldest tokens first.")] = None,
    eval_fraction: EvalFractionOpt = None,
    bf16: Bf16Opt = None,
    gradient_checkpointing: Annotated[bool | None, typer.Option(
        "--gradient-checkpointing/--no-gradient-checkpointing",
        help="Trade compute for activation memory.")] = None,
    packing: Annotated[str | None, typer.Option(
        help="on: each micro-batch's sequences go through the model as one row without "
        "padding (positions restart per sequence, attention stays within it: flash-attention "
        "varlen where installed, else a block-diagonal mask); off: padded batches; auto "
        "(default): packed where the backbone supports it. Same rewards either way.")] = None,
    max_tokens_per_batch: Annotated[int | None, typer.Option(
        help="Token budget: split each optimizer step's batch_size x grad_accum pairs into "
        "micro-batches of at most N computed tokens (a pair's two sequences together); the "
        "loss stays the mean over the step's pairs.")] = None,
    feature_cache: Annotated[Path | None, typer.Option(
        help="Feature cache root for --freeze backbone (default ~/.cache/curate/features "
        "or $CURATE_CACHE/features).")] = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue from the last saved state in --out.")] = False,
    data_opt: DeprecatedDataOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Train a reward model: pairwise loss, chosen and rejected in one forward pass.

    Defaults follow Skywork-VL Reward: stage 1 multimodal pairs at lr 1e-5, stage 2 adds
    the text-only pairs at lr 1e-6, 2 epochs each, vision encoder frozen. Writes a
    checkpoint (safetensors, plus value_head.safetensors) and metrics.json to --out.
    --seed: the initialisation, the eval split and the data order.
    Multi-GPU: `accelerate launch --config_file recipes/accelerate/zero3.yaml -m curate.cli
    train ...` (or fsdp.yaml).

    Example:
        curate train work/shards --model minilm --out work/rm \\
            --config recipes/train/minilm-frozen.yaml
    """
    from curate.train.config import load_config
    from curate.train.trainer import train_reward_model

    data = _training_data(data, data_opt)
    if config is not None and not config.is_file():
        raise UsageFailure(f"--config {config}: no such file")
    if packing is not None and packing not in ("on", "off", "auto"):
        raise UsageFailure(f"--packing {packing}: use on, off or auto")
    if max_tokens_per_batch is not None and max_tokens_per_batch < 1:
        raise UsageFailure(f"--max-tokens-per-batch {max_tokens_per_batch}: give a positive "
                           "number of tokens")
    cfg = load_config(config, freeze=freeze, max_length=max_length, eval_fraction=eval_fraction,
                      bf16=bf16, gradient_checkpointing=gradient_checkpointing,
                      packing=packing, max_tokens_per_batch=max_tokens_per_batch,
                      feature_cache=str(feature_cache) if feature_cache else None, seed=seed)
    metrics = train_reward_model(data, model, out, cfg, eval_data=eval_data or None,
                                 resume=resume, quiet=quiet, device=device)
    if not quiet:
        print_train_summary(metrics)


def _training_data(data: list[Path] | None, data_opt: list[Path] | None) -> list[Path]:
    """The positional training data plus any given the deprecated way (--data)."""
    if data_opt:
        typer.echo("warning: --data is deprecated: name the training data as arguments, "
                   "`curate train FOLDER ... --model ... --out ...`", err=True)
    found = [*(data or []), *(data_opt or [])]
    if not found:
        raise UsageFailure("name the training data: `curate train FOLDER ... --model ... "
                           "--out ...`")
    stray = [p for p in found if str(p).lower() in _OLD_BF16_VALUES and not p.exists()]
    if stray:
        raise UsageFailure(f"{stray[0]}: no such training data; --bf16 takes no value now: "
                           "--bf16 or --no-bf16 (neither: the config's, auto by default)")
    return found


def print_train_summary(m: dict) -> None:
    from rich.table import Table

    from curate.progress import console

    t = Table(title=f"train -> {m['out']}")
    for col in ("train pairs", "eval pairs", "eval accuracy (95% CI)", "mean margin",
                "truncated", "seconds"):
        t.add_column(col, justify="right")
    ev = m.get("eval") or {}
    acc = (f"{ev['accuracy']:.4f} [{ev['accuracy_ci95'][0]:.3f}, {ev['accuracy_ci95'][1]:.3f}]"
           if ev else "-")
    tr = m["truncation"]
    t.add_row(str(m["train_pairs"]), str(m["eval_pairs"]), acc,
              f"{ev['mean_margin']:.3f}" if ev else "-",
              f"{tr['pairs_prompt_truncated']} prompt, {tr['pairs_response_truncated']} response",
              f"{m['seconds']:.1f}")
    c = console()
    c.print(t)
    if ev.get("by_source") and len(ev["by_source"]) > 1:
        c.print("eval accuracy by source: " + json.dumps(
            {k: round(v["accuracy"], 4) for k, v in ev["by_source"].items()}), highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(train)
