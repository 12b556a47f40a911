"""What a stage may ask of an engine: the `Engine` protocol both engines satisfy.

A stage calls only these members, so a new engine (a Dask or Slurm one) is a class with
them; `tests/test_engine_protocol.py` checks both engines against it at run time, and
the type checker checks every call a stage makes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol, TypeGuard, TypeVar, runtime_checkable

if TYPE_CHECKING:
    import pyarrow as pa

    from curate.dataset import Dataset

T = TypeVar("T")
R = TypeVar("R")


@runtime_checkable
class Engine(Protocol):
    """Runs a stage's pure per-item functions; results always come back in input order,
    so a stage's output does not depend on the engine or its worker count."""

    name: str

    @property
    def workers(self) -> int:
        """Tasks in flight (and CPU actors)."""
        ...

    def map(self, fn: Callable[[T], R], items: Iterable[T], *,
            releases_gil: bool = False) -> Iterator[R]:
        """`fn` over `items`, in order (`releases_gil`: threads may run it)."""
        ...

    def shuffle(self, map_fn: Callable[[T], list[Any]], map_items: Iterable[T],
                reduce_fn: Callable[[Any, list[Any]], R], reduce_items: list[Any], *,
                spill_dir: str | None = None) -> Iterator[R]:
        """All-to-all: `map_fn` cuts each map item into one block (an Arrow table) per
        reduce item; `reduce_fn(reduce_items[s], [block s of every map item])`, results in
        order. Where the blocks wait is the engine's business: the local engine spills
        them to a folder under `spill_dir` (a local folder beside the output), Ray keeps
        them in its object store."""
        ...

    def map_inputs(self, fn: Callable[[pa.RecordBatch], R], datasets: list[Dataset],
                   columns: list[str] | None = None, batch_size: int = 1024, *,
                   releases_gil: bool = False) -> Iterator[R]:
        """`fn` over the kept rows of dataset folders, batch by batch, in order."""
        ...

    def map_inputs_actors(self, setup: Callable[[], Callable[[pa.RecordBatch], R]],
                          datasets: list[Dataset], columns: list[str] | None = None,
                          batch_size: int = 1024) -> Iterator[R]:
        """`map_inputs` with a function `setup()` builds once per worker (a model)."""
        ...

    def map_actors(self, setup: Callable[[], Callable[[T], R]], items: Iterable[T],
                   workers: int | None = None) -> Iterator[R]:
        """`setup()` once per worker, its function over `items`, in order."""
        ...

    def describe(self) -> dict[str, Any]:
        """What the manifest records about the engine (name, workers...)."""
        ...

    def close(self) -> None:
        """Release what the engine started (a Ray it owns)."""
        ...


def distributed(engine: Engine | None) -> TypeGuard[Engine]:
    """Whether `engine` runs work in workers of their own (Ray's tasks and actors) rather
    than in this process (no engine, or the local engine): model stages then load their
    model in each worker, and k-fold surrogates train side by side."""
    return engine is not None and engine.name != "local"
