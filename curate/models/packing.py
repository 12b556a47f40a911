"""Padding-free (packed) batches: the sequences of a batch concatenated into one row.

A packed batch has `input_ids` of shape (1, T) with T the sum of the sequence
lengths, `seq_lengths` (S,) and `position_ids` that restart at 0 for every
sequence. Attention stays within each sequence:

- causal LMs and Qwen2.5-VL: no attention mask, only the restarting positions;
  transformers then attends within each sequence (flash-attention varlen from the
  positions where it is installed, else a block-diagonal causal mask for SDPA,
  eager or flex attention);
- Qwen2.5-VL: positions are (4, 1, T): the text positions first (what the mask is
  built from), then the multimodal rope positions of each sequence computed alone by
  the model's own `get_rope_index`, as the padded path computes them per row;
- encoders (BERT, MiniLM): a block-diagonal bidirectional mask in the format the
  attention implementation wants, built by transformers' mask helpers.

Each sequence's reward is read at its own last (or first, or mean over its) tokens,
so a packed forward gives the padded forward's rewards up to float rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

PACKING_MODES = ("on", "off", "auto")


def pack_sequences(seqs: Sequence[Any]) -> dict[str, torch.Tensor]:
    """Encoded sequences -> one row: input_ids (1, T), position_ids (1, T), seq_lengths (S,)
    (and token_type_ids (1, T) when the sequences have them)."""
    lengths = [len(s.input_ids) for s in seqs]
    ids = torch.tensor([t for s in seqs for t in s.input_ids], dtype=torch.long)
    out = {"input_ids": ids.unsqueeze(0),
           "position_ids": restart_positions(torch.tensor(lengths)).unsqueeze(0),
           "seq_lengths": torch.tensor(lengths, dtype=torch.long)}
    if seqs and seqs[0].token_type_ids:
        out["token_type_ids"] = torch.tensor(
            [t for s in seqs for t in (s.token_type_ids or [0] * len(s.input_ids))],
            dtype=torch.long).unsqueeze(0)
    return out


def restart_positions(lengths: torch.Tensor) -> torch.Tensor:
    """[3, 2] -> [0, 1, 2, 0, 1]."""
    total = int(lengths.sum())
    starts = torch.repeat_interleave(torch.cumsum(lengths, 0) - lengths, lengths)
    return torch.arange(total, dtype=torch.long) - starts


def sequence_ids(lengths: torch.Tensor) -> torch.Tensor:
    """[3, 2] -> [0, 0, 0, 1, 1]: which sequence each packed token belongs to."""
    return torch.repeat_interleave(torch.arange(len(lengths), device=lengths.device), lengths)


def vl_positions(backbone: Any, input_ids: torch.Tensor, lengths: Sequence[int],
                 grids: torch.Tensor | None, images_per_seq: Sequence[int]) -> torch.Tensor:
    """(4, 1, T) positions of a packed Qwen2-VL / Qwen2.5-VL row: text positions, then the
    model's multimodal rope positions (`get_rope_index`) of each sequence on its own."""
    image_token = backbone.config.image_token_id
    ids = input_ids.reshape(-1)
    parts, start, g = [], 0, 0
    for n, k in zip(lengths, images_per_seq, strict=True):
        seq = ids[start:start + n].unsqueeze(0)
        if k:
            if grids is None:
                raise ValueError("a packed row with images needs their image_grid_thw")
            pos, _ = backbone.get_rope_index(seq, (seq == image_token).int(),
                                             image_grid_thw=grids[g:g + k])
            parts.append(pos[:, 0])
        else:
            parts.append(torch.arange(n, dtype=torch.long).expand(3, n))
        start += n
        g += k
    text = restart_positions(torch.tensor(list(lengths))).unsqueeze(0)
    return torch.cat([text, torch.cat(parts, dim=1)], dim=0).unsqueeze(1)


def pool_packed(hidden: torch.Tensor, lengths: torch.Tensor, how: str) -> torch.Tensor:
    """(1, T, H) -> (S, H): each sequence's last token, first token or mean."""
    h = hidden.reshape(-1, hidden.shape[-1])
    lengths = lengths.to(h.device)
    ends = torch.cumsum(lengths, 0)
    if how == "last":
        return h[ends - 1]
    if how == "cls":
        return h[ends - lengths]
    if how == "mean":
        sums = torch.zeros((len(lengths), h.shape[-1]), dtype=h.dtype, device=h.device)
        sums.index_add_(0, sequence_ids(lengths), h)
        return sums / lengths.clamp(min=1).unsqueeze(-1).to(h.dtype)
    raise ValueError(f"unknown pooling {how!r}: last, cls or mean")


def encoder_block_mask(backbone: Any, input_ids: torch.Tensor, lengths: torch.Tensor) -> Any:
    """A bidirectional mask that keeps attention within each packed sequence, in the format
    the backbone's attention implementation takes (bool for SDPA, additive for eager)."""
    from transformers.masking_utils import create_bidirectional_mask

    seq = sequence_ids(lengths.to(input_ids.device)).unsqueeze(0)

    def same_sequence(batch_idx: Any, head_idx: Any, q_idx: Any, kv_idx: Any) -> Any:
        return seq[batch_idx, q_idx] == seq[batch_idx, kv_idx]

    embeds = torch.empty((1, input_ids.shape[-1], 1), dtype=backbone.dtype,
                         device=input_ids.device)
    return create_bidirectional_mask(backbone.config, embeds, None,
                                     and_mask_function=same_sequence)


def flash_varlen_available() -> bool:
    """flash-attention installed and a CUDA device: packed rows run as varlen attention."""
    if not torch.cuda.is_available():
        return False
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return True


def supports_packing(backbone: Any, kind: str) -> bool:
    """Whether a backbone can take a packed row: Qwen2-VL / Qwen2.5-VL, causal LMs that take
    `position_ids` (their masks come from transformers' packed-sequence detection), and
    encoders whose attention takes a 4D mask (SDPA, eager, flex)."""
    import inspect

    params = set(inspect.signature(backbone.forward).parameters)
    if kind == "vl":
        return hasattr(backbone, "get_rope_index") and "position_ids" in params
    if kind == "encoder":
        impl = getattr(backbone.config, "_attn_implementation", None) or "eager"
        return "position_ids" in params and impl in ("sdpa", "eager", "flex_attention")
    return "position_ids" in params


def resolve_packing(mode: str, backbone: Any, kind: str, varlen: bool | None = None) -> bool:
    """`on`: packed (an error when the backbone cannot); `off`: padded; `auto`: packed where
    the backbone supports it and, when `varlen` says so, attention runs as varlen kernels.

    Without varlen kernels a packed row is one block-masked attention over the whole row,
    quadratic in its total length: on a CPU, MiniLM full fine-tuning ran at 0.21 packed vs
    2.56 padded pairs per CPU-second (bench_train), so `auto` pads there."""
    if mode not in PACKING_MODES:
        raise ValueError(f"packing must be one of {PACKING_MODES}, not {mode!r}")
    if mode == "off":
        return False
    ok = supports_packing(backbone, kind)
    if mode == "auto" and varlen is False:
        return False
    if mode == "on" and not ok:
        raise ValueError(f"packing: on, but this {kind} backbone "
                         f"({type(backbone).__name__}) cannot take packed sequences; "
                         "use packing: auto or off")
    return ok


def setup_packing(rm: Any, mode: str, device: torch.device) -> str:
    """Turn packing on or off for a RewardModel (`mode`: on | off | auto: packed only where
    flash-attention varlen runs, see `resolve_packing`) and, for a packed
    causal or VL backbone on a GPU with flash-attention installed, switch its attention to
    flash-attention varlen. Returns the attention path in words (for the log)."""
    kind = rm.reward_config.backbone
    varlen = kind != "encoder" and device.type == "cuda" and flash_varlen_available()
    rm.packing = resolve_packing(mode, rm.backbone, kind, varlen=varlen)
    impl = getattr(rm.backbone.config, "_attn_implementation", None) or "eager"
    if not rm.packing:
        return f"padded, {impl}"
    if varlen and impl != "flash_attention_2":
        try:
            rm.backbone.set_attn_implementation("flash_attention_2")
            impl = "flash_attention_2"
        except (ValueError, ImportError, AttributeError) as exc:  # keep SDPA's block mask
            return f"packed, {impl} block mask (flash-attention unusable: {exc})"
    if impl == "flash_attention_2":
        return "packed, flash-attention varlen"
    return f"packed, {impl} block-diagonal mask"
