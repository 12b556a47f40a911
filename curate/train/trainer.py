"""Train a reward model: a staged schedule on accelerate, or the head alone on cached features.

The loop (`Trainer._train_full`) is plain PyTorch under `accelerate`, so the same
code runs on a CPU, one GPU, DDP, DeepSpeed ZeRO-3 or FSDP, depending only on how
it is launched (`accelerate launch --config_file recipes/accelerate/zero3.yaml ...`).
Per step: chosen and rejected sequences of B pairs go through the model in one
forward of 2B sequences; loss = -logsigmoid(r_c - r_r - margin) (+ centering).
The learning rate is set by hand each optimizer step from the stage's schedule
(warmup, then cosine/linear/constant), so one optimizer spans all stages.

With `freeze: backbone` (`Trainer._train_head`) every sequence's pooled feature
comes from the on-disk feature cache (computed once, ever) and only the linear
head trains: seconds per run, and k-fold runs share the features.
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from curate.models.feature_cache import OVER_LENGTH, PROMPT_TRUNCATED, RESPONSE_TRUNCATED
from curate.models.packing import setup_packing
from curate.models.reward_model import (
    RewardModel,
    build_reward_model,
    load_reward_model,
    use_bf16,
)
from curate.train.collator import PairCollator, PairDataset, model_inputs
from curate.train.config import StageConfig, TrainConfig, load_config
from curate.train.data import (
    PairRows,
    approx_lengths,
    load_pairs,
    margins,
    split_pairs,
    stage_indices,
)
from curate.train.loss import pair_metrics, pairwise_loss
from curate.train.throughput import ModelShape, Throughput, format_rate, peak_tflops

METRICS = "metrics.json"
TRAIN_CONFIG = "train_config.json"
STATE = "state"
PROGRESS = "progress.json"

__all__ = ["train_reward_model", "load_reward_model", "Trainer"]


def train_reward_model(
    data: Any,
    model: str | RewardModel,
    out: str | os.PathLike[str],
    config: str | os.PathLike[str] | dict[str, Any] | TrainConfig | None = None,
    *,
    eval_data: Any = None,
    resume: bool = False,
    quiet: bool = True,
    device: str | None = None,
) -> dict[str, Any]:
    """Train a reward model and write its checkpoint and `metrics.json` to `out`.

    data / eval_data: a dataset folder, parquet shard folder or file, list of those, or an
    Arrow table of canonical pairs (no eval_data: `config.eval_fraction` is held out).
    model: `minilm`, `tiny-qwen2.5-vl`, a local path or hub id, or a RewardModel.
    config: a TrainConfig, a dict of overrides or a YAML/JSON file.
    device: the torch device to train on (None: accelerate's choice, a GPU where there is one).
    Returns the metrics dict (also in `out/metrics.json`)."""
    return Trainer(data, model, out, load_config(config), eval_data=eval_data, resume=resume,
                   quiet=quiet, device=device).run()


def make_accelerator(cfg: TrainConfig, device: str | None = None) -> Any:
    """An Accelerator; under `accelerate launch` its config (DeepSpeed, FSDP) applies.
    `device` (cpu, cuda, cuda:1 ...) goes to accelerate as ACCELERATE_TORCH_DEVICE, its
    own way to pin a single process to one device."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    launched = "ACCELERATE_MIXED_PRECISION" in os.environ
    mp = None if launched and cfg.bf16 == "auto" else ("bf16" if use_bf16(cfg.bf16) else "no")
    state = AcceleratorState._shared_state
    if state and mp is not None and str(state.get("_mixed_precision", mp)) != mp:
        AcceleratorState._reset_state()  # a second run in one process with other precision
    current = PartialState._shared_state.get("device")
    if PartialState._shared_state and device is not None and not _same_device(current, device):
        AcceleratorState._reset_state(reset_partial_state=True)  # a run on another device
    # a token budget makes each loader item one whole optimizer step (see Trainer._step)
    accum = 1 if cfg.max_tokens_per_batch else cfg.grad_accum
    if device is None:
        return Accelerator(mixed_precision=mp, gradient_accumulation_steps=accum)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("--device pins a single process; under `accelerate launch` its "
                         "config places the processes")
    before = os.environ.get("ACCELERATE_TORCH_DEVICE")
    os.environ["ACCELERATE_TORCH_DEVICE"] = device
    try:
        return Accelerator(mixed_precision=mp, gradient_accumulation_steps=accum,
                           cpu=torch.device(device).type == "cpu")
    finally:
        if before is None:
            os.environ.pop("ACCELERATE_TORCH_DEVICE", None)
        else:
            os.environ["ACCELERATE_TORCH_DEVICE"] = before


def _same_device(current: Any, wanted: str) -> bool:
    """Whether accelerate's device already is `wanted` (`cuda` matches any cuda index)."""
    if current is None:
        return False
    want = torch.device(wanted)
    return current.type == want.type and (want.index is None or current.index == want.index)


def fill_deepspeed_auto(acc: Any, hidden: int) -> None:
    """Resolve the ZeRO-3 bucket sizes left at "auto" from the text hidden size (accelerate
    looks for `model.config.hidden_size`, which a Qwen2.5-VL config does not have)."""
    plugin = getattr(acc.state, "deepspeed_plugin", None)
    if plugin is None:
        return
    zero = plugin.deepspeed_config.get("zero_optimization", {})
    for key, value in (("reduce_bucket_size", hidden * hidden),
                       ("stage3_prefetch_bucket_size", int(0.9 * hidden * hidden)),
                       ("stage3_param_persistence_threshold", 10 * hidden)):
        if zero.get(key) == "auto":
            zero[key] = value


def lr_at(step: int, total: int, peak: float, warmup_ratio: float, schedule: str) -> float:
    """Learning rate for optimizer step `step` (0-based) of a stage with `total` steps."""
    warmup = int(math.ceil(warmup_ratio * total)) if warmup_ratio > 0 else 0
    if step < warmup:
        return peak * (step + 1) / warmup
    if schedule == "constant":
        return peak
    frac = (step - warmup) / max(1, total - warmup)
    if schedule == "linear":
        return peak * max(0.0, 1.0 - frac)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(1.0, frac)))


def peak_memory_mb(device: torch.device | None = None) -> float:
    if device is not None and device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


@dataclass
class _Stage:
    cfg: StageConfig
    indices: np.ndarray


@dataclass
class _Tally:
    """Running train loss / accuracy and which pairs were truncated."""

    loss: float = 0.0
    correct: int = 0
    pairs: int = 0
    prompt_truncated: set[int] = field(default_factory=set)
    response_truncated: set[int] = field(default_factory=set)
    over_length: set[int] = field(default_factory=set)

    def add_flags(self, index: list[int], flags: np.ndarray) -> None:
        for i, (p, r, o) in zip(index, flags.tolist(), strict=True):
            if p:
                self.prompt_truncated.add(i)
            if r:
                self.response_truncated.add(i)
            if o:
                self.over_length.add(i)

    def epoch_stats(self) -> dict[str, float]:
        out = {"train_loss": self.loss / max(1, self.pairs),
               "train_accuracy": self.correct / max(1, self.pairs)}
        self.loss, self.correct, self.pairs = 0.0, 0, 0
        return out


class Trainer:
    def __init__(self, data: Any, model: str | RewardModel, out: str | os.PathLike[str],
                 cfg: TrainConfig, eval_data: Any = None, resume: bool = False,
                 quiet: bool = True, device: str | None = None) -> None:
        self.data, self.model_ref, self.eval_data = data, model, eval_data
        self.out = Path(out)
        self.cfg = cfg
        self.resume = resume
        self.quiet = quiet
        self.device = device
        self.history: list[dict[str, Any]] = []
        self.tally = _Tally()

    # -- setup -------------------------------------------------------------------------
    def log(self, msg: str) -> None:
        if not self.quiet and self.acc.is_main_process:
            from curate.progress import console

            console().print(msg, highlight=False)

    def _model(self) -> RewardModel:
        cfg = self.cfg
        if isinstance(self.model_ref, RewardModel):
            rm = self.model_ref
            for k, v in cfg.model_overrides().items():
                setattr(rm.reward_config, k, v)
            rm._encoder = None
            self.pristine_base = False
            return rm
        self.pristine_base = True
        return build_reward_model(self.model_ref, seed=cfg.seed, **cfg.model_overrides())

    def run(self) -> dict[str, Any]:
        from accelerate.utils import set_seed

        from curate.models.reward_model import quiet_transformers

        t0 = time.perf_counter()
        cfg = self.cfg
        quiet_transformers()
        table = load_pairs(self.data)
        if self.eval_data is not None:
            self.train_t, self.eval_t = table, load_pairs(self.eval_data)
        else:
            self.train_t, self.eval_t = split_pairs(table, cfg.eval_fraction, cfg.seed)
        if len(self.train_t) == 0:
            raise ValueError("no training pairs")
        self.acc = make_accelerator(cfg, self.device)
        set_seed(cfg.seed)
        self.bf16 = self.acc.mixed_precision == "bf16"
        self.rm = self._model()
        self.rm.freeze(cfg.freeze)
        self.attention = setup_packing(self.rm, cfg.packing, self.acc.device)
        # recorded in the checkpoint: a loaded model scores (and reads its cache) the same way
        self.rm.reward_config.autocast = "bfloat16" if self.bf16 else None
        self.rm.autocast_dtype = torch.bfloat16 if self.bf16 else None
        self.train_rows, self.eval_rows = PairRows(self.train_t), PairRows(self.eval_t)
        self.train_margins = margins(self.train_t, cfg.margin_column, cfg.margin_scale)
        self.eval_margins = margins(self.eval_t, cfg.margin_column, cfg.margin_scale) \
            if len(self.eval_t) else np.zeros(0, np.float32)
        stages = [_Stage(s, stage_indices(self.train_t, s.data)) for s in cfg.stages]
        self.stages = [s for s in stages if len(s.indices)]
        skipped = [s.cfg.name for s in stages if not len(s.indices)]
        for name in skipped:
            self.log(f"stage {name}: no pairs of its kind in the data, skipped")
        self.out.mkdir(parents=True, exist_ok=True)
        self.log(f"training on {len(self.train_t)} pairs, evaluating on {len(self.eval_t)}; "
                 f"freeze {cfg.freeze}; device {self.acc.device}; bf16 {self.bf16}; "
                 f"packing {'on' if self.rm.packing else 'off'} ({self.attention})"
                 + (f"; at most {cfg.max_tokens_per_batch} tokens per micro-batch"
                    if cfg.max_tokens_per_batch else ""))
        if cfg.freeze == "backbone":
            summary = self._train_head()
        else:
            summary = self._train_full()
        seconds = time.perf_counter() - t0
        metrics: dict[str, Any] = {}
        if self.acc.is_main_process:  # other ranks hold partitioned weights (ZeRO-3 / FSDP)
            metrics = self._metrics(summary, skipped, seconds)
            (self.out / TRAIN_CONFIG).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
            (self.out / METRICS).write_text(json.dumps(metrics, indent=2, default=float) + "\n")
            if not cfg.keep_state:
                shutil.rmtree(self.out / STATE, ignore_errors=True)
        self.acc.wait_for_everyone()
        return metrics

    def _metrics(self, summary: dict[str, Any], skipped: list[str], seconds: float
                 ) -> dict[str, Any]:
        t = self.tally
        n = len(self.train_t)
        final_eval = self.history[-1].get("eval", {}) if self.history else {}
        return {
            "model": str(self.rm.reward_config.base_model),
            "out": str(self.out),
            "freeze": self.cfg.freeze,
            "device": str(self.acc.device),
            "processes": self.acc.num_processes,
            "bf16": self.bf16,
            "train_pairs": n,
            "eval_pairs": len(self.eval_t),
            "stages": [{"name": s.cfg.name, "data": s.cfg.data, "pairs": int(len(s.indices)),
                        "lr": s.cfg.lr, "epochs": s.cfg.epochs} for s in self.stages],
            "skipped_stages": skipped,
            "truncation": {
                "max_length": self.rm.reward_config.max_length,
                "pairs_prompt_truncated": len(t.prompt_truncated),
                "pairs_response_truncated": len(t.response_truncated),
                "pairs_over_length": len(t.over_length),
                "pairs_dropped": 0,
            },
            "eval": final_eval,
            "history": self.history,
            "seconds": round(seconds, 3),
            "peak_memory_mb": round(peak_memory_mb(self.acc.device), 1),
            **summary,
            "fingerprint": self.rm.fingerprint,
        }

    def _record(self, point: dict[str, Any], eval_metrics: dict[str, Any]) -> None:
        if eval_metrics:
            point["eval"] = eval_metrics
        self.history.append(point)
        ev = eval_metrics
        msg = " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                       for k, v in point.items() if k != "eval")
        if ev:
            lo, hi = ev["accuracy_ci95"]
            msg += (f" | eval loss {ev['loss']:.4f} acc {ev['accuracy']:.4f} [{lo:.3f}, {hi:.3f}]"
                    f" margin {ev['mean_margin']:.3f}")
        self.log(msg)

    def _save_backbone(self) -> bool:
        mode = self.cfg.save_backbone
        if mode in ("always", True, "true"):
            return True
        if mode in ("never", False, "false"):
            return False
        from curate.models.packaged import MINILM_NAMES
        from curate.models.tiny import TINY_NAME

        ref = str(self.rm.reward_config.base_model)
        by_name = ref in (*MINILM_NAMES, TINY_NAME) or Path(ref).is_dir()
        return not (self.cfg.freeze == "backbone" and self.pristine_base and by_name)

    # -- head only, on cached features ------------------------------------------------
    def _cached_features(self, count_flags: bool = True) -> dict[str, Any]:
        """Pooled features of every train and eval sequence, from the cache (computing the
        missing ones, split across ranks)."""
        from curate.progress import bar

        acc, cfg, rm = self.acc, self.cfg, self.rm
        rm.to(acc.device)
        was_training = rm.training
        rm.eval()
        cache = rm.feature_cache(cfg.feature_cache)
        train_items, eval_items = _items(self.train_rows), _items(self.eval_rows)
        all_items = train_items + eval_items
        t0 = time.perf_counter()
        with bar("features", total=len(all_items), unit="seq") as b:
            computed = cache.compute_missing(
                all_items, rm.compute_features, cfg.feature_batch_size,
                shard=(acc.process_index, acc.num_processes), progress=b.advance)
        acc.wait_for_everyone()
        cache.refresh()
        seconds = time.perf_counter() - t0
        n = len(self.train_rows)
        feats, flags = cache.lookup(train_items)
        if count_flags:
            pair_flags = (flags[:n] | flags[n:]).numpy()
            self.tally.add_flags(list(range(n)), np.stack(
                [pair_flags & PROMPT_TRUNCATED, pair_flags & RESPONSE_TRUNCATED,
                 pair_flags & OVER_LENGTH], axis=1) > 0)
        self.log(f"features: {computed} computed, {cache.hits} from the cache "
                 f"({cache.dir}), {seconds:.1f}s")
        rm.train(was_training)
        return {"chosen": feats[:n].to(acc.device), "rejected": feats[n:].to(acc.device),
                "eval": cache.lookup(eval_items)[0].to(acc.device) if eval_items else None,
                "summary": {"feature_cache": {"dir": str(cache.dir), "computed": cache.computed,
                                              "hits": cache.hits},
                            "feature_seconds": round(seconds, 3)}}

    def _fit_head(self, feats: dict[str, Any], stage_name: str | None = None) -> int:
        """Train the value head alone on fixed features; returns the optimizer steps.
        `stage_name` replaces the stage names in the history (the LP-FT probe)."""
        acc, cfg = self.acc, self.cfg
        head = self.rm.v_head.float()
        fc, fr, eval_feats = feats["chosen"], feats["rejected"], feats["eval"]
        margin_t = torch.from_numpy(self.train_margins).to(acc.device)
        use_margin = cfg.margin_column is not None
        step = 0
        for si, st in enumerate(self.stages):
            name = stage_name or st.cfg.name
            opt = torch.optim.AdamW(head.parameters(), lr=cfg.head_lr,
                                    weight_decay=cfg.weight_decay)
            per_epoch = math.ceil(len(st.indices) / cfg.head_batch_size)
            total = per_epoch * cfg.head_epochs
            stage_step = 0
            for epoch in range(cfg.head_epochs):
                rng = np.random.default_rng(cfg.seed + 1000 * si + epoch)
                order = st.indices[rng.permutation(len(st.indices))]
                for s in range(0, len(order), cfg.head_batch_size):
                    idx = torch.from_numpy(order[s:s + cfg.head_batch_size]).to(acc.device)
                    rc, rr = head(fc[idx]), head(fr[idx])
                    loss = pairwise_loss(rc, rr, margin_t[idx] if use_margin else None,
                                         cfg.center_coef)
                    for g in opt.param_groups:
                        g["lr"] = lr_at(stage_step, total, cfg.head_lr, cfg.warmup_ratio,
                                        cfg.lr_schedule)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    self.tally.loss += float(loss.detach()) * len(idx)
                    self.tally.correct += int((rc > rr).sum())
                    self.tally.pairs += len(idx)
                    step += 1
                    stage_step += 1
                    if cfg.eval_every and step % cfg.eval_every == 0:
                        self._head_point(head, eval_feats, step, name, epoch, stats=None)
                if not cfg.eval_every or epoch == cfg.head_epochs - 1:
                    self._head_point(head, eval_feats, step, name, epoch,
                                     stats=self.tally.epoch_stats())
        return step

    def _train_head(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        feats = self._cached_features()
        t1 = time.perf_counter()
        step = self._fit_head(feats)
        if self.acc.is_main_process:
            self.rm.save(self.out, save_backbone=self._save_backbone())
        self.acc.wait_for_everyone()
        pairs = len(self.train_rows) * self.cfg.head_epochs * len(self.stages)
        return {"optimizer_steps": step, **feats["summary"],
                "head_seconds": round(time.perf_counter() - t1, 3),
                "pairs_per_second": round(pairs / max(1e-9, time.perf_counter() - t0), 2)}

    @torch.no_grad()
    def _head_point(self, head: Any, eval_feats: torch.Tensor | None, step: int, stage: str,
                    epoch: int, stats: dict[str, float] | None) -> None:
        ev: dict[str, Any] = {}
        if eval_feats is not None:
            n = len(self.eval_rows)
            r = head(eval_feats).float().cpu().numpy()
            ev = pair_metrics(r[:n], r[n:], self.eval_rows.sources(), self.eval_margins)
        point: dict[str, Any] = {"step": step, "stage": stage, "epoch": epoch + 1}
        point.update(stats or {})
        self._record(point, ev)

    # -- full / partial fine-tuning -----------------------------------------------------
    def _loader(self, indices: np.ndarray, rows: PairRows, margins_: np.ndarray,
                batch_size: int, lengths: np.ndarray | None = None,
                max_tokens: int | None = None) -> Any:
        ds = PairDataset(rows, indices, margins_, lengths)
        return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False,
                                           collate_fn=PairCollator(self.rm, max_tokens),
                                           num_workers=self.cfg.num_workers)

    @property
    def _loader_pairs(self) -> int:
        """Pairs per train-loader item: a micro-batch, or with a token budget a whole step."""
        cfg = self.cfg
        return cfg.batch_size * cfg.grad_accum if cfg.max_tokens_per_batch else cfg.batch_size

    def _train_full(self) -> dict[str, Any]:
        from curate.progress import bar

        acc, cfg, rm = self.acc, self.cfg, self.rm
        if cfg.gradient_checkpointing:
            rm.backbone.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False})
        rm.always_run_vision = rm.is_vl and acc.num_processes > 1
        probe: dict[str, Any] = {}
        if cfg.probe_head and not (self.resume and (self.out / STATE / PROGRESS).is_file()):
            # LP-FT: fit the head on frozen features first, so fine-tuning starts from a
            # head that already ranks, not from noise that scrambles the backbone
            t = time.perf_counter()
            feats = self._cached_features(count_flags=False)
            self._fit_head(feats, stage_name="probe")
            probe = {"probe": {**feats["summary"], "seconds": round(time.perf_counter() - t, 3)}}
            del feats
        lengths = approx_lengths(self.train_t) if cfg.group_by_length else None
        loaders = [self._loader(s.indices, self.train_rows, self.train_margins,
                                self._loader_pairs, lengths, cfg.max_tokens_per_batch)
                   for s in self.stages]
        eval_loader = self._loader(np.arange(len(self.eval_rows)), self.eval_rows,
                                   self.eval_margins, cfg.eval_batch_size) \
            if len(self.eval_rows) else None
        params = [p for p in rm.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.stages[0].cfg.lr, weight_decay=cfg.weight_decay)
        fill_deepspeed_auto(acc, rm.hidden_size)
        prepared = acc.prepare(rm, opt, *loaders, *([eval_loader] if eval_loader else []))
        model, opt = prepared[0], prepared[1]
        # FSDP2 swaps parameters for sharded ones: clip what the wrapped model holds now
        params = [p for p in model.parameters() if p.requires_grad]
        loaders = list(prepared[2:2 + len(loaders)])
        self.eval_loader = prepared[-1] if eval_loader else None
        progress = self._load_state() if self.resume else None
        self.shape = ModelShape.of(rm)
        self.throughput = Throughput()
        self.peak = peak_tflops(acc.device) if self.bf16 else None
        t0 = time.perf_counter()
        pairs_seen = 0
        model.train()
        with bar("train", total=sum(max(1, round(len(ld) * s.cfg.epochs))
                                    for s, ld in zip(self.stages, loaders, strict=True)),
                 unit="batch") as progress_bar:
            step, pairs_seen = self._loop(model, opt, params, loaders, progress, progress_bar)
        train_seconds = time.perf_counter() - t0
        return {**self._finish_full(model, step, pairs_seen, train_seconds), **probe}

    def _loop(self, model: Any, opt: Any, params: list[Any], loaders: list[Any],
              progress: dict[str, Any] | None, progress_bar: Any) -> tuple[int, int]:
        acc, cfg = self.acc, self.cfg
        step = progress["step"] if progress else 0
        pairs_seen = 0
        for si, (st, loader) in enumerate(zip(self.stages, loaders, strict=True)):
            micro_total = max(1, round(len(loader) * st.cfg.epochs))
            opt_total = math.ceil(micro_total / acc.gradient_accumulation_steps)
            done = 0
            for epoch in range(math.ceil(st.cfg.epochs)):
                skip = 0
                if progress is not None:
                    if (si, epoch) < (progress["stage"], progress["epoch"]):
                        done += len(loader)
                        continue
                    skip = progress["micro"]
                    done += skip
                    progress = None
                # runs of one optimizer step's pairs (so a token budget splits the same steps)
                loader.dataset.set_order(cfg.seed + 1000 * si + epoch,
                                         cfg.batch_size * cfg.grad_accum)
                it = acc.skip_first_batches(loader, skip) if skip else loader
                mark = time.perf_counter()  # throughput counts loading + steps, not evals
                for micro, batch in enumerate(it, start=skip):
                    if done >= micro_total:
                        break
                    lr = lr_at(done // acc.gradient_accumulation_steps, opt_total, st.cfg.lr,
                               cfg.warmup_ratio, cfg.lr_schedule)
                    n = self._step(model, opt, params, batch, lr)
                    self.throughput.seconds += time.perf_counter() - mark
                    done += 1
                    pairs_seen += n
                    progress_bar.advance()
                    if acc.sync_gradients:
                        step += 1
                        if cfg.log_every and step % cfg.log_every == 0:
                            t = self.tally
                            rate = self.throughput.summary(acc.num_processes, self.peak)
                            self.log(f"step {step} stage {st.cfg.name} epoch {epoch + 1} "
                                     f"lr {lr:.3g} train loss {t.loss / max(1, t.pairs):.4f} "
                                     f"acc {t.correct / max(1, t.pairs):.4f} | "
                                     + format_rate(rate))
                        if cfg.eval_every and step % cfg.eval_every == 0:
                            self._full_point(model, step, st, epoch, {"lr": lr})
                        if cfg.save_every and step % cfg.save_every == 0:
                            self._save_state(step, si, epoch, micro + 1)
                    mark = time.perf_counter()
                stats = self._reduce_epoch_stats()
                if not cfg.eval_every or done >= micro_total:
                    self._full_point(model, step, st, epoch, stats)
                self._save_state(step, si, epoch + 1, 0)
        return step, pairs_seen

    def _step(self, model: Any, opt: Any, params: list[Any], batch: Any, lr: float) -> int:
        """One loader item: a micro-batch (dict) under accelerate's gradient accumulation, or
        a whole optimizer step split by the token budget (a list of micro-batches), each
        micro-batch's loss weighted by its share of the step's pairs so the gradient is that
        of the mean over the step's pairs. Returns the pairs it trained on."""
        import contextlib

        acc, cfg = self.acc, self.cfg
        micros = batch if isinstance(batch, list) else [batch]
        n_step = sum(int(m["margin"].shape[0]) for m in micros)
        with acc.accumulate(model):
            for j, mb in enumerate(micros):
                last = j == len(micros) - 1
                with contextlib.nullcontext() if last else acc.no_sync(model):
                    rewards = model(**model_inputs(mb))
                    n = mb["margin"].shape[0]
                    rc, rr = rewards[:n], rewards[n:]
                    loss = pairwise_loss(rc, rr, mb["margin"] if cfg.margin_column else None,
                                         cfg.center_coef)
                    acc.backward(loss * (n / n_step) if len(micros) > 1 else loss)
                self._tally_batch(mb, rc.detach(), rr.detach(), loss.detach())
                self.throughput.add(mb, self.shape)
            if acc.sync_gradients and cfg.max_grad_norm:
                acc.clip_grad_norm_(params, cfg.max_grad_norm)
            for g in opt.param_groups:
                g["lr"] = lr
            opt.step()
            opt.zero_grad(set_to_none=True)
        return n_step

    def _finish_full(self, model: Any, step: int, pairs_seen: int, train_seconds: float
                     ) -> dict[str, Any]:
        acc, rm = self.acc, self.rm
        self._gather_flags()
        acc.wait_for_everyone()
        state_dict = acc.get_state_dict(model)
        if self.bf16 and acc.device.type == "cuda":  # as published checkpoints are: half the size
            state_dict = {k: v.to(torch.bfloat16) if v.is_floating_point() else v
                          for k, v in state_dict.items()}
        rm.reset_fingerprint()  # the backbone trained; save() records the new fingerprint
        if acc.is_main_process:
            rm.save(self.out, save_backbone=self._save_backbone(), state_dict=state_dict)
        acc.wait_for_everyone()
        rate = self.throughput.summary(acc.num_processes, self.peak)
        self.log("throughput: " + format_rate(rate))
        return {"optimizer_steps": step, "train_seconds": round(train_seconds, 3),
                "packing": self.rm.packing, "attention": self.attention,
                "max_tokens_per_batch": self.cfg.max_tokens_per_batch, **rate}

    def _tally_batch(self, batch: dict[str, Any], rc: torch.Tensor, rr: torch.Tensor,
                     loss: torch.Tensor) -> None:
        t = self.tally
        n = len(rc)
        t.loss += float(loss) * n
        t.correct += int((rc > rr).sum())
        t.pairs += n
        t.add_flags(batch["pair_index"].tolist(), batch["truncation"].cpu().numpy())

    def _reduce_epoch_stats(self) -> dict[str, float]:
        t = self.tally
        sums = torch.tensor([t.loss, t.correct, t.pairs], dtype=torch.float64,
                            device=self.acc.device)
        sums = self.acc.reduce(sums, reduction="sum") if self.acc.num_processes > 1 else sums
        t.loss, t.correct, t.pairs = float(sums[0]), int(sums[1]), int(sums[2])
        return t.epoch_stats()

    def _gather_flags(self) -> None:
        if self.acc.num_processes == 1:
            return
        from accelerate.utils import gather_object

        t = self.tally
        for name in ("prompt_truncated", "response_truncated", "over_length"):
            merged: set[int] = set()
            for part in gather_object([sorted(getattr(t, name))]):
                merged.update(part)
            setattr(t, name, merged)

    def _full_point(self, model: Any, step: int, st: _Stage, epoch: int,
                    extra: dict[str, Any]) -> None:
        point: dict[str, Any] = {"step": step, "stage": st.cfg.name, "epoch": epoch + 1}
        point.update(extra)
        self._record(point, self._evaluate(model))

    @torch.no_grad()
    def _evaluate(self, model: Any) -> dict[str, Any]:
        if self.eval_loader is None:
            return {}
        model.eval()
        cs, rs, ix = [], [], []
        for batch in self.eval_loader:
            r = model(**model_inputs(batch)).float()
            n = batch["margin"].shape[0]
            c, rj, i = self.acc.gather_for_metrics((r[:n], r[n:], batch["pair_index"]))
            cs.append(c.cpu())
            rs.append(rj.cpu())
            ix.append(i.cpu())
        model.train()
        idx = torch.cat(ix).numpy()
        sources = self.eval_rows.sources()
        return pair_metrics(torch.cat(cs).numpy(), torch.cat(rs).numpy(),
                            [sources[i] for i in idx], self.eval_margins[idx])

    # -- resumable state ---------------------------------------------------------------
    def _save_state(self, step: int, stage: int, epoch: int, micro: int) -> None:
        """Save model/optimizer/RNG state (accelerate) plus where the loop stands."""
        acc = self.acc
        final, tmp = self.out / STATE, self.out / f"{STATE}.tmp"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp), safe_serialization=True)
        if acc.is_main_process:
            t = self.tally
            progress = {"step": step, "stage": stage, "epoch": epoch, "micro": micro,
                        "history": self.history,
                        "prompt_truncated": sorted(t.prompt_truncated),
                        "response_truncated": sorted(t.response_truncated),
                        "over_length": sorted(t.over_length)}
            (tmp / PROGRESS).write_text(json.dumps(progress, default=float))
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        acc.wait_for_everyone()

    def _load_state(self) -> dict[str, Any] | None:
        path = self.out / STATE
        if not (path / PROGRESS).is_file():
            self.log(f"--resume: no saved state in {path}; starting from the beginning")
            return None
        self.acc.load_state(str(path))
        progress = json.loads((path / PROGRESS).read_text())
        self.history = progress["history"]
        for name in ("prompt_truncated", "response_truncated", "over_length"):
            setattr(self.tally, name, set(progress[name]))
        self.log(f"resuming at optimizer step {progress['step']} (stage {progress['stage'] + 1},"
                 f" epoch {progress['epoch'] + 1}, batch {progress['micro']})")
        return progress


def _items(rows: PairRows) -> list[tuple[Any, str, Any]]:
    """Chosen sequences of all pairs, then rejected ones."""
    pairs = [rows[i] for i in range(len(rows))]
    return ([(r["prompt"], r["chosen"], r["images"]) for r in pairs]
            + [(r["prompt"], r["rejected"], r["images"]) for r in pairs])

