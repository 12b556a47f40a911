"""Source adapters, one module per format; `ADAPTERS` maps the CLI's KIND to its class.

A module here registers its adapter with `@register_adapter` (see `curate.sources.base`);
this package imports every module, so a new adapter is one module (plus its test), and
the help text, the KIND check and the contract tests find it in `ADAPTERS`.
"""

from __future__ import annotations

from curate.registry import import_submodules
from curate.sources.base import ADAPTERS, Adapter, AdapterOptions, register_adapter

import_submodules(__name__)

__all__ = ["ADAPTERS", "OTHER_KINDS", "Adapter", "AdapterOptions", "all_kinds", "kinds_help",
           "make_adapter", "mapping_fields", "register_adapter"]

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
