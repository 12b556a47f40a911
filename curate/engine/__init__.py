"""Engines run a stage's pure per-batch functions; stages never know which engine runs them."""

from __future__ import annotations

from curate.engine.local import LocalEngine

__all__ = ["LocalEngine", "get_engine"]


def get_engine(name: str = "local", workers: int | None = None, **kwargs: object) -> LocalEngine:
    if name == "local":
        return LocalEngine(workers=workers)
    raise ValueError(f"unknown engine {name!r}; choose 'local'")
