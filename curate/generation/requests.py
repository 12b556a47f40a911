"""Generation requests: what is asked of the model, and with which sampling parameters.

Rows of the input dataset that share a normalised prompt (every message, NFKC,
case-folded, whitespace collapsed) and the same images become one request, so each
distinct question is generated once. A request asks for `n` samples; sample `i` has
its own seed, derived from the run's seed, the request and `i`, so what a sample
says does not depend on which other requests share its batch or on the run's order.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa

from curate import dataset as D
from curate.text import normalise_text

FLAG_COLUMN = "needs_regeneration"
SELECTIONS = ("all", "flagged")


@dataclass(frozen=True)
class SamplingParams:
    """How each request is sampled (the same for every backend)."""

    n: int = 8
    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 1024
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"--n must be at least 1, not {self.n}")
        if self.temperature < 0:
            raise ValueError(f"--temperature must be >= 0, not {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"--top-p must be in (0, 1], not {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"--max-new-tokens must be at least 1, not {self.max_new_tokens}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Request:
    """One distinct prompt (+ images) to sample `n` responses for."""

    key: str  # hash of the normalised prompt and the image hashes
    prompt: list[dict[str, Any]]
    images: list[dict[str, Any]]
    source_id: str  # the pair_id of the first input row with this prompt
    category: str | None
    pair_ids: list[str] = field(default_factory=list)  # every input row it stands for


@dataclass(frozen=True)
class Job:
    """One sample of one request: what a backend generates."""

    request: Request
    index: int  # sample index, 0..n-1
    seed: int


@dataclass
class Sample:
    """What a backend returns for a job. `error` (reason, detail) marks a failed one:
    `prompt_too_long` or `generation_failed`."""

    text: str = ""
    finish_reason: str = "stop"  # "stop" or "length" (hit max_new_tokens)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: tuple[str, str] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "finish_reason": self.finish_reason,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}


def image_hashes(images: Sequence[dict[str, Any]] | None) -> list[str]:
    return [im.get("sha256") or hashlib.sha256(im.get("bytes") or b"").hexdigest()
            for im in images or []]


def request_key(prompt: Sequence[dict[str, Any]] | None,
                images: Sequence[dict[str, Any]] | None) -> str:
    """Rows with the same key are one request: same normalised messages, same images."""
    payload = json.dumps([[(m["role"], normalise_text(m["content"] or "")) for m in prompt or []],
                          image_hashes(images)], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


def sample_seed(seed: int, key: str, index: int) -> int:
    """The seed of sample `index` of request `key` (31 bits: every server accepts it)."""
    h = hashlib.sha256(f"{seed}\0{key}\0{index}".encode()).digest()
    return int.from_bytes(h[:4], "big") & 0x7FFFFFFF


def jobs_for(request: Request, sampling: SamplingParams) -> list[Job]:
    return [Job(request, i, sample_seed(sampling.seed, request.key, i))
            for i in range(sampling.n)]


@dataclass
class Selection:
    """Which input rows are asked for: every kept row, only the flagged ones (`curate
    reward --action flag`), or only those flagged for the given reasons."""

    where: str = "all"
    reasons: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.where not in SELECTIONS:
            raise ValueError(f"--where must be one of {', '.join(SELECTIONS)}, not {self.where!r}")
        if self.reasons:
            self.where = "flagged"

    @property
    def needs_flags(self) -> bool:
        return self.where == "flagged"

    def mask(self, batch: pa.RecordBatch) -> list[bool]:
        if not self.needs_flags:
            return [True] * batch.num_rows
        flags = batch.column(FLAG_COLUMN).to_pylist()
        if self.reasons:
            return [f in self.reasons for f in flags]
        return [f is not None for f in flags]

    def to_dict(self) -> dict[str, Any]:
        return {"where": self.where, "reasons": list(self.reasons)}


def check_selectable(datasets: Sequence[D.Dataset], selection: Selection) -> None:
    if not selection.needs_flags:
        return
    for d in datasets:
        if d.schema().get_field_index(FLAG_COLUMN) < 0:
            raise ValueError(f"{d.location}: has no {FLAG_COLUMN} column, so --where flagged / "
                             "--reason select nothing; make it with `curate reward ... "
                             "--action flag`")


@dataclass
class Plan:
    """Pass one over the input: which rows are asked for, grouped by request key.

    Holds only compact keys (hashes and pair ids), never prompts or images."""

    rows_read: int = 0
    first: dict[str, int] = field(default_factory=dict)  # key -> global row of its first row
    pair_ids: dict[str, list[str]] = field(default_factory=dict)

    @property
    def selected(self) -> int:
        return sum(len(v) for v in self.pair_ids.values())


def plan_requests(datasets: Sequence[D.Dataset], selection: Selection,
                  batch_size: int = 256) -> Plan:
    plan = Plan()
    columns = ["pair_id", "prompt", "images"] + ([FLAG_COLUMN] if selection.needs_flags else [])
    for batch in D.iter_inputs(list(datasets), columns=columns, batch_size=batch_size):
        mask = selection.mask(batch)
        ids = batch.column("pair_id").to_pylist()
        prompts = batch.column("prompt").to_pylist()
        # the image hashes alone: the bytes are not needed to group rows
        images = batch.column("images").to_pylist()
        for i, chosen in enumerate(mask):
            if chosen:
                key = request_key(prompts[i], images[i])
                plan.first.setdefault(key, plan.rows_read + i)
                plan.pair_ids.setdefault(key, []).append(ids[i])
        plan.rows_read += batch.num_rows
    return plan


def iter_requests(datasets: Sequence[D.Dataset], plan: Plan,
                  batch_size: int = 256) -> Iterator[Request]:
    """Pass two: each request once, in input order, built from its first row."""
    firsts = {row: key for key, row in plan.first.items()}
    row = 0
    columns = ["pair_id", "prompt", "images", "category"]
    for batch in D.iter_inputs(list(datasets), columns=columns, batch_size=batch_size):
        wanted = [i for i in range(batch.num_rows) if row + i in firsts]
        if wanted:
            sub = batch.take(pa.array(wanted)).to_pylist()
            for i, r in zip(wanted, sub, strict=True):
                key = firsts[row + i]
                yield Request(key, r["prompt"], r["images"] or [], r["pair_id"], r["category"],
                              plan.pair_ids[key])
        row += batch.num_rows
