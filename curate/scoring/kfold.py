"""Out-of-fold scores from K surrogate reward models trained with `curate train`.

Pairs are split into K folds, stratified by source (seeded, independent of input
order); surrogate k trains on the other K-1 folds and scores fold k, so no pair is
scored by a model that saw its label. Each surrogate's rewards are centred on its
fold's mean (pairwise training fixes rewards only up to a constant), so chosen
rewards from different folds can share one quantile threshold; margins are
unchanged. With `freeze: backbone` the backbone features come from the on-disk
feature cache, computed once for all folds.

`ensemble` N > 1 repeats the whole k-fold run N times, member e with fold-split seed
and training seed shifted by e (so each pair is still scored only by models that did
not see it), and averages the members' calibrated log-odds: each member's centred
rewards are scaled by its temperature (the logistic fit of its out-of-fold margins,
curate.scoring.calibration.temperature) before the mean, so a member with sharper
margins does not outvote a better-calibrated one.

Each fold is one pure job (`fit_fold(FoldJob)`: train, score the held-out fold, centre),
so the folds run one after another here or in parallel on an engine's workers
(`curate reward --engine ray`: an actor per fold with --gpus-per-worker GPUs), with
the same split, seeds and scores: bit for bit where torch runs on as many threads (a
Ray actor holding one CPU runs one; other counts sum floats in another order).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate import dataset as D
from curate.engine.protocol import distributed
from curate.scoring.scorer import RewardModelScorer, Scores, _table
from curate.splits import shuffle_rank

if TYPE_CHECKING:
    from curate.engine.protocol import Engine
    from curate.train.config import TrainConfig

# settings that change where files go or what is logged, not the trained model
_NOT_IN_KEY = ("feature_cache", "eval_every", "save_every", "keep_state", "num_workers",
               "eval_batch_size", "feature_batch_size")


def assign_folds(pair_ids: pa.Array | pa.ChunkedArray, sources: Sequence[str], k: int,
                 seed: int) -> np.ndarray:
    """Fold of each row: the seeded shuffle (curate.splits.shuffle_rank, as `curate shard`
    deals), dealt round-robin within each source, so every fold has each source's share."""
    rank = shuffle_rank(pair_ids, seed)
    src = np.asarray(sources, dtype=object)
    folds = np.empty(len(rank), dtype=np.int64)
    for s in sorted(set(sources)):
        idx = np.flatnonzero(src == s)
        folds[idx[np.argsort(rank[idx], kind="stable")]] = np.arange(len(idx)) % k
    return folds


@dataclasses.dataclass(frozen=True)
class FoldJob:
    """One surrogate's training run: fold `fold` of the split seeded `split_seed` is held
    out and scored; the model trains on the other folds, less the `exclude` pairs.

    Small and picklable, so an engine worker runs it from the dataset folders (`data`:
    absolute paths or URIs; `fingerprints`: what they held when the split was made)."""

    data: tuple[str, ...]
    fingerprints: tuple[str, ...]
    model: str
    k: int
    fold: int
    split_seed: int
    cfg: TrainConfig  # the training seed already shifted for the ensemble member
    batch_size: int = 16
    device: str | None = None
    checkpoint: str | None = None  # kept there; None: a temporary folder, removed
    exclude: frozenset[str] = frozenset()
    label: str = ""  # for progress lines: "member 1/2, fold 1/5"


class FoldResult(NamedTuple):
    """A fold's out-of-fold rewards, centred on their mean, and its record."""

    pair_ids: list[str]
    chosen: np.ndarray
    rejected: np.ndarray
    record: dict[str, Any]


def read_pairs(data: Sequence[str], fingerprints: Sequence[str] | None = None,
               image_bytes: bool = True) -> pa.Table:
    """The kept rows of the dataset folders `data`, in order (checked against
    `fingerprints` where given: a worker must split the rows the driver split).
    `image_bytes` False: see `drop_image_bytes`."""
    datasets = [D.Dataset.open(p) for p in data]
    if fingerprints is not None:
        for d, fp in zip(datasets, fingerprints, strict=True):
            if d.fingerprint != fp:
                raise ValueError(f"{d.location} changed while its k-fold surrogates trained")
    return _read_all(datasets, image_bytes)


def _read_all(datasets: Sequence[D.Dataset], image_bytes: bool) -> pa.Table:
    if image_bytes:
        tables = [d.read() for d in datasets]
    else:  # batch by batch, so the whole rows with their photos are never held at once
        tables = [_without_image_bytes(d) for d in datasets]
    return pa.concat_tables(tables, promote_options="default")


def _without_image_bytes(d: D.Dataset) -> pa.Table:
    batches = [drop_image_bytes(pa.Table.from_batches([b])) for b in d.iter_batches()]
    if not batches:
        return d.read()
    return pa.concat_tables(batches, promote_options="default")


def drop_image_bytes(table: pa.Table) -> pa.Table:
    """`table` with the images' bytes nulled where their sha256 is known: for a surrogate
    whose backbone reads no images (the sha256 still names each image in the feature
    cache's keys). Measured in bench_recipe: the folds' copies of whole rows held 6.2 GB
    at 25,000 pairs with photos, for about 1 GB of data."""
    if "images" not in table.column_names:
        return table
    col = table["images"]
    chunks = []
    for chunk in col.chunks:
        if chunk.offset:  # a slice: Arrow builds a list array only from offset 0
            chunk = pa.concat_arrays([chunk])
        items = chunk.values
        sha, raw = items.field("sha256"), items.field("bytes")
        kept = pc.if_else(pc.is_null(sha), raw, pa.nulls(len(raw), raw.type))
        arrays = [kept if f.name == "bytes" else items.field(f.name) for f in items.type]
        new = pa.StructArray.from_arrays(arrays, fields=list(items.type),
                                         mask=items.is_null() if items.null_count else None)
        chunks.append(pa.ListArray.from_arrays(
            chunk.offsets, new, type=chunk.type,
            mask=chunk.is_null() if chunk.null_count else None))
    index = table.column_names.index("images")
    return table.set_column(index, table.field(index), pa.chunked_array(chunks, col.type))


def reads_images(model: str) -> bool:
    """Whether `model`'s backbone reads images (True unless its config, found locally,
    names a text-only model type: a hub id not on disk, or the in-memory tiny VL model,
    count as reading them)."""
    try:
        from transformers import AutoConfig

        from curate.models.reward_model import detect_backbone, pretrained_source

        cfg = AutoConfig.from_pretrained(pretrained_source(model), local_files_only=True)
    except Exception:  # noqa: BLE001 - no local config: keep the bytes
        return True
    return detect_backbone(str(cfg.model_type)) == "vl"


def fit_fold(job: FoldJob, table: pa.Table | None = None, folds: np.ndarray | None = None,
             log: Callable[[str], None] | None = None) -> FoldResult:
    """Train `job`'s surrogate and score its held-out fold.

    `table` and `folds` (its rows' folds, `assign_folds`): what the local loop read and
    split once for all folds; None: read and split here (an engine worker)."""
    import torch

    from curate.train import train_reward_model

    t0 = time.perf_counter()
    if table is None:
        table = read_pairs(job.data, job.fingerprints, image_bytes=reads_images(job.model))
    if folds is None:
        folds = assign_folds(table["pair_id"], table["source"].to_pylist(), job.k,
                             job.split_seed)
    held = pa.array(folds == job.fold)
    train_mask = pc.invert(held)
    if job.exclude:
        dropped = pc.is_in(table["pair_id"], value_set=pa.array(sorted(job.exclude), pa.string()))
        train_mask = pc.and_(train_mask, pc.invert(dropped))
    train_t, eval_t = table.filter(train_mask), table.filter(held)
    if log is not None:
        log(f"{job.label}: training on {train_t.num_rows} pairs, scoring {eval_t.num_rows}")
    with _checkpoint_folder(job.checkpoint) as ckpt:
        metrics = train_reward_model(train_t, job.model, ckpt, job.cfg, eval_data=eval_t,
                                     quiet=True, device=job.device)
        # a frozen backbone: the trainer cached every feature, held-out fold included
        frozen = job.cfg.freeze == "backbone"
        scorer = RewardModelScorer(
            ckpt, job.batch_size, feature_cache=(job.cfg.feature_cache or True) if frozen else None,
            device=job.device,
            bf16=bool(metrics.get("bf16")))  # the precision it was trained in
        c, r = scorer.score(eval_t) if eval_t.num_rows else (np.zeros(0), np.zeros(0))
        del scorer
    offset = float(np.mean(np.concatenate([c, r]))) if len(c) else 0.0
    c, r = c - offset, r - offset
    record: dict[str, Any] = {
        "fold": job.fold, "train_pairs": train_t.num_rows, "scored_pairs": eval_t.num_rows,
        "oof_accuracy": float(np.mean(c > r)) if len(c) else None,
        "train_accuracy": _last(metrics, "train_accuracy"),
        "offset": round(offset, 6), "seconds": round(time.perf_counter() - t0, 3),
        "checkpoint": job.checkpoint, "host": socket.gethostname(), "pid": os.getpid(),
        "threads": torch.get_num_threads()}  # torch's intra-op threads: they set float order
    return FoldResult(eval_t["pair_id"].to_pylist(), c, r, record)


def _fold_worker() -> Callable[[FoldJob], FoldResult]:
    """`map_actors` setup: each fold trains its own model, so there is nothing to load."""
    return fit_fold


@contextlib.contextmanager
def _checkpoint_folder(path: str | None) -> Iterator[Path]:
    if path is not None:
        yield Path(path)
        return
    with tempfile.TemporaryDirectory(prefix="curate-fold-") as tmp:
        yield Path(tmp)


def _for_workers(job: FoldJob) -> FoldJob:
    """`job` with the driver's feature-cache folder, absolute: a worker's own environment
    ($CURATE_CACHE, home, working directory) must not choose another cache."""
    from curate.models.feature_cache import default_cache_root

    if not _uses_features(job.cfg):
        return job
    root = str(Path(job.cfg.feature_cache or default_cache_root()).resolve())
    return dataclasses.replace(job, cfg=dataclasses.replace(job.cfg, feature_cache=root))


def _uses_features(cfg: TrainConfig) -> bool:
    """Whether training reads (and fills) the pooled-feature cache."""
    return cfg.freeze == "backbone" or bool(cfg.probe_head)


class KFoldScorer:
    """Trains K surrogates on first use, then answers every pair from their OOF scores.

    `data`: the dataset folders whose kept rows are scored (all of them: out-of-fold
    scores need the whole set). `surrogates`: where fold checkpoints go (kept); None:
    temporary folders, removed after scoring.

    `fit(engine)` with a Ray engine trains every fold (and ensemble member) in an actor
    of its own (`--gpus-per-worker` GPUs); each worker reads the dataset folders itself.
    With the feature cache in use, the first fold runs alone first and fills the cache
    for every pair, so the others read the very features the sequential run reads (and
    no two workers compute them at once): the scores are those of the local run.
    """

    def __init__(self, data: Sequence[str | os.PathLike[str]], model: str, k: int,
                 train_config: Any = None, *, seed: int = 0, freeze: str | None = None,
                 surrogates: str | os.PathLike[str] | None = None, batch_size: int = 16,
                 quiet: bool = True, ensemble: int = 1, device: str | None = None,
                 bf16: bool | None = None) -> None:
        from curate.train.config import load_config

        if k < 2:
            raise ValueError("--kfold needs at least 2 folds")
        if ensemble < 1:
            raise ValueError("--ensemble needs at least 1 member")
        self.ensemble = ensemble
        self.datasets = [D.Dataset.open(p) for p in data]
        self.model, self.k, self.seed = model, k, seed
        self.cfg = load_config(train_config, freeze=freeze, bf16=bf16)
        self.device = device  # not in the key: the device does not move the scores
        self.surrogates = Path(surrogates) if surrogates else None
        self.batch_size, self.quiet = batch_size, quiet
        self._scores: dict[str, tuple[float, float]] | None = None
        self.folds: list[dict[str, Any]] = []
        self.rows_scored = 0
        cfg = {k_: v for k_, v in self.cfg.to_dict().items() if k_ not in _NOT_IN_KEY}
        key = {"kfold": k, "seed": seed, "model": model, "train_config": cfg,
               "inputs": [d.fingerprint for d in self.datasets]}
        if ensemble > 1:  # a single member keeps the fingerprint (and caches) it had
            key["ensemble"] = ensemble
        self._fingerprint = D.json_fingerprint(key)[:32]

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def describe(self) -> dict[str, Any]:
        return {"kind": "kfold", "k": self.k, "seed": self.seed, "model": self.model,
                "ensemble": self.ensemble, "train_config": self.cfg.to_dict(),
                "fingerprint": self.fingerprint}

    def score(self, pairs: pa.Table | pa.RecordBatch) -> Scores:
        if self._scores is None:
            self.fit()
        assert self._scores is not None
        ids = _table(pairs)["pair_id"].to_pylist()
        missing = [p for p in ids if p not in self._scores]
        if missing:
            raise KeyError(f"k-fold scores cover the input datasets only; {len(missing)} "
                           f"pairs are not in them (first: {missing[0]})")
        self.rows_scored += len(ids)
        got = np.array([self._scores[p] for p in ids], dtype=np.float64).reshape(-1, 2)
        return got[:, 0], got[:, 1]

    def fit(self, engine: Engine | None = None) -> None:
        """Train the surrogates and compute every pair's score (once; later calls do
        nothing). `engine`: a Ray engine runs the folds in parallel; None or the local
        engine, one after another here."""
        from curate.scoring.calibration import temperature

        if self._scores is not None:
            return
        table = self._read(engine)
        ids = table["pair_id"].to_pylist()
        jobs = [self._job(e, f) for e in range(self.ensemble) for f in range(self.k)]
        results = self._run(jobs, table, engine)
        total = np.zeros((len(ids), 2))
        for e in range(self.ensemble):
            member = results[e * self.k:(e + 1) * self.k]
            scores = {p: (c, r) for res in member
                      for p, c, r in zip(res.pair_ids, res.chosen.tolist(), res.rejected.tolist(),
                                         strict=True)}
            got = np.array([scores[p] for p in ids], dtype=np.float64).reshape(-1, 2)
            for res in member:
                if self.ensemble > 1:
                    res.record["member"] = e
                self.folds.append(res.record)
            if self.ensemble > 1:
                t = temperature(got[:, 0] - got[:, 1])
                for res in member:
                    res.record["temperature"] = round(t, 6)
                got = got * t
            total += got / self.ensemble
        self._scores = {p: (float(c), float(r)) for p, (c, r) in zip(ids, total, strict=True)}

    def validate(self, drop: set[str], margins: dict[str, float], engine: Engine | None = None
                 ) -> dict[str, Any]:
        """Would training without `drop` make a better model? Retrains each fold's
        surrogate (member 0's split) without the `drop` pairs and scores its held-out
        fold, all of it, against the given labels; `margins`: the unfiltered out-of-fold
        margins by pair_id. Under label noise independent of content, agreement with
        the noisy labels rises and falls with accuracy on the true ones, so a filter
        that lowers it would hurt. `engine`: as in `fit`."""
        t0 = time.perf_counter()
        table = self._read(engine)
        jobs = [self._job(0, f, exclude=frozenset(drop), keep=False) for f in range(self.k)]
        results = self._run(jobs, table, engine)
        before = [np.array([margins[p] > 0 for p in res.pair_ids], dtype=bool)
                  for res in results]
        after = [res.chosen - res.rejected > 0 for res in results]  # centring keeps margins
        out = paired_gain(np.concatenate(before), np.concatenate(after))
        ids = table["pair_id"].to_pylist()
        out["dropped_from_training"] = sum(p in drop for p in ids)
        out["seconds"] = round(time.perf_counter() - t0, 3)
        return out

    def _read(self, engine: Engine | None) -> pa.Table:
        """Every input row, or only the columns the split needs where workers read the rest."""
        if not distributed(engine):
            return _read_all(self.datasets, reads_images(self.model))
        return pa.concat_tables([d.read(columns=["pair_id", "source"]) for d in self.datasets],
                                promote_options="default")

    def _job(self, member: int, fold: int, exclude: frozenset[str] = frozenset(),
             keep: bool = True) -> FoldJob:
        """Member `member`'s fold `fold`: fold split and training seed shifted by the member."""
        ckpt = None
        if keep and self.surrogates is not None:
            folder = self.surrogates if self.ensemble == 1 else self.surrogates / f"member-{member}"
            ckpt = str(folder / f"fold-{fold}")
        who = f"member {member + 1}/{self.ensemble}, " if self.ensemble > 1 else ""
        return FoldJob(
            data=tuple(d.uri or str(d.path.resolve()) for d in self.datasets),
            fingerprints=tuple(d.fingerprint for d in self.datasets), model=self.model,
            k=self.k, fold=fold, split_seed=self.seed + member,
            cfg=dataclasses.replace(self.cfg, seed=self.cfg.seed + member),
            batch_size=self.batch_size, device=self.device, checkpoint=ckpt,
            exclude=exclude, label=f"{who}fold {fold + 1}/{self.k}")

    def _run(self, jobs: list[FoldJob], table: pa.Table, engine: Engine | None
             ) -> list[FoldResult]:
        """`fit_fold` over `jobs`, results in order: here one after another, or on the
        engine's actors (the first alone first where it fills the feature cache)."""
        log = None if self.quiet else _print
        if not distributed(engine):
            splits: dict[int, np.ndarray] = {}  # one split per member, as the jobs share them
            out = []
            for job in jobs:
                if job.split_seed not in splits:
                    splits[job.split_seed] = assign_folds(
                        table["pair_id"], table["source"].to_pylist(), self.k, job.split_seed)
                out.append(fit_fold(job, table, splits[job.split_seed], log))
            return out
        jobs = [_for_workers(j) for j in jobs]
        waves = [jobs[:1], jobs[1:]] if _uses_features(self.cfg) else [jobs]
        out = []
        for wave in waves:
            if log is not None and wave:
                log(f"{', '.join(j.label for j in wave)}: training on the {engine.name} engine")
            for job, res in zip(wave, engine.map_actors(_fold_worker, wave), strict=True):
                if log is not None:
                    rec = res.record
                    log(f"{job.label}: trained on {rec['train_pairs']} pairs, scored "
                        f"{rec['scored_pairs']} ({rec['seconds']:.1f}s, pid {rec['pid']} "
                        f"on {rec['host']})")
                out.append(res)
        return out


def paired_gain(before: np.ndarray, after: np.ndarray) -> dict[str, Any]:
    """Per-pair correctness of two models on the same pairs: accuracies, the difference
    and its 95% interval (normal approximation of the paired difference)."""
    d = after.astype(np.float64) - before.astype(np.float64)
    n = len(d)
    half = 1.96 * float(np.std(d, ddof=1)) / np.sqrt(n) if n > 1 else float("inf")
    mean = float(np.mean(d)) if n else 0.0
    return {"pairs": n, "accuracy_raw": round(float(np.mean(before)), 6) if n else None,
            "accuracy_filtered": round(float(np.mean(after)), 6) if n else None,
            "gain": round(mean, 6), "gain_ci95": [round(mean - half, 6), round(mean + half, 6)]}


def _last(metrics: dict[str, Any], key: str) -> float | None:
    for point in reversed(metrics.get("history", [])):
        if key in point:
            return float(point[key])
    return None


def _print(msg: str) -> None:
    from curate.progress import console

    console().print(msg, highlight=False)
