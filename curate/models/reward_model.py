"""The reward model: any transformers backbone plus `Linear(hidden, 1)` read at one position.

    reward(prompt, response, images) = v_head(pool(backbone(tokens, images)))

Backbones: Qwen2.5-VL / Qwen2-VL (`Qwen2_5_VLModel`, images through Qwen's image
processor, torchvision not needed), any causal LM (`AutoModel`, the reward is read at
the last token) and any encoder such as MiniLM (`cls` or `mean` pooling). Pooling
finds positions from the attention mask, never from token ids, so it works with
either padding side and when pad = eos.

A checkpoint is a normal transformers folder (config, `model.safetensors`,
tokenizer, image processor) plus `value_head.safetensors` (keys
`v_head.summary.weight` / `v_head.summary.bias`, the layout of Skywork-VL-Reward
and LLaMA-Factory / TRL value heads) and `reward_config.json`. A head trained on a
frozen backbone may skip the backbone weights and point at the base model instead.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from curate.models.encoding import Encoded, ImageInputs, Item, Messages, PairEncoder
from curate.models.packaged import packaged_model

if TYPE_CHECKING:
    import pyarrow as pa

REWARD_CONFIG = "reward_config.json"
VALUE_HEAD = "value_head.safetensors"
VL_MODEL_TYPES = {"qwen2_5_vl", "qwen2_vl"}
ENCODER_MODEL_TYPES = {
    "bert", "roberta", "xlm-roberta", "distilbert", "deberta", "deberta-v2", "electra",
    "mpnet", "albert", "camembert", "modernbert", "nomic_bert", "xlm", "ernie",
}


@dataclass
class RewardConfig:
    """How a backbone is read as a reward model; saved as `reward_config.json`."""

    base_model: str
    backbone: str = "causal"  # vl | causal | encoder
    pooling: str = "last"  # last | cls | mean
    layout: str = "plain"  # chat | plain | pair (see curate.models.encoding)
    max_length: int = 1024
    min_prompt_tokens: int = 32
    padding_side: str = "right"
    min_pixels: int | None = None  # image processor bounds (VL); None keeps its defaults
    max_pixels: int | None = None
    backbone_saved: bool = True
    backbone_fingerprint: str | None = None
    autocast: str | None = None  # "bfloat16": trained (and best scored) under bf16 autocast
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RewardConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def encoder_key(self) -> dict[str, Any]:
        """The settings that change what a sequence looks like to the backbone."""
        return {k: getattr(self, k) for k in ("backbone", "pooling", "layout", "max_length",
                                             "min_prompt_tokens", "min_pixels", "max_pixels")}


class ValueHead(nn.Module):
    """`summary = Linear(hidden, 1)`, named as TRL's and Skywork-VL-Reward's value head."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.summary = nn.Linear(hidden_size, 1, bias=True)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.summary(features.to(self.summary.weight.dtype)).squeeze(-1)


def init_value_head(head: ValueHead, seed: int | None = None) -> None:
    """Explicit init (normal, std 1/sqrt(hidden+1); bias 0).

    Under DeepSpeed ZeRO-3 a module created after `from_pretrained` may hold
    partitioned, uninitialised storage; gathering it first makes the init real on
    every rank (and identical, from the seed)."""
    lin = head.summary
    ctx = _gathered([lin.weight, lin.bias])
    with ctx:
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        w = torch.randn(lin.weight.shape, generator=gen) / (lin.in_features + 1) ** 0.5
        with torch.no_grad():
            lin.weight.copy_(w.to(lin.weight.dtype))
            lin.bias.zero_()


def _gathered(params: Sequence[torch.Tensor]) -> Any:
    import contextlib

    if any(hasattr(p, "ds_id") for p in params):
        import deepspeed  # only present when DeepSpeed partitioned them

        return deepspeed.zero.GatheredParameters(params, modifier_rank=0)
    return contextlib.nullcontext()


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, how: str) -> torch.Tensor:
    """(B, L, H) -> (B, H) from the attention mask, whatever the padding side.

    `last`: the last position whose mask is 1; `cls`: the first such position;
    `mean`: the mean over positions whose mask is 1."""
    mask = attention_mask.to(hidden.device)
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    if how == "last":
        pos = torch.arange(mask.shape[1], device=mask.device)
        return hidden[rows, (mask.long() * pos).argmax(-1)]
    if how == "cls":
        return hidden[rows, mask.long().argmax(-1)]
    if how == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1)
    raise ValueError(f"unknown pooling {how!r}: last, cls or mean")


def pad_batch(seqs: Sequence[Encoded], pad_id: int, side: str = "right") -> dict[str, torch.Tensor]:
    """Pad encoded sequences into input_ids / attention_mask (/ token_type_ids)."""
    n = max(len(s.input_ids) for s in seqs)
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    types = torch.zeros((len(seqs), n), dtype=torch.long) if seqs[0].token_type_ids else None
    for i, s in enumerate(seqs):
        k = len(s.input_ids)
        sl = slice(0, k) if side == "right" else slice(n - k, n)
        ids[i, sl] = torch.tensor(s.input_ids)
        mask[i, sl] = 1
        if types is not None and s.token_type_ids:
            types[i, sl] = torch.tensor(s.token_type_ids)
    out = {"input_ids": ids, "attention_mask": mask}
    if types is not None:
        out["token_type_ids"] = types
    return out


def merge_images(per_item: Sequence[ImageInputs | None]) -> dict[str, torch.Tensor]:
    """Concatenate the unique images of a batch: pixel_values, image_grid_thw."""
    have = [x for x in per_item if x is not None]
    if not have:
        return {}
    return {"pixel_values": torch.cat([x.pixel_values for x in have]),
            "image_grid_thw": torch.cat([x.image_grid_thw for x in have])}


def use_bf16(setting: str | bool) -> bool:
    """`auto`: on CUDA GPUs with bf16, and on CPUs with native bf16 (avx512_bf16 or AMX)."""
    if isinstance(setting, bool):
        return setting
    if str(setting).lower() in ("true", "yes", "1"):
        return True
    if str(setting).lower() in ("false", "no", "0"):
        return False
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def quiet_transformers() -> None:
    """No per-file progress bars or info logs from transformers (ours report progress)."""
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def pretrained_source(ref: str) -> str:
    """What `from_pretrained` loads for a model reference: the packaged MiniLM's folder for
    one of its names (`curate.models.packaged`), else `ref` itself, a folder or a hub id
    (transformers fetches only the files it needs; `tiny-qwen2.5-vl` never gets here: it is
    built in memory, see curate.models.tiny). Not the embedder's `resolve_model`, which
    needs a local folder to fingerprint."""
    packaged = packaged_model(ref)
    return ref if packaged is None else str(packaged)


def detect_backbone(model_type: str) -> str:
    if model_type in VL_MODEL_TYPES:
        return "vl"
    if model_type in ENCODER_MODEL_TYPES:
        return "encoder"
    return "causal"


def load_backbone(ref: str, dtype: torch.dtype | None = None, **kw: Any) -> tuple[Any, Any, Any]:
    """(backbone, tokenizer, image processor or None) for a model reference."""
    from curate.models.tiny import TINY_NAME, build_tiny_qwen2_5_vl

    quiet_transformers()
    if ref == TINY_NAME:
        model, tok, proc = build_tiny_qwen2_5_vl()
        return (model.to(dtype) if dtype else model), tok, proc
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    path = pretrained_source(ref)
    cfg = AutoConfig.from_pretrained(path)
    kind = detect_backbone(cfg.model_type)
    model = AutoModel.from_pretrained(path, dtype=dtype or "auto", **kw)
    if kind == "encoder" and hasattr(model, "pooler") and model.pooler is not None:
        model.pooler = None  # unused by cls/mean pooling; its weights are often untrained
    tok = AutoTokenizer.from_pretrained(path)
    proc = _load_image_processor(path) if kind == "vl" else None
    return model, tok, proc


def _load_image_processor(path: str) -> Any:
    """Qwen's image processor with the PIL backend (works without torchvision)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    try:
        return Qwen2VLImageProcessorPil.from_pretrained(path)
    except (OSError, ValueError):
        return Qwen2VLImageProcessorPil()


def default_config(ref: str, backbone_model: Any, tokenizer: Any, **overrides: Any) -> RewardConfig:
    """Sensible settings for a backbone: VL and causal LMs pool the last token of the chat
    template (plain text without one); encoders join prompt and response as a text pair."""
    kind = overrides.pop("backbone", None) or detect_backbone(backbone_model.config.model_type)
    if kind == "encoder":
        layout, pooling = "pair", "mean"
    else:
        layout = "chat" if getattr(tokenizer, "chat_template", None) else "plain"
        pooling = "last"
    cfg = RewardConfig(base_model=ref, backbone=kind, pooling=pooling, layout=layout)
    if kind == "encoder":
        cfg.max_length = min(cfg.max_length, int(getattr(tokenizer, "model_max_length", 512)),
                             int(getattr(backbone_model.config, "max_position_embeddings", 512)))
    for k, v in overrides.items():
        if v is not None:
            setattr(cfg, k, v)
    return cfg


class RewardModel(nn.Module):
    """Backbone + value head. `forward(**batch)` returns one reward per sequence."""

    def __init__(self, backbone: Any, tokenizer: Any, config: RewardConfig,
                 image_processor: Any = None, head: ValueHead | None = None,
                 seed: int | None = 0) -> None:
        super().__init__()
        self.backbone = backbone
        self.reward_config = config
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.v_head = head if head is not None else ValueHead(self.hidden_size)
        if head is None:
            init_value_head(self.v_head, seed)
        # Under ZeRO-3 / FSDP every rank must run the vision tower every step, or the
        # parameter all-gathers of ranks with and without images never meet.
        self.always_run_vision = False
        self.autocast_dtype: torch.dtype | None = None  # e.g. torch.bfloat16 for scoring
        self.packing = False  # training batches packed into one row (curate.models.packing)
        self._encoder: PairEncoder | None = None
        self._backbone_fp: str | None = config.backbone_fingerprint

    # -- properties ----------------------------------------------------------------
    @property
    def config(self) -> Any:
        """The backbone's transformers config (what accelerate / DeepSpeed look for)."""
        return self.backbone.config

    @property
    def hidden_size(self) -> int:
        cfg = self.backbone.config
        text = getattr(cfg, "text_config", None)
        return int(getattr(text, "hidden_size", None) or cfg.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.v_head.parameters()).device

    @property
    def is_vl(self) -> bool:
        return self.reward_config.backbone == "vl"

    @property
    def pad_id(self) -> int:
        tok = self.tokenizer
        pid = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        return int(pid if pid is not None else 0)

    @property
    def encoder(self) -> PairEncoder:
        if self._encoder is None:
            self._encoder = PairEncoder(
                self.tokenizer, self.reward_config.layout, self.reward_config.max_length,
                image_processor=self.image_processor, vision=self.is_vl,
                min_prompt_tokens=self.reward_config.min_prompt_tokens,
                min_pixels=self.reward_config.min_pixels,
                max_pixels=self.reward_config.max_pixels)
        return self._encoder

    # -- forward -------------------------------------------------------------------
    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 token_type_ids: torch.Tensor | None = None,
                 pixel_values: torch.Tensor | None = None,
                 image_grid_thw: torch.Tensor | None = None,
                 image_order: torch.Tensor | None = None,
                 position_ids: torch.Tensor | None = None,
                 seq_lengths: torch.Tensor | None = None,
                 **_: Any) -> torch.Tensor:
        """Pooled hidden states (B, H).

        For VL batches `pixel_values` / `image_grid_thw` hold each *distinct* image once
        (a pair's chosen and rejected share theirs) and `image_order` lists, in the
        order the placeholders appear in the batch, which distinct image fills each.
        With `seq_lengths` and no `attention_mask` the batch is one packed row (see
        curate.models.packing)."""
        if attention_mask is None and seq_lengths is not None:
            if position_ids is None:
                raise ValueError("a packed row (seq_lengths, no attention_mask) needs its "
                                 "position_ids (see curate.models.packing.pack_sequences)")
            return self._packed_features(input_ids, seq_lengths, position_ids, token_type_ids,
                                         pixel_values, image_grid_thw, image_order)
        if attention_mask is None:
            raise ValueError("features() needs an attention_mask, or seq_lengths and "
                             "position_ids for a packed row")
        dev = self.device
        kw: dict[str, Any] = {"input_ids": input_ids.to(dev),
                              "attention_mask": attention_mask.to(dev)}
        if token_type_ids is not None:
            kw["token_type_ids"] = token_type_ids.to(dev)
        if self.is_vl:
            kw.update(self._vision_inputs(kw["input_ids"], kw["attention_mask"], pixel_values,
                                          image_grid_thw, image_order))
        elif "position_ids" in _forward_params(self.backbone):
            kw["position_ids"] = _positions(kw["attention_mask"])
        if self.reward_config.backbone != "encoder":
            kw["use_cache"] = False
        dummy = kw.pop("_dummy_vision", None)
        hidden = self.backbone(**kw).last_hidden_state
        pooled = pool(hidden, kw["attention_mask"], self.reward_config.pooling)
        if dummy is not None:  # keeps the vision tower in the graph, contributing 0
            pooled = pooled + 0.0 * dummy.to(pooled.dtype)
        return pooled

    def _packed_features(self, input_ids: torch.Tensor, lengths: torch.Tensor,
                         position_ids: torch.Tensor, token_type_ids: torch.Tensor | None,
                         pixel_values: torch.Tensor | None, grid: torch.Tensor | None,
                         order: torch.Tensor | None) -> torch.Tensor:
        """Pooled hidden states (S, H) of one packed row of S sequences."""
        from curate.models.packing import encoder_block_mask, pool_packed

        dev = self.device
        ids = input_ids.to(dev)
        kw: dict[str, Any] = {"input_ids": ids, "position_ids": position_ids.to(dev)}
        if token_type_ids is not None:
            kw["token_type_ids"] = token_type_ids.to(dev)
        kind = self.reward_config.backbone
        if kind == "encoder":
            kw["attention_mask"] = encoder_block_mask(self.backbone, ids, lengths)
        else:
            kw["use_cache"] = False
        if self.is_vl:
            vision = self._vision_inputs(ids, torch.ones_like(ids), pixel_values, grid, order)
            vision.pop("position_ids", None)  # the packed positions stand
            kw.update(vision)
        dummy = kw.pop("_dummy_vision", None)
        hidden = self.backbone(**kw).last_hidden_state
        pooled = pool_packed(hidden, lengths, self.reward_config.pooling)
        if dummy is not None:
            pooled = pooled + 0.0 * dummy.to(pooled.dtype)
        return pooled

    def forward(self, **batch: Any) -> torch.Tensor:
        return self.v_head(self.features(**batch))

    def _vision_inputs(self, input_ids: torch.Tensor, mask: torch.Tensor,
                       pixel_values: torch.Tensor | None, grid: torch.Tensor | None,
                       order: torch.Tensor | None) -> dict[str, Any]:
        bb = self.backbone
        kw: dict[str, Any] = {
            "mm_token_type_ids": (input_ids == bb.config.image_token_id).int()}
        if pixel_values is None or grid is None or grid.numel() == 0:
            kw["position_ids"] = _positions(mask)
            if self.always_run_vision:
                kw["_dummy_vision"] = self._dummy_vision().to(mask.device)
            return kw
        dev = self.device
        grid = grid.to(dev)
        order = torch.arange(len(grid)) if order is None else order.cpu()
        seq_grid = grid[order.to(dev)]
        if "mm_encoder_outputs" in _forward_params(bb):  # each distinct image encoded once
            feats = bb.get_image_features(pixel_values.to(dev), grid, return_dict=True)
            feats.pooler_output = tuple(feats.pooler_output[int(i)] for i in order)
            kw["mm_encoder_outputs"] = {"image": feats}
        else:  # older transformers: every placeholder block gets its image's patches again
            patches = torch.split(pixel_values, grid.prod(-1).tolist())
            kw["pixel_values"] = torch.cat([patches[int(i)] for i in order]).to(dev)
        kw["image_grid_thw"] = seq_grid
        return kw

    def _dummy_vision(self) -> torch.Tensor:
        """Run the vision tower on one blank 2x2-merge image; returns a scalar to add * 0."""
        vis = self.backbone.visual
        vc = self.backbone.config.vision_config
        merge = int(vc.spatial_merge_size)
        dim = vc.in_channels * vc.temporal_patch_size * vc.patch_size**2
        px = torch.zeros((merge * merge, dim), device=self.device, dtype=vis.dtype)
        grid = torch.tensor([[1, merge, merge]], device=self.device)
        out = vis(px, grid_thw=grid)
        hidden = out.pooler_output if hasattr(out, "pooler_output") else out
        return hidden.float().sum()

    # -- freezing ------------------------------------------------------------------
    def freeze(self, what: str) -> None:
        """`backbone`: only the head trains; `vision`: the vision encoder is frozen
        (its projector, the language model and the head train); `none`."""
        if what not in ("backbone", "vision", "none"):
            raise ValueError(f"--freeze must be backbone, vision or none, not {what!r}")
        for p in self.backbone.parameters():
            p.requires_grad_(what != "backbone")
        if what == "vision" and self.is_vl:
            for name, p in self.backbone.visual.named_parameters():
                p.requires_grad_(name.startswith("merger."))
        for p in self.v_head.parameters():
            p.requires_grad_(True)

    # -- scoring -------------------------------------------------------------------
    def encode_items(self, items: Sequence[Item]
                     ) -> tuple[list[Encoded], list[ImageInputs | None]]:
        encs, imgs = [], []
        for prompt, response, images in items:
            ii = self.encoder.encode_images(images)
            encs.append(self.encoder.encode(prompt, response, ii))
            imgs.append(ii)
        return encs, imgs

    def collate(self, encs: Sequence[Encoded], imgs: Sequence[ImageInputs | None],
                image_of_seq: Sequence[int | None] | None = None,
                packed: bool = False) -> dict[str, torch.Tensor]:
        """Pad sequences, or pack them into one row (`packed`); `image_of_seq[i]` names the
        entry of `imgs` sequence i uses."""
        from curate.models.packing import pack_sequences, vl_positions

        batch = pack_sequences(encs) if packed else pad_batch(
            encs, self.pad_id, self.reward_config.padding_side)
        if self.is_vl:
            batch.update(merge_images(imgs))
            if "image_grid_thw" in batch:
                batch["image_order"] = _image_order(encs, imgs, image_of_seq)
            if packed:
                grids = batch["image_grid_thw"][batch["image_order"]] \
                    if "image_grid_thw" in batch else None
                batch["position_ids"] = vl_positions(
                    self.backbone, batch["input_ids"], batch["seq_lengths"].tolist(), grids,
                    [e.n_images for e in encs])
        return batch

    def _autocast(self) -> Any:
        import contextlib

        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    @torch.inference_mode()
    def compute_features(self, items: Sequence[Item]) -> tuple[torch.Tensor, list[int]]:
        """(pooled features (n, H) float32, truncation flags) of (prompt, response, images)
        items: what the feature cache stores."""
        from curate.models.feature_cache import (
            OVER_LENGTH,
            PROMPT_TRUNCATED,
            RESPONSE_TRUNCATED,
        )

        encs, imgs = self.encode_items(items)
        with self._autocast():
            feats = self.features(**self.collate(encs, imgs)).float()
        flags = [PROMPT_TRUNCATED * e.prompt_truncated + RESPONSE_TRUNCATED * e.response_truncated
                 + OVER_LENGTH * e.over_length for e in encs]
        return feats, flags

    @torch.inference_mode()
    def score_batch(self, items: Sequence[Item], batch_size: int = 16,
                    feature_cache: Any = None) -> list[float]:
        """Rewards of many (prompt messages, response, images) items, in input order.

        `feature_cache` (a FeatureCache or a cache root folder): read pooled features
        from it and add the missing ones, so only the head runs on items seen before
        (right for a frozen backbone: k-fold scoring, reruns)."""
        was_training = self.training
        self.eval()
        out: list[float] = [0.0] * len(items)
        try:
            if feature_cache is not None:
                cache = self.feature_cache(feature_cache)
                cache.compute_missing(items, self.compute_features, batch_size)
                feats, _ = cache.lookup(items)
                return self.v_head(feats.to(self.device)).float().cpu().tolist() if items else []
            for idx in _length_batches(items, batch_size):
                encs, imgs = self.encode_items([items[i] for i in idx])
                with self._autocast():
                    r = self(**self.collate(encs, imgs)).float().cpu().tolist()
                for i, v in zip(idx, r, strict=True):
                    out[i] = v
        finally:
            self.train(was_training)
        return out

    def feature_cache(self, cache: Any = None) -> Any:
        """This model's FeatureCache under `cache` (a root folder; None: the default root)."""
        from curate.models.feature_cache import FeatureCache, model_namespace

        if isinstance(cache, FeatureCache):
            return cache
        return FeatureCache(cache, model_namespace(self))

    def score(self, prompt_messages: Messages, response: str,
              images: Sequence[dict] | None = None) -> float:
        """The reward of one response to a prompt (images as canonical image records)."""
        return self.score_batch([(prompt_messages, response, images)])[0]

    def score_pairs(self, rows: pa.Table | pa.RecordBatch | Sequence[dict[str, Any]],
                    batch_size: int = 16, feature_cache: Any = None
                    ) -> tuple[list[float], list[float]]:
        """(chosen rewards, rejected rewards) of canonical pair rows."""
        if not isinstance(rows, Sequence):  # a pyarrow Table or RecordBatch
            rows = rows.select(["prompt", "chosen", "rejected", "images"]).to_pylist()
        items = [(r["prompt"], r["chosen"], r.get("images")) for r in rows]
        items += [(r["prompt"], r["rejected"], r.get("images")) for r in rows]
        scores = self.score_batch(items, batch_size, feature_cache=feature_cache)
        return scores[:len(rows)], scores[len(rows):]

    # -- identity, save, load ------------------------------------------------------
    @property
    def backbone_fingerprint(self) -> str:
        """sha256 over the backbone's parameters (computed once; reset after training)."""
        if self._backbone_fp is None:
            self._backbone_fp = tensors_fingerprint(self.backbone.state_dict())
        return self._backbone_fp

    def reset_fingerprint(self) -> None:
        self._backbone_fp = None

    @property
    def fingerprint(self) -> str:
        """Identity of the whole reward model: backbone, head, and how text is encoded."""
        head = tensors_fingerprint(self.v_head.state_dict())
        key = json.dumps([self.backbone_fingerprint, head, self.reward_config.encoder_key()],
                         sort_keys=True)
        return hashlib.sha256(key.encode()).hexdigest()[:32]

    def save(self, path: str | os.PathLike[str], save_backbone: bool = True,
             state_dict: dict[str, torch.Tensor] | None = None) -> Path:
        """Write a checkpoint folder; `state_dict` (e.g. gathered from ZeRO-3) overrides ours."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        sd = state_dict if state_dict is not None else self.state_dict()
        head = {f"v_head.summary.{k}": sd[f"v_head.summary.{k}"].detach().float().cpu()
                .contiguous() for k in ("weight", "bias")}
        save_file(head, str(path / VALUE_HEAD), metadata={"format": "pt"})
        backbone_sd = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}
        backbone_fp = tensors_fingerprint(backbone_sd)
        if save_backbone:  # save_pretrained consumes the dict it is given: pass a copy
            self.backbone.save_pretrained(path, state_dict=dict(backbone_sd),
                                          safe_serialization=True)
            self.tokenizer.save_pretrained(path)
            if self.image_processor is not None:
                self.image_processor.save_pretrained(path)
        cfg = RewardConfig.from_dict(asdict(self.reward_config))
        cfg.backbone_saved = save_backbone
        cfg.backbone_fingerprint = backbone_fp
        self._backbone_fp = backbone_fp
        (path / REWARD_CONFIG).write_text(json.dumps(asdict(cfg), indent=2, sort_keys=True) + "\n")
        return path


def _forward_params(module: Any) -> set[str]:
    import inspect

    return set(inspect.signature(module.forward).parameters)


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count real tokens only, so left padding does not shift them."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def _image_order(encs: Sequence[Encoded], imgs: Sequence[ImageInputs | None],
                 image_of_seq: Sequence[int | None] | None) -> torch.Tensor:
    """For each image placeholder block, in batch order, the index of its distinct image."""
    starts, k = [], 0
    for x in imgs:
        starts.append(k)
        k += len(x.tokens_per_image) if x is not None else 0
    order: list[int] = []
    for i, e in enumerate(encs):
        j = i if image_of_seq is None else image_of_seq[i]
        if j is None or e.n_images == 0:
            continue
        order.extend(range(starts[j], starts[j] + e.n_images))
    return torch.tensor(order, dtype=torch.long)


def _length_batches(items: Sequence[tuple[Any, str, Any]], batch_size: int) -> Iterator[list[int]]:
    """Index batches of similar length (less padding); input order restored by the caller."""
    def size(i: int) -> int:
        prompt, response, _ = items[i]
        return len(response) + sum(len(m["content"]) for m in prompt)

    idx = sorted(range(len(items)), key=size)
    for s in range(0, len(idx), batch_size):
        yield idx[s:s + batch_size]


def tensors_fingerprint(sd: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(sd):
        t = sd[name].detach()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        h.update(t.cpu().contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:32]


def build_reward_model(model: str, seed: int = 0, dtype: torch.dtype | None = None,
                       **overrides: Any) -> RewardModel:
    """A fresh reward model on a base backbone (`minilm`, `tiny-qwen2.5-vl`, a path or hub id).

    `overrides` set RewardConfig fields (pooling, max_length, layout, backbone, ...)."""
    backbone, tok, proc = load_backbone(model, dtype=dtype)
    cfg = default_config(model, backbone, tok, **overrides)
    return RewardModel(backbone, tok, cfg, image_processor=proc, seed=seed)


def load_reward_model(ckpt: str | os.PathLike[str], device: str | torch.device | None = None,
                      dtype: torch.dtype | None = None) -> RewardModel:
    """Load a checkpoint written by `RewardModel.save` (or any transformers folder with a
    `value_head.safetensors`, as Skywork-VL-Reward ships)."""
    from safetensors.torch import load_file

    path = Path(ckpt)
    if not (path / VALUE_HEAD).is_file():
        raise FileNotFoundError(f"{path}: no {VALUE_HEAD}; not a reward-model checkpoint")
    cfg_file = path / REWARD_CONFIG
    if cfg_file.is_file():
        cfg = RewardConfig.from_dict(json.loads(cfg_file.read_text()))
    else:
        cfg = None
    source = str(path) if cfg is None or cfg.backbone_saved else cfg.base_model
    backbone, tok, proc = load_backbone(source, dtype=dtype)
    if cfg is None:
        cfg = default_config(str(path), backbone, tok)
    if not cfg.backbone_saved and cfg.backbone_fingerprint:
        got = tensors_fingerprint(backbone.state_dict())
        if got != cfg.backbone_fingerprint:
            raise ValueError(f"{path}: the head was trained on a backbone with fingerprint "
                             f"{cfg.backbone_fingerprint}, but {cfg.base_model} has {got}")
    head_sd = load_file(str(path / VALUE_HEAD))
    w = head_sd["v_head.summary.weight"]
    head = ValueHead(w.shape[-1])
    head.summary.load_state_dict({"weight": w.reshape(1, -1), "bias": head_sd[
        "v_head.summary.bias"].reshape(1)})
    model = RewardModel(backbone, tok, cfg, image_processor=proc, head=head)
    model.eval()
    if device is not None:
        model.to(device)
    if cfg.autocast == "bfloat16" and _bf16_autocast_ok(model.device):
        model.autocast_dtype = torch.bfloat16  # score as trained (and hit its feature cache)
    return model


def _bf16_autocast_ok(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and use_bf16("auto")
