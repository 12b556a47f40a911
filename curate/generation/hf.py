"""The `transformers` backend: the policy model in this process, batched `generate`.

Prompts go through the model's own chat template, and images through Qwen's image
processor (the PIL backend, no torchvision) with `<|image_pad|>` expanded to the
number of vision tokens, exactly as `curate.models.encoding.PairEncoder` encodes
them for the reward model. bf16 on a GPU, fp32 on a CPU.

Determinism: each row of a batch samples with its own `torch.Generator` seeded by
its job (see `requests.sample_seed`): a logits processor draws the token from the
temperature / top-p distribution with that generator and `generate` runs greedy
over the result. Rows of one batch have equal prompt lengths (jobs are grouped by
length), so no row is padded and a sample does not depend on its batch-mates.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curate.generation.requests import Job, Request, Sample, SamplingParams

VL_MODEL_TYPES = {"qwen2_5_vl", "qwen2_vl"}
TINY_SEED = 0


def model_fingerprint(ref: str) -> str:
    """What the cache and the manifest key a model by: the tiny model's config and seed,
    or a local checkpoint's config plus each weight file's name, size and first and
    last MiB; a hub id as itself."""
    from curate.models.tiny import TINY_NAME

    h = hashlib.sha256()
    if ref == TINY_NAME:
        from curate.models.tiny import build_tiny_tokenizer, tiny_config

        h.update(f"{TINY_NAME}\0{TINY_SEED}\0".encode())
        h.update(tiny_config(build_tiny_tokenizer()).to_json_string().encode())
        return f"{TINY_NAME}:{h.hexdigest()[:16]}"
    path = Path(ref)
    if not path.is_dir():
        return ref
    for f in sorted(path.iterdir()):
        if f.name == "config.json" or f.suffix in (".json", ".jinja") and "token" in f.name:
            h.update(f.name.encode() + b"\0" + f.read_bytes())
        elif f.suffix in (".safetensors", ".bin"):
            size = f.stat().st_size
            h.update(f"{f.name}\0{size}\0".encode())
            with f.open("rb") as fh:
                h.update(fh.read(1 << 20))
                fh.seek(max(0, size - (1 << 20)))
                h.update(fh.read(1 << 20))
    return f"{path.name}:{h.hexdigest()[:16]}"


def load_policy(ref: str, device: str, dtype: Any) -> tuple[Any, Any, Any]:
    """(causal LM with generate, tokenizer, image processor or None)."""
    import torch

    from curate.models.reward_model import quiet_transformers
    from curate.models.tiny import TINY_NAME

    quiet_transformers()
    if ref == TINY_NAME:
        from transformers import Qwen2_5_VLForConditionalGeneration

        from curate.models.tiny import build_tiny_image_processor, build_tiny_tokenizer, tiny_config

        tok = build_tiny_tokenizer()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(TINY_SEED)
            model = Qwen2_5_VLForConditionalGeneration(tiny_config(tok))
        # transformers declares PreTrainedModel.to with functools.wraps(nn.Module.to), and
        # typeshed's functools._Wrapped is no descriptor: mypy does not bind `self` (here
        # and below)
        model = model.to(device=device, dtype=dtype)  # type: ignore[call-arg]
        return model.eval(), tok, build_tiny_image_processor()
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForImageTextToText,
        AutoTokenizer,
    )

    cfg = AutoConfig.from_pretrained(ref)
    vl = cfg.model_type in VL_MODEL_TYPES
    cls = AutoModelForImageTextToText if vl else AutoModelForCausalLM
    model = cls.from_pretrained(ref, dtype=dtype).to(device).eval()  # type: ignore[arg-type]
    tok = AutoTokenizer.from_pretrained(ref)
    proc = None
    if vl:
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
            Qwen2VLImageProcessorPil,
        )

        proc = Qwen2VLImageProcessorPil.from_pretrained(ref)
    return model, tok, proc


class _RowSampler:
    """A logits processor: row i draws its token from the temperature / top-p
    distribution with its own generator; every other token gets -inf."""

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float,
                 device: Any) -> None:
        import torch

        self.gens = [torch.Generator(device=device).manual_seed(s) for s in seeds]
        self.temperature, self.top_p = temperature, top_p

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        if self.top_p < 1.0:
            sorted_p, order = probs.sort(dim=-1, descending=True)
            outside = sorted_p.cumsum(-1) - sorted_p > self.top_p  # keeps the top token
            sorted_p = sorted_p.masked_fill(outside, 0.0)
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
        picks = torch.stack([torch.multinomial(probs[i], 1, generator=g)
                             for i, g in enumerate(self.gens)])
        out = torch.full_like(scores, float("-inf"))
        return out.scatter(-1, picks, 0.0)


@dataclass(frozen=True)
class TransformersSpec:
    """A picklable description of a `TransformersBackend`: what an engine worker (a Ray
    actor under `curate generate --engine ray`) builds its own copy from. The dtype
    follows the device as in the backend: bf16 on a GPU, fp32 on a CPU."""

    model: str
    batch_size: int = 16
    max_model_len: int | None = None
    device: str | None = None

    def build(self) -> TransformersBackend:
        return TransformersBackend(self.model, batch_size=self.batch_size,
                                   max_model_len=self.max_model_len, device=self.device)


class TransformersBackend:
    """`generate(jobs, sampling) -> samples` with a model loaded on first use."""

    name = "transformers"

    def __init__(self, model: str, *, batch_size: int = 16, max_model_len: int | None = None,
                 device: str | None = None) -> None:
        self.model_ref = model
        self.batch_size = batch_size
        self.max_model_len = max_model_len  # the model's own once loaded, unless given
        self._max_model_len_given = max_model_len
        self._device = device
        self._fingerprint: str | None = None
        self._loaded: tuple[Any, Any, Any] | None = None
        self._encoder: Any = None
        self.generate_calls = 0  # model.generate calls (batches), for tests and the manifest
        self.rows_generated = 0

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.model_ref)
        return self._fingerprint

    @property
    def model_name(self) -> str:
        return self.model_ref

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model_ref, "fingerprint": self.fingerprint,
                "max_model_len": self._max_model_len_given}

    def spec(self) -> TransformersSpec:
        """What an engine worker builds the same backend from (the model is not shipped)."""
        return TransformersSpec(self.model_ref, self.batch_size, self._max_model_len_given,
                                self._device)

    def _load(self) -> tuple[Any, Any, Any]:
        if self._loaded is None:
            import torch

            from curate.models.encoding import PairEncoder

            device = self._device or ("cuda" if torch.cuda.is_available() else "cpu")
            dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
            model, tok, proc = load_policy(self.model_ref, device, dtype)
            layout = "chat" if getattr(tok, "chat_template", None) else "plain"
            self._encoder = PairEncoder(tok, layout, max_length=1 << 30, image_processor=proc,
                                        vision=proc is not None)
            if self.max_model_len is None:
                cfg = getattr(model.config, "text_config", model.config)
                self.max_model_len = int(getattr(cfg, "max_position_embeddings", 1 << 30))
            self._loaded = (model, tok, proc)
        return self._loaded

    def _encode(self, request: Request) -> tuple[list[int], Any]:
        """(prompt token ids with image tokens expanded, the image processor's output)."""
        enc = self._encoder
        images = enc.encode_images(request.images) if enc.vision else None
        msgs = enc._messages(request.prompt, len(images.tokens_per_image) if images else 0)
        ids, _ = enc._expand_images(enc._ids(enc._prompt_text(msgs)), images)
        return ids, images

    def generate(self, jobs: Sequence[Job], sampling: SamplingParams,
                 on_sample: Callable[[int, Sample], None] | None = None) -> list[Sample]:
        """One sample per job, in order; a failure is that job's `error`, never a raise.
        `on_sample(i, sample)` is called as each batch finishes (the stage caches them)."""
        model, tok, _ = self._load()
        assert self.max_model_len is not None
        encoded: dict[str, tuple[list[int], Any]] = {}
        out: list[Sample | None] = [None] * len(jobs)
        by_length: dict[int, list[int]] = defaultdict(list)
        for j, job in enumerate(jobs):
            key = job.request.key
            if key not in encoded:
                try:
                    encoded[key] = self._encode(job.request)
                except Exception as exc:  # a prompt the processor cannot take
                    encoded[key] = ([], exc)
            ids, images = encoded[key]
            if isinstance(images, Exception):
                out[j] = Sample(error=("generation_failed",
                                       f"encoding: {type(images).__name__}: {images}"))
            elif len(ids) + sampling.max_new_tokens > self.max_model_len:
                out[j] = Sample(prompt_tokens=len(ids), error=(
                    "prompt_too_long", f"{len(ids)} prompt tokens + --max-new-tokens "
                    f"{sampling.max_new_tokens} > the model's {self.max_model_len}"))
            else:
                by_length[len(ids)].append(j)
        for length in sorted(by_length):
            idx = by_length[length]
            for s in range(0, len(idx), self.batch_size):
                batch = idx[s:s + self.batch_size]
                for j, sample in zip(batch, self._run([jobs[j] for j in batch], encoded,
                                                      sampling), strict=True):
                    out[j] = sample
                    if on_sample is not None:
                        on_sample(j, sample)
        return [s if s is not None else Sample(error=("generation_failed", "not generated"))
                for s in out]

    def _run(self, jobs: list[Job], encoded: dict[str, tuple[list[int], Any]],
             sampling: SamplingParams) -> list[Sample]:
        try:
            return self._generate_batch(jobs, encoded, sampling)
        except Exception as exc:
            if len(jobs) == 1:
                return [Sample(error=("generation_failed", f"{type(exc).__name__}: {exc}"))]
            # find the job that fails: each alone
            return [s for job in jobs for s in self._run([job], encoded, sampling)]

    def _generate_batch(self, jobs: list[Job], encoded: dict[str, tuple[list[int], Any]],
                        sampling: SamplingParams) -> list[Sample]:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList

        model, tok, _ = self._load()
        device = model.device
        ids = torch.tensor([encoded[j.request.key][0] for j in jobs], device=device)
        kw: dict[str, Any] = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        pix = [encoded[j.request.key][1] for j in jobs]
        pix = [p for p in pix if p is not None]
        if pix:
            kw["pixel_values"] = torch.cat([p.pixel_values for p in pix]).to(device, model.dtype)
            kw["image_grid_thw"] = torch.cat([p.image_grid_thw for p in pix]).to(device)
        eos = model.generation_config.eos_token_id or tok.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos])
        eos_ids.add(tok.eos_token_id)
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        gen_cfg = GenerationConfig(max_new_tokens=sampling.max_new_tokens, do_sample=False,
                                   eos_token_id=sorted(eos_ids), pad_token_id=pad)
        procs = LogitsProcessorList()
        if sampling.temperature > 0:
            procs.append(_RowSampler([j.seed for j in jobs], sampling.temperature,
                                     sampling.top_p, device))
        self.generate_calls += 1
        with torch.inference_mode():
            full = model.generate(**kw, generation_config=gen_cfg, logits_processor=procs)
        self.rows_generated += len(jobs)
        new = full[:, ids.shape[1]:].tolist()
        samples = []
        for row in new:
            end = next((k for k, t in enumerate(row) if t in eos_ids), None)
            tokens = row if end is None else row[:end]
            samples.append(Sample(
                text=tok.decode(tokens, skip_special_tokens=True),
                finish_reason="length" if end is None else "stop",
                prompt_tokens=ids.shape[1],
                completion_tokens=len(row) if end is None else end + 1))
        return samples

