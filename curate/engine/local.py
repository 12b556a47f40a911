"""The local engine: an ordered, bounded-window map over a process pool."""

from __future__ import annotations

import functools
import multiprocessing as mp
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from curate.processes import alive

if TYPE_CHECKING:
    import pyarrow as pa

    from curate.dataset import Dataset

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


# the per-process function of `map_actors`, built once by the pool's initializer
_ACTOR_FN: Callable[[Any], Any] | None = None


def _init_actor(setup: Callable[[], Callable[[Any], Any]]) -> None:
    global _ACTOR_FN
    _ACTOR_FN = setup()


def _init_worker(driver: int, init: Callable[..., None] | None, args: tuple[Any, ...]) -> None:
    """Every pool worker's initializer: die with the driver, then the pool's own setup."""
    die_with(driver)
    if init is not None:
        init(*args)


def die_with(driver: int) -> None:
    """End this process as soon as process `driver` ends, however it ends (SIGKILL too).

    A forkserver worker's parent is the forkserver, not the driver, and the forkserver
    lives as long as any worker holds its pipe: so a watchdog thread waits on the driver
    itself (a pidfd, or polling where there is none). When the workers go, the forkserver
    and the resource tracker see their pipes close and exit too.
    """
    import signal
    import threading

    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: the forkserver's death too
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass
    threading.Thread(target=_watch, args=(driver,), name="curate-die-with-driver",
                     daemon=True).start()


def _watch(driver: int) -> None:
    import select
    import time

    try:
        fd = os.pidfd_open(driver)
    except ProcessLookupError:
        os._exit(1)
    except (AttributeError, OSError):  # pragma: no cover - no pidfd: poll
        while alive(driver):
            time.sleep(0.5)
        os._exit(1)
    select.select([fd], [], [])
    os._exit(1)


def _call(task: Callable[[], R]) -> R:
    return task()


def _call_actor(item: Any) -> Any:
    assert _ACTOR_FN is not None, "the worker's setup did not run"
    return _ACTOR_FN(item)


class LocalEngine:
    """Maps a picklable function over items, in order, with at most 2 x workers in flight.

    Results come back in input order, so a stage's output is the same whatever the
    worker count. With one worker the function runs inline (no pickling).
    """

    name = "local"

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or default_workers()

    def map(self, fn: Callable[[T], R], items: Iterable[T], *,
            releases_gil: bool = False) -> Iterator[R]:
        """`fn` over `items`, in order.

        `releases_gil`: `fn` spends its time in C code that drops the GIL (Pillow's
        decoders, hashlib), so threads of this process run it in parallel and no item
        (megabytes of image bytes) is pickled to a worker and back.
        """
        if self.workers <= 1:
            for item in items:
                yield fn(item)
            return
        if releases_gil:
            yield from self._windowed(ThreadPoolExecutor(max_workers=self.workers), fn, items,
                                      self.workers)
            return
        yield from self._pool_map(fn, items, self.workers)

    def shuffle(
        self,
        map_fn: Callable[[T], list[Any]],
        map_items: Iterable[T],
        reduce_fn: Callable[[Any, list[Any]], R],
        reduce_items: list[Any],
        *,
        spill_dir: str | None = None,
    ) -> Iterator[R]:
        """The Ray engine's all-to-all step (see `RayEngine.shuffle`) with the blocks on
        disk (`curate.engine.spill`): map tasks write their blocks (Arrow tables, one
        schema per map item) to a folder made under `spill_dir` (beside the output, so
        on its disk; None: the system's temp folder) and the reduce tasks read theirs
        from it, both on this engine's pool; the folder goes when the shuffle ends,
        however it ends. Threads run the tasks: Arrow's readers and writers drop the GIL,
        and nothing is pickled to a worker and back."""
        from curate.engine.spill import reduce_spilled, spill_folder, spill_map

        with spill_folder(spill_dir) as folder:
            maps = (functools.partial(spill_map, map_fn, str(folder / f"map-{k:06d}.arrow"), item)
                    for k, item in enumerate(map_items))
            spilled = list(self.map(_call, maps, releases_gil=True))
            reduces = (functools.partial(reduce_spilled, reduce_fn, s, item, spilled)
                       for s, item in enumerate(reduce_items))
            yield from self.map(_call, reduces, releases_gil=True)

    def map_inputs(
        self,
        fn: Callable[[pa.RecordBatch], R],
        datasets: list[Dataset],
        columns: list[str] | None = None,
        batch_size: int = 1024,
        *,
        releases_gil: bool = False,
    ) -> Iterator[R]:
        """`fn` over the kept rows of `datasets` (`D.iter_inputs` batches), in order.

        The driver reads the batches and the pool maps them (`releases_gil`: as in
        `map`); the Ray engine lets each worker read its own fragment instead. Same
        results, batch for batch.
        """
        from curate.dataset import iter_inputs

        return self.map(fn, iter_inputs(datasets, columns=columns, batch_size=batch_size),
                        releases_gil=releases_gil)

    def map_inputs_actors(
        self,
        setup: Callable[[], Callable[[pa.RecordBatch], R]],
        datasets: list[Dataset],
        columns: list[str] | None = None,
        batch_size: int = 1024,
    ) -> Iterator[R]:
        """`map_inputs` for a function built by `setup()` once per worker (a model)."""
        from curate.dataset import iter_inputs

        return self.map_actors(setup, iter_inputs(datasets, columns=columns,
                                                  batch_size=batch_size))

    def map_actors(
        self,
        setup: Callable[[], Callable[[T], R]],
        items: Iterable[T],
        workers: int | None = None,
    ) -> Iterator[R]:
        """Like `map`, for a function that is expensive to build (a model): `setup()` runs
        once per worker process and returns the function applied to each item, in order.

        By default one worker, in this process: one model copy whose framework threads
        use the machine's cores; `workers=N` builds N copies in a process pool."""
        n = workers or 1
        if n <= 1:
            fn = setup()
            for item in items:
                yield fn(item)
            return
        yield from self._pool_map(_call_actor, items, n, initializer=_init_actor,
                                  initargs=(setup,))

    def _pool_map(self, fn: Callable[[Any], R], items: Iterable[Any], workers: int,
                  **pool_kwargs: Any) -> Iterator[R]:
        ctx = mp.get_context("forkserver")
        init = (os.getpid(), pool_kwargs.pop("initializer", None),
                pool_kwargs.pop("initargs", ()))
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx,
                                   initializer=_init_worker, initargs=init, **pool_kwargs)
        yield from self._windowed(pool, fn, items, workers)

    @staticmethod
    def _windowed(pool: Executor, fn: Callable[[Any], R], items: Iterable[Any],
                  workers: int) -> Iterator[R]:
        """`fn` over `items` on `pool`, in order, with at most 2 x `workers` in flight."""
        window: deque[Future[Any]] = deque()
        with pool:
            for item in items:
                window.append(pool.submit(fn, item))
                if len(window) >= 2 * workers:
                    yield window.popleft().result()
            while window:
                yield window.popleft().result()

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "workers": self.workers}

    def close(self) -> None:
        """Nothing to release: each map owns its pool."""

    def __enter__(self) -> LocalEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
