"""`curate ingest candidates`: a prompt, optional images, and N responses sampled from a
policy model (the ingest stage for candidates rows, on ingest's row checks).

    curate ingest candidates samples.jsonl --out work/cands \\
        --map prompt=question,responses=samples,image=image,model=policy

The rows become a candidates dataset folder (schema `curate.schema.CANDIDATES_SCHEMA`),
which `curate pairs` scores with a reward model and turns into preference pairs.

The column map, prompt (text or messages, plus an optional `system` column), images,
id and category are read exactly as the generic adapter reads them, and the prompt
and every image are validated by the same code as `curate ingest`, so a candidates
row is refused for the same reasons a pair would be (corrupt_image, no_prompt, ...).
A response may be a string or a message (`{"role"|"from", "content"|"value"}`).
Responses that are missing, empty or not text are left out of `responses` and named
in `meta.invalid_responses`; a row with no usable response is rejected
(`no_responses`).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from curate import schema as S
from curate.manifest import Manifest
from curate.sources.base import AdapterOptions, RawPair, jsonable, lone_surrogate, safe_text
from curate.sources.generic import Generic
from curate.sources.readers import Record
from curate.stages.ingest_rows import (
    Chunk,
    IngestOptions,
    canonical_row,
    check_response,
    chunked,
    peek_threads,
    refused_row,
)

if TYPE_CHECKING:
    from curate.engine.protocol import Engine

FIELDS = ("prompt", "responses", "image", "model", "id", "category", "system")
KIND = "candidates"


@dataclass
class RawCandidates:
    """One source row: `base` holds prompt, images, id, category, meta and any refusal."""

    base: RawPair
    responses: Any
    model: Any


class Candidates(Generic):
    """The generic adapter's reading of a row, plus a list of responses and a model name."""

    kind = KIND
    default_source = KIND
    checked_fields = ("prompt", "responses")  # columns a file must have (Generic.pairs)
    description = ("prompts with N sampled responses: --map prompt=COL,responses=COL"
                   "[,image=COL,model=COL,id=COL,category=COL,system=COL]")

    def mapping(self) -> dict[str, str]:
        m = {"prompt": "prompt", "responses": "responses", "image": "image", "model": "model"}
        m.update(self.options.mapping)
        # Generic.convert reads prompt, system, image, id and category; its chosen and
        # rejected slots carry the responses and model columns (which keeps them out of meta)
        return {**m, "chosen": m["responses"], "rejected": m["model"]}

    def candidates(self, records: Callable[[], Iterator[Record]]) -> Iterator[RawCandidates]:
        for raw in self.pairs(records):
            yield RawCandidates(replace(raw, chosen=None, rejected=None), raw.chosen, raw.rejected)


def _response_text(value: Any) -> Any:
    """A response as text: a string, or the content of a message object."""
    if isinstance(value, dict):
        for key in ("content", "value", "text"):
            if key in value:
                return value[key]
    return value


def clean_responses(value: Any) -> tuple[list[str], list[dict[str, Any]], tuple[str, str] | None]:
    """(usable responses in order, the unusable ones with reasons, the row's refusal or None)."""
    if value is None:
        return [], [], ("no_responses", "responses is missing or null")
    if not isinstance(value, list | tuple):
        return [], [], ("malformed_row",
                        f"responses is a {type(value).__name__}, expected a list of responses")
    good: list[str] = []
    bad: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        text = _response_text(item)
        problem = check_response(f"responses[{i}]", text)
        if problem is None:
            good.append(text)
        else:
            bad.append({"index": i, "reason": problem[0], "raw": jsonable(item)})
    if not value:
        return [], [], ("no_responses", "responses is an empty list")
    if not good:
        return good, bad, ("no_responses", f"none of the {len(value)} responses is usable text")
    return good, bad, None


def candidates_row(
    cand: RawCandidates, source: str, opts: IngestOptions
) -> tuple[dict[str, Any], tuple[str, str] | None]:
    """The candidates row for `cand` and its refusal (reason, detail), if any."""
    # validate prompt and images with ingest's own code: two distinct placeholder
    # responses pass its response checks, so any problem it finds is the prompt's,
    # an image's or the adapter's
    pair_row, problem = canonical_row(replace(cand.base, chosen="\0a", rejected="\0b"), source,
                                      opts)
    responses, invalid, response_problem = clean_responses(cand.responses)
    problem = problem or response_problem
    meta = json.loads(pair_row["meta"]) if pair_row["meta"] else {}
    if invalid:
        meta["invalid_responses"] = invalid
    model = cand.model if cand.model is None or isinstance(cand.model, str) else str(cand.model)
    if any(lone_surrogate(t) for t in (*responses, model or "")):
        responses = [safe_text(t) for t in responses]
        model = safe_text(model) if model else model
        problem = problem or ("invalid_unicode", "a response or the model name holds a lone "
                              "surrogate, which is not Unicode text (kept escaped)")
    row = candidates_record(source, pair_row["source_id"], pair_row["prompt"], responses,
                            pair_row["images"], model, pair_row["category"], meta)
    return row, problem


def candidates_record(
    source: str,
    source_id: str,
    prompt: list[dict[str, Any]],
    responses: list[str],
    images: list[dict[str, Any]],
    model: str | None,
    category: str | None,
    meta: dict[str, Any],
) -> dict[str, Any]:
    """One candidates row (`S.CANDIDATES_SCHEMA`) from validated parts; `curate ingest
    candidates` and `curate generate` both write their rows through it."""
    hashes = [im["sha256"] or (hashlib.sha256(im["bytes"]).hexdigest() if im["bytes"] else "")
              for im in images]
    # the pair id's content hash, over the responses (as JSON) and the model name
    prompt_id = S.compute_pair_id(source, source_id, prompt,
                                  json.dumps(responses, ensure_ascii=False), model, hashes)
    return {
        "prompt_id": prompt_id,
        "source": source,
        "source_id": source_id,
        "prompt": prompt,
        "responses": responses,
        "images": images,
        "model": model,
        "category": category,
        "meta": json.dumps(meta, ensure_ascii=False, sort_keys=True) if meta else None,
    }


def _refused(cand: RawCandidates, source: str, exc: Exception
             ) -> tuple[dict[str, Any], tuple[str, str]]:
    """The row for a candidates row whose checks raised (`curate.stages.ingest.refused_row`)."""
    pair_row, problem = refused_row(cand.base, source, exc)
    return {"prompt_id": pair_row["pair_id"], "source": source,
            "source_id": pair_row["source_id"], "prompt": None, "responses": [], "images": [],
            "model": None, "category": None, "meta": pair_row["meta"]}, problem


def build_candidates_chunk(args: tuple[list[RawCandidates], str, IngestOptions]) -> Chunk:
    """Validate a chunk of rows into kept and rejected tables (pure; runs in any worker)."""
    rows, source, opts = args
    kept: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    reasons: list[str] = []
    details: list[str | None] = []
    for cand in rows:
        try:
            row, problem = candidates_row(cand, source, opts)
        except Exception as exc:  # noqa: BLE001 - one row's failure is that row's rejection
            row, problem = _refused(cand, source, exc)
        if problem is None:
            kept.append(row)
        else:
            rejected.append(row)
            reasons.append(problem[0])
            details.append(problem[1])
    return Chunk(
        kept=pa.Table.from_pylist(kept, schema=S.CANDIDATES_SCHEMA),
        kept_consumed=len(kept),
        rejected=pa.Table.from_pylist(rejected, schema=S.CANDIDATES_SCHEMA),
        reasons=reasons, details=details, rejected_consumed=len(rejected), rows_in=len(rows),
    )


def ingest_candidates(
    inputs: list[str],
    out: str | os.PathLike[str],
    opts: IngestOptions,
    adapter_options: AdapterOptions,
    *,
    config: str | None,
    split: str,
    engine: Engine,
    force: bool,
    chunk_size: int,
) -> Manifest:
    """`curate.stages.ingest.ingest` for `kind` "candidates" (its options checked there):
    the same folder contract (kept/, rejected/, manifest; conservation counts rows, one
    per prompt), with the candidates schema; returns the manifest."""
    from curate.pipeline.runner import StageRun
    from curate.progress import bar
    from curate.sources.readers import iter_records
    from curate.stages.ingest_rows import input_fingerprints, split_duplicate_ids

    root = opts.image_root
    adapter = Candidates(adapter_options)
    cfg = {"kind": KIND, "source": adapter.source, "mapping": adapter_options.mapping,
           "config": config, "split": split, "image_root": str(root) if root else None,
           "max_pixels": opts.max_pixels, "max_image_bytes": opts.max_image_bytes}
    run = StageRun("ingest", out, cfg, input_fingerprints(inputs, config, split), force=force,
                   base_schema=S.CANDIDATES_SCHEMA, engine=engine.describe())
    with run:
        if run.skipped:
            return run.manifest
        run.open()
        seen: set[int] = set()
        per_prompt: Counter[int] = Counter()
        invalid = 0
        t0 = time.perf_counter()
        records = lambda: iter_records(inputs, config=config, split=split)  # noqa: E731
        work: Iterator[tuple[Any, ...]] = (
            (chunk, adapter.source, opts)
            for chunk in chunked(adapter.candidates(records), chunk_size))
        work, threads = peek_threads(work, opts, lambda chunk: [c.base for c in chunk])
        with bar(f"ingest {KIND}", None) as b:
            for res in engine.map(build_candidates_chunk, work, releases_gil=threads):
                run.add_in(res.rows_in)
                kept, mask = split_duplicate_ids(res.kept, seen, "prompt_id")
                if mask is not None:
                    dups = res.kept.filter(mask)
                    run.reject(dups, ["duplicate_prompt_id"] * dups.num_rows,
                               [f"same source, id and content as {p}"
                                for p in dups["prompt_id"].to_pylist()])
                run.keep(kept)
                run.reject(res.rejected, res.reasons, res.details)
                per_prompt.update(pc.list_value_length(kept["responses"]).to_pylist())
                invalid += sum(len(json.loads(m).get("invalid_responses", []))
                               for m in kept["meta"].to_pylist() if m)
                b.advance(res.rows_in)
        run.steps["ingest"] = time.perf_counter() - t0
        run.extra["candidates"] = {
            "responses": sum(k * v for k, v in per_prompt.items()),
            "responses_per_prompt": {str(k): v for k, v in sorted(per_prompt.items())},
            "invalid_responses_left_out": invalid,
        }
    return run.manifest
