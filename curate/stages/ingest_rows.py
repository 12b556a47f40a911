"""`curate ingest`'s row pipeline: raw pairs -> validated canonical rows, kept or rejected.

`build_chunk`, a pure function over a chunk of raw pairs, validates text, decodes every
image and builds the Arrow rows; the part tasks (`curate.stages.ingest_parts`) and the
driver's reading of hub inputs and pointwise pairs (`curate.stages.ingest`) both run it.
Repeated pair ids are settled in input order with `repeated_ids`; `input_fingerprints`
gives each input's identity for the stage's fingerprint.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from curate import dataset as D
from curate import images
from curate import schema as S
from curate.images import (
    DEFAULT_MAX_IMAGE_BYTES,
    PIL_DEFAULT_MAX_PIXELS,
    ImageRejected,
    check_image_size,
    image_record,
    inspect_image,
    read_image_file,
    resolve_image_path,
)
from curate.sources import eval_sets
from curate.sources.base import (
    RawPair,
    UnsafeValue,
    describe,
    jsonable,
    lone_surrogate,
    safe_text,
)
from curate.sources.hf_local import SavedDataset
from curate.sources.hub import HubSpec, resolve_revision
from curate.sources.readers import expand_inputs
from curate.sources.scores import score_problem
from curate.stages.ingest_checks import check_prompt, check_response, check_score

T = TypeVar("T")


@dataclass
class IngestOptions:
    image_root: Path | None = None
    max_pixels: int = PIL_DEFAULT_MAX_PIXELS
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    min_score_gap: float = 0.0  # curate.sources.scores.score_problem
    eval_set: bool = False  # keep every row a benchmark scores (curate.sources.eval_sets)

    @classmethod
    def checked(cls, image_root: str | os.PathLike[str] | None, max_pixels: int,
                max_image_bytes: int) -> IngestOptions:
        """The options, refused (ValueError: exit 2) before any input is read when a
        limit is not positive or --image-root is not a folder."""
        for flag, value in (("--max-pixels", max_pixels), ("--max-image-bytes", max_image_bytes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{flag} must be a positive whole number, not {value!r}")
        root = Path(image_root).resolve() if image_root else None
        if root is not None and not root.is_dir():
            raise ValueError(f"--image-root {image_root}: no such folder (relative image paths "
                             "resolve under it)")
        return cls(image_root=root, max_pixels=max_pixels, max_image_bytes=max_image_bytes)


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


def _load_image(ref: Any, opts: IngestOptions) -> bytes:
    if ref.data is not None:
        check_image_size(ref.data, opts.max_image_bytes)
        return ref.data
    return read_image_file(resolve_image_path(ref.path, opts.image_root), opts.max_image_bytes)


def _unchecked_image(ref: Any, meta: dict[str, Any]) -> dict[str, Any]:
    """A rejected row's image, kept as it came (bytes or, in `meta`, its path)."""
    if ref.path:
        meta.setdefault("image_paths", []).append(ref.path)
    return {"bytes": ref.data, "sha256": None, "pixel_hash": None,
            "width": None, "height": None, "format": None}


def canonical_row(
    pair: RawPair, source: str, opts: IngestOptions
) -> tuple[dict[str, Any], tuple | None]:
    """The canonical row for `pair` and its rejection (reason, detail), if any."""
    problem = pair.reject
    meta = dict(pair.meta)
    prompt, prompt_problem = check_prompt(pair.prompt)
    if prompt_problem is not None and prompt_problem[0] == "prompt_not_string":
        meta["raw_prompt"] = pair.prompt
    problem = problem or prompt_problem
    chosen = pair.chosen if isinstance(pair.chosen, str) else None
    rejected = pair.rejected if isinstance(pair.rejected, str) else None
    for name, value in (("chosen", pair.chosen), ("rejected", pair.rejected)):
        if value is not None and not isinstance(value, str):
            meta[f"raw_{name}"] = value
        problem = problem or check_response(name, value)
    if problem is None and chosen == rejected:
        problem = ("identical_responses", "chosen and rejected are the same text")
    scores = {}
    for name, value in (("chosen_score", pair.chosen_score),
                        ("rejected_score", pair.rejected_score)):
        number = isinstance(value, int | float) and not isinstance(value, bool)
        scores[name] = value if number else None  # NaN and inf stay, in a rejected row
        if value is not None and not number:
            meta[f"raw_{name}"] = value
        problem = problem or check_score(name, value)
    row: dict[str, Any] = {
        "source": source,
        "source_id": pair.source_id,
        "prompt": prompt,
        "chosen": chosen,
        "rejected": rejected,
        "chosen_score": scores["chosen_score"],
        "rejected_score": scores["rejected_score"],
        "category": pair.category if isinstance(pair.category, str) or pair.category is None
        else json.dumps(jsonable(pair.category), ensure_ascii=False),
    }
    unsafe = escape_surrogates(row)
    if unsafe is not None:
        problem = problem or ("invalid_unicode", f"{unsafe} holds a lone surrogate, which is not "
                              "Unicode text (kept escaped, as \\udXXX)")
    problem = problem or score_problem(pair.chosen_score, pair.rejected_score,
                                       opts.min_score_gap)
    if opts.eval_set:
        problem = eval_sets.tolerated(problem, pair.reject, prompt, meta)
    images: list[dict[str, Any]] = []
    for i, ref in enumerate(pair.images):
        if problem is not None:  # a rejected row keeps what it has, unvalidated
            images.append(_unchecked_image(ref, meta))
            continue
        try:
            data = _load_image(ref, opts)
            images.append(image_record(data, inspect_image(data, opts.max_pixels)))
        except ImageRejected as exc:
            if opts.eval_set:  # kept without the image, the problem recorded
                eval_sets.note(meta, exc.reason, f"image {i}: {exc.detail}")
                continue
            problem = (exc.reason, f"image {i}: {exc.detail}")
            images.append(_unchecked_image(ref, meta))
    try:
        meta_value = jsonable(meta, strict=True) if meta else None
    except UnsafeValue as exc:
        problem = problem or (exc.reason, f"meta: {exc}")
        meta_value = jsonable(meta)
    image_hashes = [
        im["sha256"] or (hashlib.sha256(im["bytes"]).hexdigest() if im["bytes"] else "")
        for im in images
    ]
    row["pair_id"] = S.compute_pair_id(source, row["source_id"], row["prompt"], row["chosen"],
                                       row["rejected"], image_hashes)
    row["images"] = images
    row["meta"] = (json.dumps(meta_value, ensure_ascii=False, sort_keys=True)
                   if meta_value else None)
    return row, problem


def escape_surrogates(row: dict[str, Any]) -> str | None:
    """Escape lone surrogates in the row's text columns in place; the first column that
    held one (or None)."""
    found = None
    for key in ("source_id", "chosen", "rejected", "category"):
        value = row[key]
        if isinstance(value, str) and lone_surrogate(value) is not None:
            row[key] = safe_text(value)
            found = found or key
    for i, m in enumerate(row["prompt"] or []):
        for key in ("role", "content"):
            if lone_surrogate(m[key]) is not None:
                m[key] = safe_text(m[key])
                found = found or f"prompt message {i}"
    return found


def refused_row(pair: RawPair, source: str, exc: BaseException) -> tuple[dict[str, Any], tuple]:
    """The row for a pair whose checks raised: only what is surely storable, the rest
    summarised in `meta.raw` (`malformed_row`, naming the file and line)."""
    raw = {"prompt": pair.prompt, "chosen": pair.chosen, "rejected": pair.rejected,
           "meta": pair.meta, "where": pair.where}
    source_id = safe_text(pair.source_id) if isinstance(pair.source_id, str) else "?"
    row: dict[str, Any] = {
        "pair_id": S.compute_pair_id(source, source_id, None, None, None),
        "source": source, "source_id": source_id, "prompt": None, "chosen": None,
        "rejected": None, "images": [], "chosen_score": None, "rejected_score": None,
        "category": None, "meta": json.dumps({"raw": jsonable(raw)}, ensure_ascii=False)}
    return row, ("malformed_row", describe(exc))


def checked_rows(pairs: list[RawPair], source: str, opts: IngestOptions,
                 row_of: Callable[..., tuple[dict[str, Any], tuple | None]] = canonical_row,
                 ) -> Iterator[tuple[RawPair, dict[str, Any], tuple | None]]:
    """(pair, row, rejection) for each pair: a pair whose checks raise is refused, not fatal."""
    for pair in pairs:
        try:
            row, problem = row_of(pair, source, opts)
        except Exception as exc:  # noqa: BLE001 - the per-row boundary of the checks
            row, problem = refused_row(pair, source, exc)
        if problem is not None and problem[0] == "malformed_row" and pair.where \
                and not problem[1].startswith(pair.where):
            problem = (problem[0], f"{safe_text(pair.where)}: {problem[1]}")
        yield pair, row, problem


def build_chunk(args: tuple[list[RawPair], str, IngestOptions]) -> Chunk:
    """Validate a chunk of raw pairs into kept and rejected Arrow tables (pure; runs anywhere)."""
    pairs, source, opts = args
    kept_rows, rej_rows, reasons, details = [], [], [], []
    kept_consumed = rej_consumed = 0
    for pair, row, problem in checked_rows(pairs, source, opts):
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


def chunked(pairs: Iterable[T], size: int) -> Iterator[list[T]]:
    """`pairs` (raw pairs, or any rows) in lists of `size`, the last one shorter."""
    chunk: list[T] = []
    for p in pairs:
        chunk.append(p)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def peek_threads(work: Iterator[tuple[Any, ...]], opts: IngestOptions,
                 pairs_of: Callable[[Any], list[RawPair]] = list
                 ) -> tuple[Iterator[tuple[Any, ...]], bool]:
    """(`work` unchanged, whether to decode on threads): threads when the first chunk's
    images are photos (see `curate.images.THREADS_MIN_IMAGE_BYTES`)."""
    first = next(work, None)
    if first is None:
        return iter(()), False
    return itertools.chain([first], work), holds_photos(pairs_of(first[0]), opts)


def holds_photos(pairs: list[RawPair], opts: IngestOptions) -> bool:
    """Whether a chunk's images are photos, which the local engine decodes on threads
    (Pillow drops the GIL), not thumbnails, cheaper in processes (JSON parsing and the
    adapters are Python): `curate.images.THREADS_MIN_IMAGE_BYTES`, read when called."""
    return image_bytes_per_pair(pairs, opts) >= images.THREADS_MIN_IMAGE_BYTES


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
                except (ImageRejected, OSError):
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
            out.append({"path": safe_text(item), "fingerprint": D.fingerprint_file(Path(item))})
    return out
