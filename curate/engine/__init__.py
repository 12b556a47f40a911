"""Engines run a stage's pure per-batch functions; stages never know which engine runs them.

Every engine has the same interface (`curate.engine.protocol.Engine`), and a stage gets
the same results from each:
- `map(fn, items)`: `fn` over `items`, results in input order;
- `map_inputs(fn, datasets, columns, batch_size)`: `fn` over the kept rows of dataset
  folders, batch by batch, in order (the Ray engine's workers read their own rows);
- `map_actors(setup, items)`: for model stages, `setup()` builds the function once
  per worker (a model load), then it maps `items` in order; `map_inputs_actors(setup,
  datasets, ...)` is the same over dataset rows (on Ray, with `gpus_per_worker` GPUs);
- `shuffle(map_fn, map_items, reduce_fn, reduce_items, spill_dir=)`: an all-to-all step
  (shard's; the local engine's blocks wait on disk under `spill_dir`, Ray's in its store);
- `describe()` (recorded in the manifest) and `close()`.
"""

from __future__ import annotations

from typing import Any

from curate.engine.local import LocalEngine
from curate.engine.protocol import Engine

__all__ = ["ENGINES", "Engine", "LocalEngine", "get_engine"]

ENGINES = ("local", "ray")


def get_engine(
    name: str = "local",
    workers: int | None = None,
    *,
    address: str | None = None,
    gpus_per_worker: float = 0.0,
    **kwargs: Any,
) -> Engine:
    """An engine by name: 'local' (process pool) or 'ray' (`address`: join that cluster).
    Both satisfy `Engine` (the type checker checks it here)."""
    if name == "local":
        if address:
            raise ValueError("--ray-address needs --engine ray")
        return LocalEngine(workers=workers)
    if name == "ray":
        from curate.engine.ray import RayEngine

        return RayEngine(address=address, workers=workers, gpus_per_worker=gpus_per_worker,
                         **kwargs)
    raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
