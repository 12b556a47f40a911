"""The one shape of every stage's entry point, and its options, declared once.

Every stage module has `run(inputs, out, cfg, *, engine=None, force=False) -> Manifest`
(`StageEntry`), registered with its config class (`curate.pipeline.runner.register_stage`). `cfg`
is the stage's config dataclass: every option of the stage, its collaborators included
(decontam's eval folders, reward's scorer, generate's backend), each declared with its
default in that one place. The command builds the config from its options, whose
defaults are read from the dataclass (tests/test_stage_entry.py holds them equal), and
calls `run`; the demo runs a stage it has no step of its own for as `run(inputs, out,
Config())`.

The keyword shorthands (`dedup(inputs, out, prefer=[...])`, ...) are one line each:
`run(inputs, out, configured(Config, config, options), ...)`, so no default is repeated.

A field with `metadata=RUN_ONLY` says how the stage runs, not what it decides (batch
sizes, the embedding cache's folder): it is left out of the manifest's config record
(`recorded`), so changing it does not redo a finished output.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from curate.engine.protocol import Engine
    from curate.manifest import Manifest

RUN_ONLY = {"run_only": True}

C = TypeVar("C")

Inputs = Sequence["str | os.PathLike[str]"]


class StageEntry(Protocol):
    """`run(inputs, out, cfg, *, engine=None, force=False) -> Manifest`."""

    def __call__(self, inputs: Inputs, out: str | os.PathLike[str], cfg: Any, *,
                 engine: Engine | None = None, force: bool = False) -> Manifest: ...


def configured(cls: type[C], config: C | None, options: dict[str, Any]) -> C:
    """`config` (default: `cls()`) with `options` replacing its fields."""
    if config is None:
        return cls(**options)
    return dataclasses.replace(config, **options) if options else config  # type: ignore[type-var]


def recorded(cfg: Any) -> dict[str, Any]:
    """The fields of the dataclass `cfg` that decide the output, as the manifest records
    them (nested dataclasses as dicts, tuples as lists); RUN_ONLY fields left out."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        if f.metadata.get("run_only"):
            continue
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def defaults(cls: type) -> dict[str, Any]:
    """Each field of the config class `cls` with its default (factories called); fields
    without one are left out."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out
