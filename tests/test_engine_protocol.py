"""Both engines have every member of the `Engine` protocol, with its signature."""

from __future__ import annotations

import inspect

import pytest

from curate.engine import LocalEngine, get_engine
from curate.engine.protocol import Engine, distributed

MEMBERS = ["map", "shuffle", "map_inputs", "map_inputs_actors", "map_actors", "describe",
           "close"]


def _engines() -> list[type]:
    out: list[type] = [LocalEngine]
    try:
        from curate.engine.ray import RayEngine
    except ImportError:  # pragma: no cover - the ray extra is part of `make setup`
        return out
    return [*out, RayEngine]


def _params(fn: object) -> list[tuple[str, object, object]]:
    sig = inspect.signature(fn)  # type: ignore[arg-type]
    return [(p.name, p.kind, p.default) for p in sig.parameters.values()]


@pytest.mark.parametrize("cls", _engines(), ids=lambda c: c.__name__)
def test_an_engine_has_the_protocols_members_and_signatures(cls: type) -> None:
    for name in MEMBERS:
        assert _params(getattr(cls, name)) == _params(getattr(Engine, name)), name
    assert isinstance(cls.name, str)
    assert hasattr(cls, "workers") or "workers" in inspect.signature(cls).parameters


def test_distributed_is_only_an_engine_with_workers_of_its_own() -> None:
    local = get_engine("local", workers=2)
    assert isinstance(local, Engine) and not distributed(local) and not distributed(None)

    class Remote(LocalEngine):
        name = "remote"

    assert distributed(Remote())
