"""Reward-model training: config, data, collator, loss, trainer (see curate.train.trainer)."""

from __future__ import annotations

from typing import Any

__all__ = ["train_reward_model", "load_reward_model", "TrainConfig", "load_config"]


def __getattr__(name: str) -> Any:  # lazy: importing curate.train must not import torch
    if name in ("train_reward_model",):
        from curate.train import trainer

        return getattr(trainer, name)
    if name == "load_reward_model":
        from curate.models.reward_model import load_reward_model

        return load_reward_model
    if name in ("TrainConfig", "load_config"):
        from curate.train import config

        return getattr(config, name)
    raise AttributeError(name)
