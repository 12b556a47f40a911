"""`curate ingest`: source records -> canonical pairs, validated, every row kept or rejected.

The adapter runs in the main process (it reads the files in order); `build_chunk`,
a pure function over a chunk of raw pairs, validates text, decodes every image and
builds the Arrow rows. The engine runs it in worker processes, in order.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from curate import dataset as D
from curate import schema as S
from curate.images import (
    PIL_DEFAULT_MAX_PIXELS,
    THREADS_MIN_IMAGE_BYTES,
    ImageRejected,
    image_record,
    inspect_image,
    resolve_image_path,
)
from curate.progress import bar
from curate.sources import AdapterOptions, eval_sets, make_adapter
from curate.sources.base import RawPair, jsonable
from curate.sources.hub import resolve_revision
from curate.sources.readers import HubSpec, SavedDataset, expand_inputs, iter_records
from curate.sources.scores import score_problem
from curate.stage import StageRun
from curate.stages.ingest_parts import ingest_in_workers, runs_in_workers


@dataclass
class IngestOptions:
    image_root: Path | None = None
    max_pixels: int = PIL_DEFAULT_MAX_PIXELS
    min_score_gap: float = 0.0  # curate.sources.scores.score_problem
    eval_set: bool = False  # keep every row a benchmark scores (curate.sources.eval_sets)


@dataclass
class Chunk:
    """What `build_chunk` returns for one chunk of raw pairs."""

    kept: pa.Table
    kept_consumed: int
    rejected: pa.Table
    reasons: list[str]
    details: list[str | None]
    rejected_consumed: int
    rows_in: int
    pair_ids_kept: list[str] = field(default_factory=list)


def _clean_prompt(prompt: Any) -> tuple[list[dict[str, str]] | None, tuple[str, str] | None]:
    if prompt is None or prompt == []:
        return None, ("no_prompt", "the row has no prompt")
    if not isinstance(prompt, list):
        return None, ("malformed_row", f"prompt is a {type(prompt).__name__}")
    msgs = []
    for m in prompt:
        content, role = m.get("content"), m.get("role")
        if not isinstance(content, str) or not isinstance(role, str):
            return None, ("malformed_row", "a prompt message has no string role/content")
        msgs.append({"role": role, "content": content})
    if not any(m["role"] == "user" and m["content"].strip() for m in msgs):
        return msgs, ("no_prompt", "the prompt has no non-empty user message")
    return msgs, None


def check_response(name: str, value: Any) -> tuple[str, str] | None:
    if value is None:
        return ("missing_response", f"{name} is missing or null")
    if not isinstance(value, str):
        return ("response_not_string", f"{name} is a {type(value).__name__}, not a string")
    if not value.strip():
        return ("empty_response", f"{name} is empty or whitespace only")
    return None


def _load_image(ref: Any, opts: IngestOptions) -> bytes:
    if ref.data is not None:
        return ref.data
    path = resolve_image_path(ref.path, opts.image_root)
    return path.read_bytes()


def canonical_row(
    pair: RawPair, source: str, opts: IngestOptions
) -> tuple[dict[str, Any], tuple | None]:
    """The canonical row for `pair` and its rejection (reason, detail), if any."""
    problem = pair.reject
    prompt, prompt_problem = _clean_prompt(pair.prompt)
    problem = problem or prompt_problem
    chosen = pair.chosen if isinstance(pair.chosen, str) else None
    rejected = pair.rejected if isinstance(pair.rejected, str) else None
    meta = dict(pair.meta)
    for name, value in (("chosen", pair.chosen), ("rejected", pair.rejected)):
        if value is not None and not isinstance(value, str):
            meta[f"raw_{name}"] = jsonable(value)
        problem = problem or check_response(name, value)
    if problem is None and chosen == rejected:
        problem = ("identical_responses", "chosen and rejected are the same text")
    problem = problem or score_problem(pair.chosen_score, pair.rejected_score,
                                       opts.min_score_gap)
    if opts.eval_set:
        problem = eval_sets.tolerated(problem, pair.reject, prompt, meta)
    images: list[dict[str, Any]] = []
    for i, ref in enumerate(pair.images):
        if problem is not None:  # a rejected row keeps what it has, unvalidated
            images.append({"bytes": ref.data, "sha256": None, "pixel_hash": None,
                           "width": None, "height": None, "format": None})
            if ref.path:
                meta.setdefault("image_paths", []).append(ref.path)
            continue
        try:
            data = _load_image(ref, opts)
            images.append(image_record(data, inspect_image(data, opts.max_pixels)))
        except ImageRejected as exc:
            if opts.eval_set:  # kept without the image, the problem recorded
                eval_sets.note(meta, exc.reason, f"image {i}: {exc.detail}")
                continue
            problem = (exc.reason, f"image {i}: {exc.detail}")
            images.append({"bytes": ref.data, "sha256": None, "pixel_hash": None,
                           "width": None, "height": None, "format": None})
            if ref.path:
                meta.setdefault("image_paths", []).append(ref.path)
    image_hashes = [
        im["sha256"] or (hashlib.sha256(im["bytes"]).hexdigest() if im["bytes"] else "")
        for im in images
    ]
    row = {
        "pair_id": S.compute_pair_id(source, pair.source_id, prompt, chosen, rejected,
                                     image_hashes),
        "source": source,
        "source_id": pair.source_id,
        "prompt": prompt,
        "chosen": chosen,
        "rejected": rejected,
        "images": images,
        "chosen_score": pair.chosen_score,
        "rejected_score": pair.rejected_score,
        "category": pair.category if isinstance(pair.category, str) or pair.category is None
        else str(pair.category),
        "meta": json.dumps(jsonable(meta), ensure_ascii=False, sort_keys=True) if meta else None,
    }
    return row, problem


def build_chunk(args: tuple[list[RawPair], str, IngestOptions]) -> Chunk:
    """Validate a chunk of raw pairs into kept and rejected Arrow tables (pure; runs anywhere)."""
    pairs, source, opts = args
    kept_rows, rej_rows, reasons, details = [], [], [], []
    kept_consumed = rej_consumed = 0
    for pair in pairs:
        row, problem = canonical_row(pair, source, opts)
        if problem is None:
            kept_rows.append(row)
            kept_consumed += pair.consumed
        else:
            rej_rows.append(row)
            reasons.append(problem[0])
            details.append(problem[1])
            rej_consumed += pair.consumed
    return Chunk(
        kept=pa.Table.from_pylist(kept_rows, schema=S.PAIR_SCHEMA),
        kept_consumed=kept_consumed,
        rejected=pa.Table.from_pylist(rej_rows, schema=S.PAIR_SCHEMA),
        reasons=reasons,
        details=details,
        rejected_consumed=rej_consumed,
        rows_in=kept_consumed + rej_consumed,
    )


def chunked(pairs: Iterable[RawPair], size: int) -> Iterator[list[RawPair]]:
    chunk: list[RawPair] = []
    for p in pairs:
        chunk.append(p)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def input_fingerprints(inputs: list[str], config: str | None, split: str,
                       revision: str | None = None, data_dir: str | None = None
                       ) -> list[dict[str, Any]]:
    """Each input's identity: a file's content, a hub dataset's resolved commit sha."""
    out = []
    for item in expand_inputs(inputs):
        if isinstance(item, HubSpec):
            spec = HubSpec(item.name, config, split, revision, data_dir)
            sha = resolve_revision(spec)
            out.append({"path": f"hf://{item.name}", "revision": sha,
                        "fingerprint": D.json_fingerprint([item.name, config, split, data_dir,
                                                           sha])})
        elif isinstance(item, SavedDataset):
            out.append({"path": item.path, "fingerprint": D.json_fingerprint(
                [resolve_revision(HubSpec(item.path)), split])})
        else:
            out.append({"path": item, "fingerprint": D.fingerprint_file(Path(item))})
    return out


def ingest(
    kind: str,
    inputs: list[str],
    out: str | Path,
    *,
    source: str | None = None,
    mapping: dict[str, str] | None = None,
    config: str | None = None,
    split: str = "train",
    image_root: str | Path | None = None,
    max_pixels: int = PIL_DEFAULT_MAX_PIXELS,
    engine: Any = None,
    force: bool = False,
    chunk_size: int = 64,
    revision: str | None = None,
    data_dir: str | None = None,
    min_score_gap: float = 0.0,
) -> dict[str, Any]:
    """Ingest `inputs` of format `kind` into the dataset folder `out`; returns the manifest."""
    from curate.engine import get_engine

    engine = engine or get_engine("local")
    root = Path(image_root).resolve() if image_root else None
    adapter = make_adapter(
        kind,
        AdapterOptions(source=source, mapping=mapping or {}, config=config,
                       has_image_root=root is not None),
    )
    opts = IngestOptions(image_root=root, max_pixels=max_pixels, min_score_gap=min_score_gap,
                         eval_set=getattr(adapter, "eval_set", False))
    cfg = {"kind": kind, "source": adapter.source, "mapping": mapping or {}, "config": config,
           "split": split, "image_root": str(root) if root else None, "max_pixels": max_pixels,
           "revision": revision, "data_dir": data_dir, "min_score_gap": min_score_gap}
    run = StageRun("ingest", out, cfg,
                   input_fingerprints(inputs, config, split, revision, data_dir),
                   force=force, engine=engine.describe())
    with run:
        if run.skipped:
            return run.manifest
        run.open()
        t0 = time.perf_counter()
        with bar(f"ingest {kind}", None) as b:
            if getattr(engine, "writes_in_workers", False) and runs_in_workers(adapter, inputs):
                ingest_in_workers(run, inputs, adapter, opts, engine, chunk_size, b)
            else:
                _ingest_on_driver(run, inputs, adapter, opts, engine, chunk_size, b,
                                  config, split, revision, data_dir)
        run.steps["ingest"] = time.perf_counter() - t0
        run.extra.update(adapter.extra_manifest())
    return run.manifest


def _ingest_on_driver(run: StageRun, inputs: list[str], adapter: Any, opts: IngestOptions,
                      engine: Any, chunk_size: int, progress: Any, config: str | None,
                      split: str, revision: str | None = None,
                      data_dir: str | None = None) -> None:
    """The adapter reads the input here; the engine validates chunks; rows written here."""
    seen: set[int] = set()
    records = lambda: iter_records(inputs, config=config, split=split,  # noqa: E731
                                   revision=revision, data_dir=data_dir)
    work = ((chunk, adapter.source, opts) for chunk in chunked(adapter.pairs(records),
                                                               chunk_size))
    work, threads = peek_threads(work, opts)
    for res in engine.map(build_chunk, work, releases_gil=threads):
        run.add_in(res.rows_in)
        kept, dup_mask = split_duplicate_ids(res.kept, seen)
        if dup_mask is not None:
            dups = res.kept.filter(dup_mask)
            n = dups.num_rows
            run.reject(dups, ["duplicate_pair_id"] * n,
                       [f"same source, id and content as {p}" for p in
                        dups["pair_id"].to_pylist()])
            res.kept_consumed -= n
        run.keep(kept, consumed=res.kept_consumed)
        run.reject(res.rejected, res.reasons, res.details, consumed=res.rejected_consumed)
        progress.advance(res.rows_in)


def peek_threads(work: Iterator[tuple[Any, ...]], opts: IngestOptions,
                 pairs_of: Callable[[Any], list[RawPair]] = list
                 ) -> tuple[Iterator[tuple[Any, ...]], bool]:
    """(`work` unchanged, whether to decode on threads): threads when the first chunk's
    images are photos (see `curate.images.THREADS_MIN_IMAGE_BYTES`)."""
    first = next(work, None)
    if first is None:
        return iter(()), False
    threads = image_bytes_per_pair(pairs_of(first[0]), opts) >= THREADS_MIN_IMAGE_BYTES
    return itertools.chain([first], work), threads


def image_bytes_per_pair(pairs: list[RawPair], opts: IngestOptions) -> float:
    """The mean encoded image size per pair of a chunk (files by their size on disk)."""
    total = 0
    for pair in pairs:
        for ref in pair.images:
            if ref.data is not None:
                total += len(ref.data)
            elif ref.path:
                try:
                    total += resolve_image_path(ref.path, opts.image_root).stat().st_size
                except ImageRejected:
                    pass
    return total / max(1, len(pairs))


def repeated_ids(ids: list[str], seen: set[int]) -> list[bool]:
    """For each hex id, whether it came before (in `seen` or earlier in `ids`); updates
    `seen`. Ids are kept as ints, not strings, so the set stays small at millions."""
    out = []
    for pid in ids:
        key = int(pid, 16)
        out.append(key in seen)
        seen.add(key)
    return out


def split_duplicate_ids(
    kept: pa.Table, seen: set[int], column: str = "pair_id"
) -> tuple[pa.Table, Any]:
    """(rows whose hex id `column` is new, mask of the repeats or None); updates `seen`.

    """
    mask = repeated_ids(kept[column].to_pylist(), seen)
    if not any(mask):
        return kept, None
    arr = pa.array(mask)
    return kept.filter(pc.invert(arr)), arr
