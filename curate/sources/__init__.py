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
from curate.sources.trl import TRL
from curate.sources.vl_rewardbench import VLRewardBench

ADAPTERS: dict[str, type[Adapter]] = {
    cls.kind: cls
    for cls in (RLAIFV, LLaVACritic, SkyworkPref, HHRLHF, ShareGPT, TRL, RewardBench,
                VLRewardBench, Generic)
}
# kinds with their own stage rather than an adapter (same `curate ingest KIND` command)
OTHER_KINDS: dict[str, str] = {
    "candidates": "prompts with N sampled responses, for `curate pairs`",
}


def all_kinds() -> list[str]:
    """Every KIND `curate ingest` accepts, in the order help and errors list them."""
    return [*ADAPTERS, *OTHER_KINDS]


def kinds_help() -> str:
    """'rlaif-v, llava-critic, ..., candidates (prompts with ...)' for --help."""
    return ", ".join([*ADAPTERS, *(f"{k} ({d})" for k, d in OTHER_KINDS.items())])


def mapping_fields(kind: str) -> tuple[str, ...] | None:
    """The FIELDs `--map` may name for `kind` (None: the kind takes no --map)."""
    cls = ADAPTERS.get(kind)
    return getattr(cls, "map_fields", None) if cls is not None else None


def make_adapter(kind: str, options: AdapterOptions) -> Adapter:
    try:
        cls = ADAPTERS[kind]
    except KeyError:
        raise ValueError(f"unknown KIND {kind!r}; choose one of {', '.join(all_kinds())}"
                         ) from None
    return cls(options)
