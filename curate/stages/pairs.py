"""`curate pairs`: preference pairs from a policy's sampled candidates, picked by a reward model.

Input: candidates dataset folders (`curate ingest candidates`: a prompt, its images,
N responses). Per prompt:
1. near-identical responses collapse onto the first of them (see `distinct`), so two
   of them are never paired and a duplicate is never scored;
2. every remaining response is scored once, in batches, through a score cache keyed
   by (reward-model fingerprint, hash of prompt + images + response): a rerun with
   another strategy or margin scores nothing;
3. the strategy picks pairs among them (see `choose_pairs`); a pair needs a margin
   (chosen - rejected score) above 0 and at least `min_margin`.
Output: canonical pairs (`chosen_score` / `rejected_score` are the reward model's,
`source` is `pairs:<policy model>`, plus a `prompt_id` column), so dedup, similar,
decontam and shard apply unchanged. A prompt that yields no pair is one rejected row
(best and worst response, their scores, every score in `meta`) with the reason
`too_few_candidates`, `near_identical_candidates` or `ambiguous`. Conservation counts
prompts: prompts in = prompts with pairs + prompts rejected.

Engines: by default the scorer runs in this process. With an engine that has workers
of its own (`curate pairs --engine ray`) the driver still plans, reads and writes the
score cache and writes the output; only each batch's uncached responses are scored in
the engine's actors, each with a scorer built once from the picklable
`RewardModelScorer.spec()` (a model load per actor, with --gpus-per-worker GPUs). Each
batch is one scorer call with the same responses either way and results come back in
batch order, so the output is the same as this process's.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from curate import dataset as D
from curate import schema as S
from curate.engine.protocol import distributed
from curate.manifest import Manifest
from curate.models.encoding import Item
from curate.pipeline.entry import RUN_ONLY, configured, recorded
from curate.pipeline.runner import register_stage
from curate.scoring.cache import ScoreCache
from curate.scoring.scorer import ResponseScorer, RewardModelScorer
from curate.text import normalise_text

if TYPE_CHECKING:
    from curate.engine.protocol import Engine

STRATEGIES = ("best-worst", "top-bottom", "all")
DEFAULT_NEAR_IDENTICAL = 0.95
DEFAULT_TOP_BOTTOM_K = 2
PAIRS_SCHEMA = pa.schema([*S.PAIR_FIELDS, pa.field("prompt_id", pa.string())])
HISTOGRAM_BINS = 10

# -- near-identical responses ----------------------------------------------------------
# CJK characters count one token each (they are not space separated), other words whole,
# punctuation marks one token each
_TOKEN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]|\w+|[^\w\s]")


def similarity(a: str, b: str) -> float:
    """difflib's ratio over the word / punctuation tokens of two normalised texts (0..1)."""
    ta, tb = _TOKEN.findall(a), _TOKEN.findall(b)
    if not ta and not tb:
        return 1.0
    return SequenceMatcher(None, ta, tb, autojunk=False).ratio()


def near_identical(a: str, b: str, threshold: float) -> bool:
    """Normalised texts equal, or token similarity >= `threshold` (1.0: equality only).

    The two cheap upper bounds of the ratio (lengths, token multisets) rule most pairs
    out before the quadratic match runs."""
    if a == b:
        return True
    if threshold >= 1.0:
        return False
    ta, tb = _TOKEN.findall(a), _TOKEN.findall(b)
    sm = SequenceMatcher(None, ta, tb, autojunk=False)
    return (sm.real_quick_ratio() >= threshold and sm.quick_ratio() >= threshold
            and sm.ratio() >= threshold)


def distinct(responses: Sequence[str], threshold: float) -> tuple[list[int], dict[int, int]]:
    """(indices of the responses that stay, {dropped index: the index it repeats}).

    Each response is compared with the ones kept before it, in order, and dropped onto
    the first it is near-identical to; so the kept ones are pairwise not near-identical,
    and which one stays does not depend on any score."""
    keep: list[int] = []
    same_as: dict[int, int] = {}
    norms = [normalise_text(r) for r in responses]
    for i, text in enumerate(norms):
        for j in keep:
            if near_identical(text, norms[j], threshold):
                same_as[i] = j
                break
        else:
            keep.append(i)
    return keep, same_as


# -- strategies --------------------------------------------------------------------------
@dataclass(frozen=True)
class PairsConfig:
    """How pairs are picked among a prompt's distinct responses (see `choose_pairs`)."""

    strategy: str = "best-worst"
    k: int | None = None  # top-bottom only (default 2)
    min_margin: float = 0.0
    near_identical: float = DEFAULT_NEAR_IDENTICAL
    # scores the responses (`make_scorer`); recorded as its `describe()`
    scorer: ResponseScorer | None = field(default=None, metadata=RUN_ONLY)
    # the folder of cached scores (None: `default_score_cache()`)
    score_cache: str | os.PathLike[str] | None = field(default=None, metadata=RUN_ONLY)
    prompts_per_batch: int = field(default=128, metadata=RUN_ONLY)

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"--strategy must be one of {', '.join(STRATEGIES)}, "
                             f"not {self.strategy!r}")
        if self.k is not None and self.strategy != "top-bottom":
            raise ValueError("--k goes with --strategy top-bottom")
        if self.strategy == "top-bottom" and self.k is None:
            object.__setattr__(self, "k", DEFAULT_TOP_BOTTOM_K)
        if self.k is not None and self.k < 1:
            raise ValueError("--k must be at least 1")
        if not (self.min_margin >= 0 and math.isfinite(self.min_margin)):
            raise ValueError("--min-margin must be a finite number >= 0")
        if not 0 < self.near_identical <= 1:
            raise ValueError("--near-identical must be in (0, 1]")

    def to_dict(self) -> dict[str, Any]:
        return recorded(self)


def rank(scores: Sequence[float]) -> list[int]:
    """Positions from the highest score to the lowest; ties keep input order."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))


def choose_pairs(scores: Sequence[float], cfg: PairsConfig) -> list[tuple[int, int]]:
    """(chosen, rejected) positions into `scores`, best chosen first, worst rejected first.

    - best-worst: the highest against the lowest score (one pair);
    - top-bottom: each of the K highest against each of the K lowest (K x K pairs at
      most; K is capped at n // 2, so no response is on both sides);
    - all: every two responses, the higher-scored one chosen (n (n - 1) / 2 at most).
    A pair is kept only when its margin is above 0 (a tie is no preference) and at
    least `cfg.min_margin`. Ranks break ties by position, so the result is exact."""
    n = len(scores)
    if n < 2:
        return []
    order = rank(scores)
    if cfg.strategy == "all":
        slots = [(a, b) for a in range(n) for b in range(n - 1, a, -1)]
    else:
        k = 1 if cfg.strategy == "best-worst" else min(int(cfg.k or 1), n // 2)
        slots = [(a, b) for a in range(k) for b in range(n - 1, n - 1 - k, -1)]
    out = []
    for a, b in slots:
        margin = scores[order[a]] - scores[order[b]]
        if margin > 0 and margin >= cfg.min_margin:
            out.append((order[a], order[b]))
    return out


# -- scoring -------------------------------------------------------------------------------
def _worker_setup(spec: Any) -> Callable[[list[Item]], np.ndarray]:
    """Run once per engine worker: its own scorer, built from `spec` (the model loads on
    first use); returns items -> scores."""
    scorer = spec.build()

    def run(items: list[Item]) -> np.ndarray:
        if not items:
            return np.zeros(0, dtype=np.float64)
        return scorer.score_responses(items)

    return run


def default_score_cache() -> Path:
    """`$CURATE_CACHE/scores`, else `~/.cache/curate/scores` (beside the feature cache)."""
    env = os.environ.get("CURATE_CACHE")
    return (Path(env) if env else Path.home() / ".cache" / "curate") / "scores"


def prompt_digest(prompt: Sequence[dict[str, Any]] | None,
                  images: Sequence[dict[str, Any]] | None) -> bytes:
    """What a response's score depends on besides its own text: messages and image hashes."""
    payload = json.dumps(
        [[(m["role"], m["content"]) for m in prompt or []],
         [im.get("sha256") or hashlib.sha256(im["bytes"] or b"").hexdigest()
          for im in images or []]],
        ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).digest()


def response_key(digest: bytes, response: str) -> str:
    return hashlib.sha256(digest + b"\0" + response.encode("utf-8")).hexdigest()[:32]


@dataclass
class PendingScores:
    """A `ResponseScores.lookup`: the keys, which the cache had (`found`, their scores in
    `out`), and the keys to score now ({key: first position}) with their items."""

    keys: list[str]
    found: np.ndarray
    out: np.ndarray
    todo: dict[str, int]
    items: list[Item]


class ResponseScores:
    """Scores by (scorer fingerprint, response key), kept in a `curate reward` ScoreCache.

    The cache folder is `FOLDER/<fingerprint>/scores-*.parquet`; a response's score fills
    both of the cache's columns. Scores computed in this run are reused within it too."""

    def __init__(self, scorer: ResponseScorer, folder: str | os.PathLike[str]) -> None:
        self.scorer = scorer
        self.cache = ScoreCache(scorer.fingerprint, folder=folder)
        self._run: dict[str, float] = {}
        self._asked: set[str] = set()  # looked up to be scored, not filled yet
        self.cached = 0
        self.computed = 0

    def get(self, keys: list[str], items: list[Item]) -> np.ndarray:
        """Scores of `items` (keyed by `keys`): cached, else scored in one scorer call."""
        pending = self.lookup(keys, items)
        scores = self.scorer.score_responses(pending.items) if pending.todo else None
        return self.fill(pending, scores)

    def lookup(self, keys: list[str], items: list[Item]) -> PendingScores:
        """Phase one of `get`: what the cache and this run have, and the items (one per
        key) nobody scored yet. A key scored by an earlier lookup whose `fill` has not
        come yet is not asked for again: fills come in lookup order."""
        found, got = self.cache.lookup(pa.array(keys, pa.string()))
        todo: dict[str, int] = {}
        for i in np.flatnonzero(~found).tolist():
            if keys[i] not in self._run and keys[i] not in self._asked:
                todo.setdefault(keys[i], i)
        self._asked.update(todo)
        self.cached += len(keys) - len(todo)
        return PendingScores(keys, found, got[:, 0].copy(), todo,
                             [items[i] for i in todo.values()])

    def fill(self, pending: PendingScores, scores: np.ndarray | None) -> np.ndarray:
        """Phase two of `get`: `scores` of `pending.items` (None when there are none)
        cached, and every score of the lookup's keys."""
        todo = pending.todo
        if todo:
            scores = np.asarray(scores, dtype=np.float64)
            if scores.shape != (len(todo),):
                raise ValueError(f"the scorer returned {scores.shape} scores for {len(todo)} "
                                 "responses")
            if not np.all(np.isfinite(scores)):
                raise ValueError("the scorer returned a score that is NaN or infinite")
            self.cache.add(pa.array(list(todo), pa.string()), scores, scores)
            self._run.update(zip(todo, scores.tolist(), strict=True))
            self._asked.difference_update(todo)
            self.computed += len(todo)
        out = pending.out
        for i in np.flatnonzero(~pending.found).tolist():
            out[i] = self._run[pending.keys[i]]
        return out

    def save(self) -> None:
        self.cache.save()


# -- one prompt ----------------------------------------------------------------------------
@dataclass
class PromptPlan:
    """A candidates row with its distinct responses, their keys and (later) their scores."""

    row: dict[str, Any]
    keep: list[int]
    same_as: dict[int, int]
    keys: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)


def plan_prompt(row: dict[str, Any], cfg: PairsConfig) -> PromptPlan:
    responses = row["responses"] or []
    keep, same_as = distinct(responses, cfg.near_identical)
    plan = PromptPlan(row, keep, same_as)
    if len(keep) >= 2:  # only prompts that can give a pair are scored
        digest = prompt_digest(row["prompt"], row["images"])
        plan.keys = [response_key(digest, responses[i]) for i in keep]
    return plan


def pair_row(row: dict[str, Any], ci: int | None, ri: int | None,
             scores: dict[int, float], source_id: str, meta: dict[str, Any]) -> dict[str, Any]:
    """A canonical pair row: response `ci` over response `ri` of a candidates row."""
    responses = row["responses"] or []
    chosen = responses[ci] if ci is not None else None
    rejected = responses[ri] if ri is not None else None
    source = f"pairs:{row['model'] or row['source']}"
    hashes = [im.get("sha256") or "" for im in row["images"] or []]
    return {
        "pair_id": S.compute_pair_id(source, source_id, row["prompt"], chosen, rejected, hashes),
        "source": source,
        "source_id": source_id,
        "prompt": row["prompt"],
        "chosen": chosen,
        "rejected": rejected,
        "images": row["images"],
        "chosen_score": scores.get(ci) if ci is not None else None,
        "rejected_score": scores.get(ri) if ri is not None else None,
        "category": row["category"],
        "meta": json.dumps(meta, ensure_ascii=False, sort_keys=True),
        "prompt_id": row["prompt_id"],
    }


@dataclass
class PromptResult:
    pairs: list[dict[str, Any]]
    rejected: dict[str, Any] | None = None
    reason: str | None = None
    detail: str | None = None
    best_worst: float | None = None  # margin between the best and worst distinct response


def decide_prompt(plan: PromptPlan, cfg: PairsConfig, score_key: str) -> PromptResult:
    row = plan.row
    n = len(row["responses"] or [])
    by_index = dict(zip(plan.keep, plan.scores, strict=False))
    meta: dict[str, Any] = {
        "prompt_id": row["prompt_id"], "candidates_source": row["source"],
        "policy_model": row["model"], "strategy": cfg.strategy, "score_key": score_key,
        "scores": [by_index.get(i) for i in range(n)],
    }
    if plan.same_as:
        meta["near_identical"] = {str(i): j for i, j in sorted(plan.same_as.items())}
    if len(plan.keep) < 2:
        if n < 2:
            reason, detail = "too_few_candidates", f"{n} response(s); a pair needs 2"
        else:
            dups = ", ".join(f"#{i}~#{j}" for i, j in sorted(plan.same_as.items()))
            reason = "near_identical_candidates"
            detail = (f"all {n} responses are near-identical (normalised equal or similarity "
                      f">= {cfg.near_identical:g}): {dups}")
        first = plan.keep[0] if plan.keep else None
        return PromptResult([], pair_row(row, first, None, {}, row["source_id"], meta),
                            reason, detail)
    order = [plan.keep[p] for p in rank(plan.scores)]
    best, worst = order[0], order[-1]
    margin = by_index[best] - by_index[worst]
    chosen = choose_pairs(plan.scores, cfg)
    if not chosen:
        scores = ", ".join(f"#{i}={by_index[i]:.4g}" for i in plan.keep)
        why = ("is 0 (a tie: no preference)" if margin <= 0
               else f"{margin:.4g} < --min-margin {cfg.min_margin:g}")
        return PromptResult(
            [], pair_row(row, best, worst, by_index, row["source_id"], meta), "ambiguous",
            f"best-worst margin {why}; scores {scores}", margin)
    pairs = []
    for a, b in chosen:
        ci, ri = plan.keep[a], plan.keep[b]
        m = {**meta, "chosen_index": ci, "rejected_index": ri}
        pairs.append(pair_row(row, ci, ri, by_index, f"{row['source_id']}#{ci}>{ri}", m))
    return PromptResult(pairs, best_worst=margin)


def histogram(values: Sequence[float], bins: int = HISTOGRAM_BINS) -> dict[str, list]:
    """`bins` equal bins from 0 to the largest value (margins are never negative)."""
    if not len(values):
        return {"edges": [], "counts": []}
    top = max(values)
    counts, edges = np.histogram(values, bins=bins, range=(0.0, top if top > 0 else 1.0))
    return {"edges": [round(float(e), 6) for e in edges], "counts": counts.tolist()}


# -- the stage -----------------------------------------------------------------------------
def open_candidates(inputs: Sequence[str | os.PathLike[str]]) -> list[D.Dataset]:
    datasets = [D.Dataset.open(p) for p in inputs]
    for d in datasets:
        try:
            S.validate(d.schema(), base=S.CANDIDATES_SCHEMA)
        except S.SchemaError as exc:
            raise S.SchemaError(f"{d.location}: not a candidates dataset ({exc}); make one "
                                "with `curate ingest candidates`") from None
    return datasets


def run(inputs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str],
        cfg: PairsConfig, *, engine: Engine | None = None, force: bool = False) -> Manifest:
    """Build pairs from the candidates folders `inputs` into `out`; returns the manifest.

    `engine`: None or a local engine: `cfg.scorer` scores in this process; an engine with
    workers of its own (Ray): each batch's uncached responses are scored in its actors
    (`engine.map_actors`), each with a scorer built once from `scorer.spec()`, while this
    process plans, reads and writes the score cache and writes the output. Every batch
    goes to one scorer call either way, with the same responses in the same order, and
    the results come back in batch order, so the output is the same."""
    from curate.pipeline.runner import StageRun, input_record
    from curate.progress import bar

    scorer, score_cache, prompts_per_batch = cfg.scorer, cfg.score_cache, cfg.prompts_per_batch
    if scorer is None:
        raise ValueError("pairs: give a scorer (--model: a reward-model checkpoint)")
    datasets = open_candidates(inputs)
    stage_config = {**cfg.to_dict(), "scorer": scorer.describe()}
    workers = engine if distributed(engine) else None
    if workers is not None and not callable(getattr(scorer, "spec", None)):
        raise ValueError(f"the {scorer.describe().get('kind')} scorer cannot run in engine "
                         "workers: use the local engine")
    stage_run = StageRun("pairs", out, stage_config, [input_record(d) for d in datasets],
                         force=force, engine=workers.describe() if workers is not None
                         else {"engine": "local", "workers": 1})
    with stage_run:
        if stage_run.skipped:
            return stage_run.manifest
        stage_run.open(PAIRS_SCHEMA)
        scores = ResponseScores(scorer, Path(score_cache or default_score_cache()) / "responses")
        stats: Counter[str] = Counter()
        per_prompt: Counter[int] = Counter()
        margins: list[float] = []
        best_worst: list[float] = []
        t0 = time.perf_counter()
        try:
            with bar("pairs", sum(d.count() for d in datasets), unit="prompts") as b:
                batches = (batch for d in datasets
                           for batch in d.iter_batches(D.KEPT, S.CANDIDATES_SCHEMA.names,
                                                       prompts_per_batch))
                if workers is not None:
                    done = _score_in_workers(batches, cfg, scores, stats, workers)
                else:
                    done = _score_here(batches, cfg, scores, stats)
                for batch, plans in done:
                    results = [decide_prompt(p, cfg, scorer.fingerprint) for p in plans]
                    stage_run.add_in(batch.num_rows)
                    kept = [p for r in results for p in r.pairs]
                    rejected = [r for r in results if r.rejected is not None]
                    stage_run.keep(pa.Table.from_pylist(kept, schema=PAIRS_SCHEMA),
                             consumed=len(results) - len(rejected))
                    stage_run.reject(pa.Table.from_pylist([r.rejected for r in rejected],
                                                    schema=PAIRS_SCHEMA),
                               [r.reason for r in rejected], [r.detail for r in rejected])
                    for r in results:
                        if r.pairs:
                            per_prompt[len(r.pairs)] += 1
                        margins += [p["chosen_score"] - p["rejected_score"] for p in r.pairs]
                        if r.best_worst is not None:
                            best_worst.append(r.best_worst)
                    b.advance(batch.num_rows)
        finally:
            scores.save()  # scores computed before a failure are still good
        stage_run.steps["pairs"] = time.perf_counter() - t0
        stage_run.extra["pairs"] = {
            "score_key": scorer.fingerprint,
            "scorer": scorer.describe(),
            "prompts": stage_run.rows_in,
            "prompts_with_pairs": stage_run.consumed_by_kept,
            "pairs_produced": len(margins),
            "pairs_per_prompt": {str(k): v for k, v in sorted(per_prompt.items())},
            "candidates": stats["candidates"],
            "candidates_near_identical": stats["near_identical"],
            "scores": {"computed": scores.computed, "cached": scores.cached},
            "margin_histogram": histogram(margins),
            "best_worst_margin_histogram": histogram(best_worst),
        }
    return stage_run.manifest


Planned = tuple[pa.RecordBatch, list[PromptPlan]]


def _plan_batch(batch: pa.RecordBatch, cfg: PairsConfig, stats: Counter[str]
                ) -> tuple[list[PromptPlan], list[str], list[Item]]:
    """A batch's plans and the keys and items of the responses it scores."""
    plans = [plan_prompt(row, cfg) for row in batch.to_pylist()]
    keys: list[str] = []
    items: list[Item] = []
    for p in plans:
        stats["candidates"] += len(p.row["responses"] or [])
        stats["near_identical"] += len(p.same_as)
        keys += p.keys
        items += [(p.row["prompt"], p.row["responses"][i], p.row["images"]) for i in
                  (p.keep if p.keys else [])]
    return plans, keys, items


def _set_scores(plans: list[PromptPlan], got: list[float]) -> list[PromptPlan]:
    start = 0
    for p in plans:
        p.scores = got[start:start + len(p.keys)]
        start += len(p.keys)
    return plans


def _score_here(batches: Iterable[pa.RecordBatch], cfg: PairsConfig, scores: ResponseScores,
                stats: Counter[str]) -> Iterator[Planned]:
    """(batch, its scored plans): one scorer call in this process per batch's uncached
    responses."""
    for batch in batches:
        plans, keys, items = _plan_batch(batch, cfg, stats)
        got = scores.get(keys, items).tolist() if keys else []
        yield batch, _set_scores(plans, got)


def _score_in_workers(batches: Iterable[pa.RecordBatch], cfg: PairsConfig,
                      scores: ResponseScores, stats: Counter[str], engine: Engine
                      ) -> Iterator[Planned]:
    """(batch, its scored plans) in batch order, each batch's uncached responses scored
    by one call in one of `engine`'s actors (a few batches in flight per actor)."""
    setup = functools.partial(_worker_setup, scores.scorer.spec())  # type: ignore[attr-defined]
    pending: deque[tuple[pa.RecordBatch, list[PromptPlan], PendingScores | None]] = deque()

    def items() -> Iterator[list[Item]]:
        for batch in batches:
            plans, keys, todo = _plan_batch(batch, cfg, stats)
            look = scores.lookup(keys, todo) if keys else None
            pending.append((batch, plans, look))
            yield look.items if look is not None else []

    for got in engine.map_actors(setup, items()):
        batch, plans, look = pending.popleft()
        yield batch, _set_scores(plans, scores.fill(look, got).tolist() if look else [])


def make_scorer(model: str | os.PathLike[str], batch_size: int = 16,
                device: str | None = None) -> RewardModelScorer:
    """The ResponseScorer for `--model CKPT` (a `curate train` checkpoint folder), on
    `device` (None: a GPU where there is one)."""
    return RewardModelScorer(model, batch_size=batch_size, device=device)


def pairs(inputs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *,
          config: PairsConfig | None = None, engine: Engine | None = None,
          force: bool = False, **options: Any) -> Manifest:
    """`run` with `config` (default: PairsConfig()) and PairsConfig's fields as keywords."""
    return run(inputs, out, configured(PairsConfig, config, options), engine=engine,
               force=force)


register_stage("pairs", 54, run=run, config=PairsConfig)
