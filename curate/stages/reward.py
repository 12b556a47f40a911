"""`curate reward`: score every pair with a reward model, then act on the scores by rules.

Two passes through the stage runner (`run_filter_stage`):
- annotate (per batch): look the pairs up in the score cache; score the missing ones
  with the scorer (a `curate train` checkpoint, k-fold surrogates, or any object with
  `fingerprint` and `score(pairs) -> (chosen, rejected)`);
- decide (over compact keys: ids, rewards, source, category, source scores): the
  rules of `curate.scoring.rules`, narrowed by the precision guard
  (`curate.scoring.gate`); `action="drop"` rejects with the rule as reason,
  `action="flag"` keeps every row and names the rule in `needs_regeneration`,
  `action="relabel"` keeps the pairs rm_disagrees marks with chosen and rejected
  swapped (and says so in `meta`) and drops the other rules' pairs.
Every output row, kept or rejected, carries `chosen_reward`, `rejected_reward`,
`reward_margin` and, where the guard ran, `p_mislabelled` and `label_issue`. Since the
rows carry the scores and the manifest the scorer's fingerprint, the previous output
is the score cache: rerunning with other rules loads no model and scores nothing.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeGuard

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate import dataset as D
from curate.manifest import Manifest
from curate.pipeline.entry import RUN_ONLY, configured
from curate.pipeline.runner import Decisions, register_stage, run_filter_stage
from curate.scoring.cache import ScoreCache
from curate.scoring.gate import validation_veto
from curate.scoring.rules import RewardRules, apply_rules
from curate.scoring.scorer import SCORE_COLUMNS, PairScorer

if TYPE_CHECKING:
    from curate.engine.protocol import Engine
    from curate.scoring.kfold import KFoldScorer

ACTIONS = ("drop", "flag", "relabel")
KEY_COLUMNS = ["pair_id", "source", "category", "chosen_score", "rejected_score"]


def make_scorer(
    inputs: Sequence[str | os.PathLike[str]],
    model: str | None = None,
    *,
    kfold: int | None = None,
    train_config: Any = None,
    freeze: str | None = None,
    seed: int = 0,
    surrogates: str | os.PathLike[str] | None = None,
    batch_size: int = 16,
    bf16: bool | None = None,
    quiet: bool = True,
    ensemble: int = 1,
    device: str | None = None,
) -> PairScorer | None:
    """The scorer for CLI-style options: `kfold` trains surrogates from the base `model`
    (default minilm; they score in the precision they trained in, `bf16` overriding the
    training config's); otherwise `model` is a checkpoint folder (`bf16`: force bf16
    autocast on or off; None: as it was trained); neither: None. `device`: where the
    models run (None: a GPU where there is one)."""
    from curate.scoring.kfold import KFoldScorer
    from curate.scoring.scorer import RewardModelScorer

    if kfold is not None:
        return KFoldScorer(inputs, model or "minilm", kfold, train_config, seed=seed,
                           freeze=freeze, surrogates=surrogates, batch_size=batch_size,
                           quiet=quiet, ensemble=ensemble, device=device, bf16=bf16)
    if train_config is not None or freeze is not None or ensemble != 1:
        raise ValueError("--train-config, --freeze and --ensemble go with --kfold")
    if model is None:
        return None
    return RewardModelScorer(model, batch_size=batch_size, bf16=bf16, device=device)


@dataclasses.dataclass(frozen=True)
class RewardConfig:
    """`scorer`: a `curate train` checkpoint's, k-fold surrogates' (`make_scorer`) or any
    PairScorer (recorded as its `describe()`; None: rules that need no scores).
    `score_cache`: a folder shared across runs and outputs, besides the previous output.
    `batch_size`: rows per scoring call (the model batches inside it)."""

    scorer: PairScorer | None = None
    rules: RewardRules = dataclasses.field(default_factory=RewardRules)
    action: str = "drop"
    score_cache: str | os.PathLike[str] | None = dataclasses.field(default=None,
                                                                   metadata=RUN_ONLY)
    batch_size: int = dataclasses.field(default=256, metadata=RUN_ONLY)


def run(inputs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str],
        cfg: RewardConfig, *, engine: Engine | None = None, force: bool = False) -> Manifest:
    """Score the kept rows of `inputs` with `cfg.scorer` and apply `cfg.rules`; returns
    the manifest.

    `engine`: scoring runs in its `map_inputs_actors` workers, the scorer's model loaded
    once per worker (Ray: actors with --gpus-per-worker GPUs; local: this process);
    k-fold surrogates train there too, one actor per fold (`KFoldScorer.fit`)."""
    from curate.engine import get_engine

    scorer, rules, action = cfg.scorer, cfg.rules, cfg.action
    score_cache, batch_size = cfg.score_cache, cfg.batch_size
    if action not in ACTIONS:
        raise ValueError(f"--action must be one of {', '.join(ACTIONS)}")
    if action == "flag" and rules.min_precision > 0:
        # the guard protects against losing correct pairs; flagging loses none (a flagged
        # pair is kept and only marked, e.g. for `curate generate --where flagged`)
        rules = dataclasses.replace(rules, min_precision=0.0)
    if scorer is None and rules.needs_scores:
        raise ValueError("these rules need reward scores: give --model CKPT or --kfold K")
    datasets = [D.Dataset.open(p) for p in inputs]
    engine = engine or get_engine("local", workers=1)
    cache = ScoreCache(scorer.fingerprint, previous=out, folder=score_cache) \
        if scorer is not None else None
    config = {"scorer": scorer.describe() if scorer is not None else None,
              "rules": rules.to_dict(), "action": action}
    columns = list(KEY_COLUMNS)
    if cache is not None:
        ids = pa.chunked_array([d.read(columns=["pair_id"])["pair_id"] for d in datasets],
                               type=pa.string())
        if not cache.covers(ids):  # read prompts, responses and images only to score
            columns += [c for c in SCORE_COLUMNS if c not in columns]
            if _is_kfold(scorer):  # its training is a global step: here, once (on Ray,
                scorer.fit(engine)  # the folds in parallel, an actor each)

    def annotate(batch: pa.RecordBatch) -> pa.RecordBatch:
        n = batch.num_rows
        scores = np.full((n, 2), np.nan)
        scored = np.zeros(n, dtype=bool)  # computed now (the cache is filled in decide)
        if cache is not None and scorer is not None:
            found, scores = cache.lookup(batch.column("pair_id"))
            missing = np.flatnonzero(~found)
            if len(missing):
                sub = batch.take(pa.array(missing))
                c, r = scorer.score(sub)
                if len(c) != len(missing) or len(r) != len(missing):
                    raise ValueError(f"the scorer returned {len(c)}/{len(r)} rewards for "
                                     f"{len(missing)} pairs")
                scores[missing, 0], scores[missing, 1] = c, r
                scored[missing] = True
        keys = [batch.column(c) for c in KEY_COLUMNS]
        return pa.RecordBatch.from_arrays(
            keys + [pa.array(scores[:, k], pa.float64(), from_pandas=True) for k in (0, 1)]
            + [pa.array(scored)],
            names=KEY_COLUMNS + ["chosen_reward", "rejected_reward", "scored"])

    def decide(keys: pa.Table) -> Decisions:
        new = keys.filter(keys["scored"])
        if cache is not None and new.num_rows:
            cache.add(new["pair_id"].combine_chunks(), new["chosen_reward"].to_numpy(),
                      new["rejected_reward"].to_numpy())
        out_of_fold = _is_kfold(scorer) or (cache is not None and "kfold" in cache.previous_info)
        result = apply_rules(keys, rules, out_of_fold=out_of_fold, flagging=action == "flag")
        check = _validate(scorer, rules, keys, result, engine)
        veto = validation_veto(check)
        if veto is not None:
            result = apply_rules(keys, rules, out_of_fold=out_of_fold, veto=veto,
                                 flagging=action == "flag")
        if check is not None:
            result.summary["quality"]["validation"] = check
        n = keys.num_rows
        c = keys["chosen_reward"].cast(pa.float64())
        r = keys["rejected_reward"].cast(pa.float64())
        reasons, details = (result.reasons, result.details) if action != "flag" \
            else ([None] * n, [None] * n)
        swap = np.zeros(n, dtype=bool)
        if action == "relabel":
            swap = np.array([x == "rm_disagrees" for x in reasons], dtype=bool)
            reasons = [None if s_ else x for x, s_ in zip(reasons, swap, strict=True)]
            details = [None if s_ else x for x, s_ in zip(details, swap, strict=True)]
        cols: dict[str, Any] = {
            "pair_id": keys["pair_id"],
            "reject_reason": pa.array(reasons, pa.string()),
            "reject_detail": pa.array(details, pa.string()),
            "chosen_reward": c, "rejected_reward": r, "reward_margin": pc.subtract(c, r),
        }
        if result.p_mislabelled is not None:
            cols["p_mislabelled"] = pa.array(result.p_mislabelled, pa.float64(),
                                             from_pandas=True)
            cols["label_issue"] = pa.array(result.label_issue, pa.bool_())
        if action == "flag":
            cols["needs_regeneration"] = pa.array(result.reasons, pa.string())
        if action == "relabel":
            cols.update(relabel_columns(datasets, swap, result.p_mislabelled, c, r))
        info: dict[str, Any] = {
            "score_key": scorer.fingerprint if scorer is not None else None,
            "scorer": config["scorer"], "action": action, "rules": rules.to_dict(),
            **result.summary, "stats": _stats(keys),
        }
        if cache is not None:
            info["scores"] = {"cached": keys.num_rows - new.num_rows, "computed": new.num_rows}
        if getattr(scorer, "folds", None):
            info["kfold"] = scorer.folds  # type: ignore[union-attr]
            info["kfold_trained"] = True
        elif cache is not None and "kfold" in cache.previous_info:
            info["kfold"] = cache.previous_info["kfold"]  # from the run that scored them
            info["kfold_trained"] = False
        if action == "flag":
            info["flagged"] = result.summary["reason_counts"]
        if action == "relabel":
            info["relabelled"] = int(swap.sum())
        return Decisions(pa.table(cols), extra={"reward": info})

    manifest = run_filter_stage(
        "reward", inputs, out, config, annotate=None, annotate_setup=lambda: annotate,
        annotate_columns=columns, decide=decide, engine=engine,
        force=force, batch_size=batch_size)
    if cache is not None:
        cache.save()
    return manifest


def _validate(scorer: Any, rules: RewardRules, keys: pa.Table, result: Any, engine: Engine
              ) -> dict[str, Any] | None:
    """The retraining check (KFoldScorer.validate) of what the guard would reject, where
    it applies: k-fold surrogates, the guard on, and something to reject; its folds
    retrain on `engine` as the first training did."""
    q = result.summary.get("quality")
    if not (rules.validate and _is_kfold(scorer) and q and rules.min_precision > 0
            and not q["abstained"] and q["rejected"]):
        return None
    from curate.scoring.gate import GATED

    ids = keys["pair_id"].to_pylist()
    drop = {p for p, x in zip(ids, result.reasons, strict=True) if x in GATED}
    c = keys["chosen_reward"].to_numpy(zero_copy_only=False)
    r = keys["rejected_reward"].to_numpy(zero_copy_only=False)
    return scorer.validate(drop, dict(zip(ids, (c - r).tolist(), strict=True)), engine=engine)


def _is_kfold(scorer: Any) -> TypeGuard[KFoldScorer]:
    from curate.scoring.kfold import KFoldScorer

    return isinstance(scorer, KFoldScorer)


SWAPPED = (("chosen", "rejected"), ("chosen_score", "rejected_score"))


def relabel_columns(datasets: Sequence[D.Dataset], swap: np.ndarray,
                    p: np.ndarray | None, c: pa.ChunkedArray, r: pa.ChunkedArray
                    ) -> dict[str, Any]:
    """chosen/rejected (texts, source scores, rewards) swapped where `swap`, and `meta`
    recording it (`{"curate_relabel": {"stage": "reward", "p_mislabelled": P}}` merged
    into the row's JSON object). Reads the response columns of every input row (not the
    images): the relabelled columns replace the originals."""
    import json

    names = [a for pair in SWAPPED for a in pair] + ["meta"]
    table = pa.concat_tables([d.read(columns=names) for d in datasets],
                             promote_options="default")
    mask = pa.array(swap)
    out: dict[str, Any] = {}
    for a, b in SWAPPED:
        out[a] = pc.if_else(mask, table[b], table[a])
        out[b] = pc.if_else(mask, table[a], table[b])
    out["chosen_reward"] = pc.if_else(mask, r, c)
    out["rejected_reward"] = pc.if_else(mask, c, r)
    out["reward_margin"] = pc.subtract(out["chosen_reward"], out["rejected_reward"])
    metas = table["meta"].to_pylist()
    for i in np.flatnonzero(swap):
        try:
            m = json.loads(metas[i]) if metas[i] else {}
        except ValueError:
            m = {"meta": metas[i]}
        if not isinstance(m, dict):
            m = {"meta": m}
        prob = float(p[i]) if p is not None and np.isfinite(p[i]) else None
        m["curate_relabel"] = {"stage": "reward", "swapped": ["chosen", "rejected"],
                               "p_mislabelled": prob}
        metas[i] = json.dumps(m, sort_keys=True)
    out["meta"] = pa.array(metas, table.schema.field("meta").type)
    return out


def _stats(keys: pa.Table) -> dict[str, Any]:
    c = np.asarray(keys["chosen_reward"].to_numpy(zero_copy_only=False), dtype=np.float64)
    r = np.asarray(keys["rejected_reward"].to_numpy(zero_copy_only=False), dtype=np.float64)
    ok = np.isfinite(c) & np.isfinite(r)
    if not ok.any():
        return {"scored_pairs": 0}
    m = (c - r)[ok]
    qs = (0.05, 0.25, 0.5, 0.75, 0.95)
    return {
        "scored_pairs": int(ok.sum()),
        "agreement": round(float(np.mean(m > 0)), 6),  # share of pairs with margin > 0
        "margin_mean": round(float(m.mean()), 6),
        "margin_quantiles": {str(q): round(float(np.quantile(m, q)), 6) for q in qs},
        "chosen_quantiles": {str(q): round(float(np.quantile(c[ok], q)), 6) for q in qs},
    }


def reward(inputs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *,
           config: RewardConfig | None = None, engine: Engine | None = None,
           force: bool = False, **options: Any) -> Manifest:
    """`run` with `config` (default: RewardConfig()) and RewardConfig's fields as keywords
    (`rules=None`: the default rules)."""
    if options.get("rules", "") is None:
        del options["rules"]
    return run(inputs, out, configured(RewardConfig, config, options), engine=engine,
               force=force)


register_stage("reward", 50, filter=True, run=run, config=RewardConfig)
