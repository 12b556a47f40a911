"""Source adapters, one module per format; `ADAPTERS` maps the CLI's KIND to its class."""

from __future__ import annotations

from curate.sources.base import Adapter, AdapterOptions
from curate.sources.generic import Generic
from curate.sources.hh_rlhf import HHRLHF
from curate.sources.llava_critic import LLaVACritic
from curate.sources.rewardbench import RewardBench
from curate.sources.rlaif_v import RLAIFV
from curate.sources.sharegpt import ShareGPT
from curate.sources.skywork_pref import SkyworkPref
from curate.sources.vl_rewardbench import VLRewardBench

ADAPTERS: dict[str, type[Adapter]] = {
    cls.kind: cls
    for cls in (RLAIFV, LLaVACritic, SkyworkPref, HHRLHF, ShareGPT, RewardBench, VLRewardBench,
                Generic)
}


def make_adapter(kind: str, options: AdapterOptions) -> Adapter:
    try:
        cls = ADAPTERS[kind]
    except KeyError:
        raise ValueError(f"unknown KIND {kind!r}; choose one of {', '.join(ADAPTERS)}") from None
    return cls(options)
