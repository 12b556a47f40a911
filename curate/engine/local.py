"""The local engine: an ordered, bounded-window map over a process pool."""

from __future__ import annotations

import multiprocessing as mp
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


class LocalEngine:
    """Maps a picklable function over items, in order, with at most 2 x workers in flight.

    Results come back in input order, so a stage's output is the same whatever the
    worker count. With one worker the function runs inline (no pickling).
    """

    name = "local"

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or default_workers()

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        if self.workers <= 1:
            for item in items:
                yield fn(item)
            return
        ctx = mp.get_context("forkserver")
        window: deque[Future[Any]] = deque()
        with ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx) as pool:
            for item in items:
                window.append(pool.submit(fn, item))
                if len(window) >= 2 * self.workers:
                    yield window.popleft().result()
            while window:
                yield window.popleft().result()

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "workers": self.workers}
