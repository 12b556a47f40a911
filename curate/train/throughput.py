"""What training computes: real vs computed tokens, pairs/s, tokens/s and model FLOP utilisation.

`token_efficiency` = real tokens / computed tokens: the tokens of the sequences
themselves over the positions the forward ran (padding included). A packed row
computes only real tokens; a padded batch computes sequences x its longest one.

Model FLOPs follow the PaLM appendix convention (useful work only: no padding, no
recomputation under gradient checkpointing): per sequence of L tokens, 6 N L for the
weights that the backward passes through (2 N L when they are frozen and nothing
before them trains) plus 12 layers x hidden x L^2 for attention; a frozen vision tower
costs its forward, 2 N_vision per patch. MFU = model FLOPs per second / the GPU's
dense bf16 peak (from a table of known GPUs; None on a CPU or an unknown GPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

# dense (no sparsity) bf16 tensor-core peaks, TFLOPS, from the vendors' data sheets
PEAK_BF16_TFLOPS = {
    "H200": 989.0, "H100 SXM": 989.0, "H100 80GB HBM3": 989.0, "H100 NVL": 835.0,
    "H100 PCIe": 756.0, "H100": 756.0, "GH200": 989.0, "B200": 2250.0, "A100": 312.0,
    "A800": 312.0, "L40S": 362.0, "L40": 181.0, "L4": 121.0, "A10G": 70.0, "A10": 125.0,
    "RTX 4090": 165.0, "RTX 3090": 71.0,
}


def peak_tflops(device: torch.device) -> float | None:
    """The dense bf16 peak of a CUDA device, from its name (longest table key it contains)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    hits = [k for k in PEAK_BF16_TFLOPS if k in name]
    return PEAK_BF16_TFLOPS[max(hits, key=len)] if hits else None


@dataclass
class ModelShape:
    """The numbers model FLOPs are computed from."""

    params_text: int  # language model / encoder weights, embeddings excluded
    layers: int
    hidden: int
    params_vision: int = 0
    text_trains: bool = True
    vision_trains: bool = False

    @classmethod
    def of(cls, rm: Any) -> ModelShape:
        bb = rm.backbone
        cfg = getattr(bb.config, "text_config", None) or bb.config
        vision = getattr(bb, "visual", None)
        vis_params = list(vision.parameters()) if vision is not None else []
        vis_ids = {id(p) for p in vis_params}
        # embeddings (token, position, token-type) are lookups, not matrix products
        text = [p for n, p in bb.named_parameters() if id(p) not in vis_ids and "embed" not in n]
        return cls(params_text=sum(p.numel() for p in text),
                   layers=int(cfg.num_hidden_layers), hidden=int(cfg.hidden_size),
                   params_vision=sum(p.numel() for p in vis_params),
                   text_trains=any(p.requires_grad for p in text),
                   vision_trains=any(p.requires_grad for n, p in vision.named_parameters()
                                     if not n.startswith("merger.")) if vision else False)

    def flops(self, seq_lengths: torch.Tensor, image_patches: int = 0) -> float:
        """Model FLOPs of one training step (forward + backward) over these sequences."""
        lengths = seq_lengths.double()
        weight = 6 if self.text_trains else 2
        text = weight * self.params_text * float(lengths.sum()) \
            + 12 * self.layers * self.hidden * float((lengths ** 2).sum())
        vision = (6 if self.vision_trains else 2) * self.params_vision * image_patches
        return text + vision


@dataclass
class Throughput:
    """Running totals over the training steps and the seconds they took (batch loading
    included, evaluation and checkpoints not)."""

    seconds: float = 0.0
    micro_batches: int = 0
    pairs: int = 0
    real_tokens: int = 0
    computed_tokens: int = 0
    flops: float = 0.0

    def add(self, batch: dict[str, Any], shape: ModelShape | None) -> None:
        self.micro_batches += 1
        self.pairs += int(batch["margin"].shape[0])
        self.real_tokens += int(batch["real_tokens"])
        self.computed_tokens += int(batch["computed_tokens"])
        if shape is not None:
            patches = int(batch["pixel_values"].shape[0]) if "pixel_values" in batch else 0
            self.flops += shape.flops(batch["seq_lengths"].cpu(), patches)

    def summary(self, processes: int = 1, peak: float | None = None) -> dict[str, Any]:
        """Totals across `processes` ranks (each assumed to do the same), rates per second."""
        s = max(self.seconds, 1e-9)
        tflops = self.flops * processes / s / 1e12
        return {
            "micro_batches": self.micro_batches * processes,
            "real_tokens": self.real_tokens * processes,
            "computed_tokens": self.computed_tokens * processes,
            "token_efficiency": round(self.real_tokens / max(1, self.computed_tokens), 4),
            "throughput_seconds": round(self.seconds, 3),
            "pairs_per_second": round(self.pairs * processes / s, 2),
            "tokens_per_second": round(self.real_tokens * processes / s, 1),
            "model_tflops_per_second": round(tflops, 3),
            "mfu": round(tflops / (peak * processes), 4) if peak else None,
        }


def format_rate(rate: dict[str, Any]) -> str:
    """One log line: pairs/s, tokens/s, token efficiency, MFU where known."""
    line = (f"{rate['pairs_per_second']:.2f} pairs/s, {rate['tokens_per_second']:.0f} tokens/s, "
            f"token efficiency {rate['token_efficiency']:.3f} ({rate['real_tokens']} real / "
            f"{rate['computed_tokens']} computed)")
    if rate.get("mfu") is not None:
        line += f", {rate['model_tflops_per_second']:.1f} TFLOP/s, MFU {rate['mfu']:.1%}"
    return line
