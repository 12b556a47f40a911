"""Training configuration as plain values: defaults are the Skywork-VL recipe.

A YAML or JSON file (`curate train --config FILE`) overrides any field; `stages`
replaces the whole schedule. Unknown keys are an error, so a typo never trains with
a default silently.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

STAGE_DATA = ("multimodal", "text", "all")


@dataclass
class StageConfig:
    """One stage of the schedule: which pairs, learning rate, epochs."""

    name: str
    data: str = "all"  # multimodal (pairs with images) | text (without) | all
    lr: float = 1e-5
    epochs: float = 2.0

    def __post_init__(self) -> None:
        _coerce_numbers(self)
        if self.data not in STAGE_DATA:
            raise ValueError(f"stage {self.name!r}: data must be one of {STAGE_DATA}")


def _coerce_numbers(obj: Any) -> None:
    """YAML reads `1e-5` (no dot) as a string: turn numeric-typed fields back into numbers."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, str) and str(f.type).split(" |")[0] in ("float", "int"):
            try:
                setattr(obj, f.name, int(value) if str(f.type).startswith("int") else float(value))
            except ValueError as exc:
                raise ValueError(f"{f.name}: {value!r} is not a number") from exc


def skywork_vl_stages() -> list[StageConfig]:
    """Skywork-VL Reward: multimodal pairs at 1e-5, then with the text-only pairs at 1e-6."""
    return [StageConfig("multimodal", "multimodal", 1e-5, 2.0),
            StageConfig("mixed", "all", 1e-6, 2.0)]


@dataclass
class TrainConfig:
    # what trains
    freeze: str = "vision"  # backbone | vision | none
    stages: list[StageConfig] = field(default_factory=skywork_vl_stages)
    # model reading (None: the backbone's default, see curate.models.reward_model)
    pooling: str | None = None
    max_length: int | None = None
    min_prompt_tokens: int | None = None
    padding_side: str | None = None
    min_pixels: int | None = None
    max_pixels: int | None = None
    # optimisation
    batch_size: int = 8  # pairs per device per micro-step (2x sequences in the forward)
    grad_accum: int = 1
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    lr_schedule: str = "cosine"  # cosine | linear | constant (after warmup), per stage
    max_grad_norm: float = 1.0
    seed: int = 0
    group_by_length: bool = True  # batches of similar length (less padding)
    # padding-free forward: a micro-batch's sequences in one row (curate.models.packing);
    # auto: where the backbone supports it
    packing: str = "auto"  # on | off | auto
    # token budget: an optimizer step's batch_size * grad_accum pairs (per device) are split
    # into micro-batches of at most this many computed tokens (both sequences of a pair
    # together); the loss is still the mean over the step's pairs. None: batch_size pairs
    # per micro-batch and grad_accum micro-batches per step
    max_tokens_per_batch: int | None = None
    # loss
    margin_column: str | None = None  # a numeric column, or "score_gap" (chosen - rejected score)
    margin_scale: float = 1.0
    center_coef: float = 0.0  # reward centering: + coef * mean((r_c + r_r)^2)
    # frozen backbone: only the head trains on cached features; these replace each
    # stage's lr and epochs (a linear head from scratch wants far more than 1e-5)
    head_lr: float = 3e-3
    head_epochs: int = 20
    head_batch_size: int = 128
    # LP-FT (Kumar et al. 2022): with a trainable backbone, first fit the head alone on
    # cached features (head_lr, head_epochs), then fine-tune everything from there
    probe_head: bool = False
    feature_cache: str | None = None  # default: $CURATE_CACHE or ~/.cache/curate/features
    feature_batch_size: int = 32
    # precision and memory
    bf16: str | bool = "auto"  # auto: on GPUs that support it, and on CPUs with avx512_bf16/AMX
    gradient_checkpointing: bool = False
    # eval and checkpoints
    eval_fraction: float = 0.0  # held out (seeded) when no eval set is given
    eval_every: int = 0  # optimizer steps; 0: at the end of every epoch
    eval_batch_size: int = 16
    log_every: int = 0  # optimizer steps between progress lines (0: at evals only)
    save_every: int = 0  # optimizer steps between resumable states; 0: end of every epoch
    keep_state: bool = False  # keep the resumable state after a successful run
    save_backbone: str = "auto"  # auto: not when the backbone is frozen and loadable by name
    num_workers: int = 0

    def __post_init__(self) -> None:
        _coerce_numbers(self)
        self.stages = [s if isinstance(s, StageConfig) else StageConfig(**s)
                       for s in self.stages]
        if self.freeze not in ("backbone", "vision", "none"):
            raise ValueError(f"freeze must be backbone, vision or none, not {self.freeze!r}")
        if self.lr_schedule not in ("cosine", "linear", "constant"):
            raise ValueError(f"lr_schedule must be cosine, linear or constant, "
                             f"not {self.lr_schedule!r}")
        if not 0 <= self.eval_fraction < 1:
            raise ValueError("eval_fraction must be in [0, 1)")
        if not self.stages:
            raise ValueError("the schedule needs at least one stage")
        if isinstance(self.packing, bool):  # YAML reads a bare on / off as a boolean
            self.packing = "on" if self.packing else "off"
        if str(self.packing) not in ("on", "off", "auto"):
            raise ValueError(f"packing must be on, off or auto, not {self.packing!r}")
        if self.max_tokens_per_batch is not None and self.max_tokens_per_batch < 1:
            raise ValueError("max_tokens_per_batch must be a positive number of tokens")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def model_overrides(self) -> dict[str, Any]:
        """RewardConfig fields this config sets."""
        keys = ("pooling", "max_length", "min_prompt_tokens", "padding_side", "min_pixels",
                "max_pixels")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


def load_config(source: str | os.PathLike[str] | dict[str, Any] | TrainConfig | None = None,
                **overrides: Any) -> TrainConfig:
    """A TrainConfig from a YAML/JSON file, a dict or an existing config, then `overrides`
    (None values ignored)."""
    if isinstance(source, TrainConfig):
        data = source.to_dict()
    elif isinstance(source, dict):
        data = dict(source)
    elif source is None:
        data = {}
    else:
        data = read_config_file(Path(source))
    data.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown training config key(s): {', '.join(unknown)}")
    return TrainConfig(**data)


def read_config_file(path: Path) -> dict[str, Any]:
    text = path.read_text()
    if path.suffix.lower() == ".json":
        data = json.loads(text)
    else:
        import yaml

        data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a training config is a mapping of keys to values")
    return data
