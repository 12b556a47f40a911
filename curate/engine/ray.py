"""The Ray engine: the local engine's contract (ordered results, bounded window) on Ray.

- `map`: one Ray task per item (1 CPU each), at most 2 x workers in flight, results
  taken in submission order, so the stage writes the same rows in the same order as
  with the local engine. A task whose worker dies is rerun (`retries`).
- `map_inputs`: one task per input fragment (a few row groups of one parquet file);
  the worker reads its rows itself, so image bytes never pass through the driver.
- `map_actors`: a pool of actors, each running `setup()` once (a model load) with
  `gpus_per_worker` GPUs; a killed actor restarts and its tasks are retried.

Why Ray core rather than Ray Data: the stages hand the engine ordered streams
(ingest's adapters read source files in order) and expect results in that order;
tasks over fragments are what Ray Data's fused read + map_batches would run, minus
its reordering and its executor's overhead on small machines. Ray is imported only
when this engine is built, never at `curate --help` time.
"""

from __future__ import annotations

import functools
import logging
import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sized
from typing import TYPE_CHECKING, Any, TypeVar

from curate.engine.local import default_workers

if TYPE_CHECKING:
    import pyarrow as pa

    from curate.dataset import Dataset
    from curate.engine.ray_connect import Connection

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_RETRIES = 3


def _apply(fn: Callable[[Any], Any], item: Any) -> Any:
    return fn(item)


def _reduce(fn: Callable[[Any, list[Any]], Any], item: Any, *blocks: Any) -> Any:
    return fn(item, list(blocks))


class _Actor:
    """One pool member: builds its function once, then applies it to every item it gets."""

    def __init__(self, setup: Callable[[], Callable[[Any], Any]]) -> None:
        self._fn = setup()

    def apply(self, item: Any) -> Any:
        return self._fn(item)


@functools.cache
def _remote_apply() -> Any:
    import ray

    return ray.remote(num_cpus=1)(_apply)


@functools.cache
def _remote_reduce() -> Any:
    import ray

    return ray.remote(num_cpus=1)(_reduce)


@functools.cache
def _remote_actor() -> Any:
    import ray

    return ray.remote(_Actor)


def import_ray() -> Any:
    """`ray`, or a clear error naming the extra to install."""
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ValueError(
            "--engine ray needs Ray (>= 2.30): install curate's 'ray' extra, or pip install ray"
        ) from exc
    return ray


class RayEngine:
    """Runs a stage's functions on Ray; same interface and same results as LocalEngine.

    `address=None` starts a local Ray with `workers` CPUs (default: all cores) unless
    this process is already connected; an address (`auto`, `HOST:6379`,
    `ray://HOST:10001`) joins that cluster, and `workers` (default: the cluster's
    CPUs) bounds the tasks in flight. `close()` shuts down a Ray this engine started.
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        workers: int | None = None,
        gpus_per_worker: float = 0.0,
        retries: int = DEFAULT_RETRIES,
        **init_kwargs: Any,
    ) -> None:
        self._ray = import_ray()
        self.address = address or "local"
        self.gpus_per_worker = float(gpus_per_worker)
        self.retries = retries
        self._address, self._workers, self._init_kwargs = address, workers, init_kwargs
        self._owns = False
        self._started = False
        self.connection: Connection | None = None
        self.cluster_cpus = 0
        self.cluster_gpus = 0.0

    def _start(self) -> None:
        """Join or start Ray on first use, so bad input fails before Ray's start-up."""
        if self._started:
            return
        ray = self._ray
        if not ray.is_initialized():
            from curate.engine.ray_connect import prepare

            self.connection = prepare(self._address)
            kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
            kwargs.update(self._init_kwargs)
            if self.connection.mode == "joined":
                try:
                    ray.init(address=self.connection.init_address, **kwargs)
                except (ConnectionError, RuntimeError) as exc:  # a user's address: exit 2
                    raise ValueError(
                        f"could not join the Ray cluster at {self._address}: {exc}. Is it "
                        "running (`ray status`)?") from exc
            else:  # private: a cluster already running here must not change this run
                ray.init(address="local", num_cpus=self._workers or default_workers(), **kwargs)
            self._owns = True
        elif self._address:
            self._check_session_matches()
        resources = ray.cluster_resources()
        self.cluster_cpus = int(resources.get("CPU", 0))
        self.cluster_gpus = float(resources.get("GPU", 0))
        self._started = True

    def _check_session_matches(self) -> None:
        """This process already holds a Ray session (an application that called `ray.init`):
        an explicit --ray-address is still checked (a dead one fails as it would without the
        session), and one naming another cluster than the session's is refused."""
        from curate.engine.ray_connect import prepare

        self.connection = prepare(self._address)
        wanted = self.connection.gcs_address
        current = self._ray.get_runtime_context().gcs_address
        if wanted and current and wanted != current:
            raise ValueError(f"this process is already connected to the Ray cluster at "
                             f"{current}, not {self._address}: call ray.shutdown() first")

    @property
    def workers(self) -> int:
        """Tasks in flight / CPU actors: --workers, else the cluster's CPUs."""
        self._start()
        return self._workers or max(1, self.cluster_cpus)

    # -- maps ------------------------------------------------------------------------
    def map(self, fn: Callable[[T], R], items: Iterable[T], *,
            releases_gil: bool = False) -> Iterator[R]:
        """`fn` over `items` as Ray tasks, in order (`releases_gil` is a local-engine hint)."""
        self._start()
        task = _remote_apply().options(max_retries=self.retries, retry_exceptions=False)
        fn_ref = self._ray.put(fn)  # shipped once, not with every task
        refs = (task.remote(fn_ref, item) for item in items)
        yield from self._ordered(((ref, None) for ref in refs), 2 * self.workers)

    def shuffle(
        self,
        map_fn: Callable[[T], list[Any]],
        map_items: Iterable[T],
        reduce_fn: Callable[[Any, list[Any]], R],
        reduce_items: list[Any],
        *,
        spill_dir: str | None = None,
    ) -> Iterator[R]:
        """An all-to-all step: `map_fn(item)` cuts each map item into one block per reduce
        item; `reduce_fn(reduce_items[s], [block s of every map item, in order])` runs
        once per reduce item, results in order. Map tasks return their blocks as separate
        objects (`num_returns`), so each reducer fetches only its own blocks, worker to
        worker through the object store (`spill_dir` is not used: Ray spills its store
        itself); the driver holds references only."""
        self._start()
        ray = self._ray
        n = len(reduce_items)
        if n == 0:
            return
        mapper = _remote_apply().options(num_returns=n, max_retries=self.retries,
                                         retry_exceptions=False)
        map_ref = ray.put(map_fn)
        outs = [mapper.remote(map_ref, item) for item in map_items]
        if n == 1:
            outs = [[o] for o in outs]
        reducer = _remote_reduce().options(max_retries=self.retries, retry_exceptions=False)
        reduce_ref = ray.put(reduce_fn)
        refs = ((reducer.remote(reduce_ref, item, *[o[s] for o in outs]), None)
                for s, item in enumerate(reduce_items))
        yield from self._ordered(refs, 2 * self.workers)

    def map_inputs(
        self,
        fn: Callable[[pa.RecordBatch], R],
        datasets: list[Dataset],
        columns: list[str] | None = None,
        batch_size: int = 1024,
        *,
        releases_gil: bool = False,
    ) -> Iterator[R]:
        """`fn` over the kept rows of `datasets`, in order; workers read their fragments."""
        from curate.engine.fragments import apply_to_fragment, fragments

        per_fragment = functools.partial(apply_to_fragment, fn, batch_size)
        for results in self.map(per_fragment, fragments(datasets, columns)):
            yield from results

    def map_inputs_actors(
        self,
        setup: Callable[[], Callable[[pa.RecordBatch], R]],
        datasets: list[Dataset],
        columns: list[str] | None = None,
        batch_size: int = 1024,
    ) -> Iterator[R]:
        """`map_inputs` on actors: `setup()` once per actor, fragments read by the actors."""
        from curate.engine.fragments import fragment_setup, fragments

        per_fragment = functools.partial(fragment_setup, setup, batch_size)
        for results in self.map_actors(per_fragment, fragments(datasets, columns)):
            yield from results

    def map_actors(
        self,
        setup: Callable[[], Callable[[T], R]],
        items: Iterable[T],
        workers: int | None = None,
    ) -> Iterator[R]:
        """`setup()` once per actor (with `gpus_per_worker` GPUs), its function over
        `items` in order; each actor has at most two items in flight. A sized `items`
        (a list) gets no more actors than items: none waits for resources it never needs."""
        self._start()
        n = workers or self._actor_count()
        if isinstance(items, Sized):
            n = min(n, len(items))
            if n == 0:
                return
        actor_cls = _remote_actor().options(
            num_cpus=1, num_gpus=self.gpus_per_worker,
            max_restarts=self.retries, max_task_retries=self.retries,
        )
        actors = [actor_cls.remote(setup) for _ in range(n)]
        load = [0] * n

        def submit() -> Iterator[tuple[Any, int]]:
            for item in items:
                i = min(range(n), key=load.__getitem__)
                load[i] += 1
                yield actors[i].apply.remote(item), i

        def done(i: int) -> None:
            load[i] -= 1

        try:
            yield from self._ordered(submit(), 2 * n, on_done=done)
        finally:
            for a in actors:
                self._ray.kill(a)

    def _actor_count(self) -> int:
        if self.gpus_per_worker <= 0:
            return self.workers
        if self.cluster_gpus < self.gpus_per_worker:
            raise ValueError(f"--gpus-per-worker {self.gpus_per_worker:g}, but the Ray cluster "
                             f"has {self.cluster_gpus:g} GPUs")
        return max(1, math.floor(self.cluster_gpus / self.gpus_per_worker))

    def _ordered(
        self,
        submitted: Iterator[tuple[Any, Any]],
        window: int,
        on_done: Callable[[Any], None] | None = None,
    ) -> Iterator[Any]:
        """Results of `submitted` (ref, tag) in order, with at most `window` in flight."""
        ray = self._ray
        pending: deque[tuple[Any, Any]] = deque()

        def take() -> Any:
            ref, tag = pending.popleft()
            if on_done is not None:
                on_done(tag)
            try:
                return ray.get(ref)
            except ray.exceptions.RayTaskError as exc:  # the stage's own error, unwrapped
                raise exc.as_instanceof_cause() from None

        try:
            for pair in submitted:
                pending.append(pair)
                if len(pending) >= window:
                    yield take()
            while pending:
                yield take()
        finally:
            for ref, _ in pending:  # a failed or abandoned map leaves no work behind
                try:
                    ray.cancel(ref)
                except Exception:  # e.g. an actor task that cannot be cancelled
                    pass

    # -- bookkeeping -----------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"engine": self.name, "workers": self.workers,
                             "address": self.address, "cluster_cpus": self.cluster_cpus,
                             "ray_mode": self.connection.mode if self.connection else "attached",
                             "ray": self._ray.__version__}
        if self.gpus_per_worker:
            d["gpus_per_worker"] = self.gpus_per_worker
        return d

    def close(self) -> None:
        """Shut Ray down if this engine started it (not when it joined a running one)."""
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()
        self._owns = self._started = False

    def __enter__(self) -> RayEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
