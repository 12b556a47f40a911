"""What the report shows, gathered from a run's folders as plain data (rendered by `html`).

Everything is read column by column or by picked row groups: the counts and
histograms need only light columns, and image bytes are read only for the few
rows that are shown.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate import dataset as D
from curate import schema as S
from curate.images import ImageRejected, resolve_image_path
from curate.report.composition import Composition, collect_composition
from curate.report.model import ModelData, collect_model
from curate.report.pipeline import (
    PAIR_ID_RE,
    Run,
    Step,
    find_pair,
    lookup,
    referenced_ids,
    take,
)
from curate.report.svg import KEPT_COLOR, PALETTE, Series, reason_fill
from curate.report.thumbs import Thumbnails

CLUSTER_REASONS = ("exact_duplicate", "near_duplicate_image", "label_conflict", "similar_prompt")
LIGHT = ["pair_id", "reject_reason", "reject_detail"]
DISTANCE_RE = re.compile(r"distance=(\d+)")
MAX_FILE_BYTES = 64 * 1024 * 1024


def is_cluster_reason(reason: str) -> bool:
    """Reasons whose rows name a surviving copy: shown as duplicate clusters."""
    return reason in CLUSTER_REASONS or "duplicate" in reason


@dataclass
class FunnelStage:
    stage: str
    folders: list[str]
    rows_in: int
    kept: int
    by_reason: dict[str, int]

    @property
    def rejected(self) -> int:
        return sum(self.by_reason.values())


@dataclass
class Card:
    """One pair as the report shows it."""

    pair_id: str
    source: str
    prompt: list[dict[str, str]]
    chosen: str | None
    rejected: str | None
    images: list[dict[str, Any]]  # {"uri": data-URI or None, "size": "640x480 JPEG"}
    reason: str | None = None
    detail: str | None = None
    stage: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    distance: int | None = None  # image hash bits to the cluster's survivor
    note: str = ""  # what the reject detail says besides the survivor's id


@dataclass
class Cluster:
    stage: str
    reason: str
    survivor_id: str
    survivor: Card | None
    members: list[Card]


@dataclass
class Histogram:
    key: str
    title: str
    xlabel: str
    series: list[Series]
    note: str
    log_x: bool = False


@dataclass
class ReasonExamples:
    stage: str
    folder: str
    reason: str
    count: int
    cards: list[Card]


@dataclass
class ReportData:
    run: Run
    funnel: list[FunnelStage]
    reason_colors: dict[str, str]
    per_source: dict[str, dict[str, int]]  # source -> {"kept": n, "stage: reason": n}
    clusters: list[Cluster]
    cluster_counts: dict[tuple[str, str], int]  # (stage, reason) -> clusters found
    histograms: list[Histogram]
    examples: list[ReasonExamples]
    composition: Composition | None = None
    model: ModelData | None = None


def collect(run: Run, *, examples: int = 3, clusters: int = 12, members: int = 6,
            paths: Iterable[str | os.PathLike[str]] = (), evals: Iterable[Path] = (),
            trainings: Iterable[Path] = ()) -> ReportData:
    """Gather every section's data; `examples` rows per reason, `clusters` per reason.

    Model files (eval reports, training folders) are looked for in `paths` and beside
    the run's folders; `evals` and `trainings` name more of them.
    """
    thumbs = Thumbnails()
    funnel = _funnel(run)
    reasons = sorted({r for f in funnel for r in f.by_reason})
    colors = {r: reason_fill(i) for i, r in enumerate(reasons)}
    found, counts = _clusters(run, thumbs, clusters, members)
    composition = collect_composition(run)
    return ReportData(
        run=run,
        funnel=funnel,
        reason_colors=colors,
        per_source=_per_source(run),
        clusters=found,
        cluster_counts=counts,
        histograms=_histograms(run, composition),
        examples=_examples(run, thumbs, examples),
        composition=composition,
        model=collect_model(run, paths, evals=evals, trainings=trainings),
    )


# -- funnel ----------------------------------------------------------------------------------
def _funnel(run: Run) -> list[FunnelStage]:
    out = []
    for stage, steps in run.stages():
        by_reason: Counter[str] = Counter()
        for s in steps:
            by_reason.update({str(k): int(v) for k, v in
                              (s.manifest.get("rejected_by_reason") or {}).items()})
        out.append(FunnelStage(
            stage=stage,
            folders=[s.name for s in steps],
            rows_in=sum(s.manifest.rows_in or 0 for s in steps),
            kept=sum(s.count(D.KEPT) for s in steps),
            by_reason=dict(sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0]))),
        ))
    return out


def _per_source(run: Run) -> dict[str, dict[str, int]]:
    table: dict[str, Counter[str]] = {}
    for s in run.finals:
        if "source" in s.columns(D.KEPT):
            for src, n in Counter(s.dataset.read(D.KEPT, columns=["source"])["source"]
                                  .to_pylist()).items():
                table.setdefault(str(src), Counter())["kept"] += n
    for s in run.lineage:
        if not {"source", "reject_reason"} <= set(s.columns(D.REJECTED)):
            continue
        rej = s.dataset.read(D.REJECTED, columns=["source", "reject_reason"])
        pairs = zip(rej["source"].to_pylist(), rej["reject_reason"].to_pylist(), strict=True)
        for (src, reason), n in Counter(pairs).items():
            table.setdefault(str(src), Counter())[f"{s.stage}: {reason}"] += n
    order = sorted(table, key=lambda k: (-sum(table[k].values()), k))
    return {k: dict(table[k]) for k in order}


# -- cards -------------------------------------------------------------------------------------
def _numeric_extras(row: dict[str, Any]) -> dict[str, Any]:
    skip = set(S.PAIR_COLUMNS) | set(S.REJECT_COLUMNS)
    out: dict[str, Any] = {}
    for k in ("chosen_score", "rejected_score", "category"):
        if row.get(k) is not None:
            out[k] = row[k]
    for k, v in row.items():
        if k not in skip and isinstance(v, int | float | str) and not isinstance(v, bool):
            out[k] = v
    return out


def _image_root(step: Step | None) -> Path | None:
    root = step.manifest.config.get("image_root") if step is not None else None
    return Path(root) if isinstance(root, str) and root else None


def _unloaded_images(row: dict[str, Any], root: Path | None) -> list[bytes | None]:
    """Bytes of a rejected row's images that were never loaded (a row rejected before its
    images were read keeps their paths in `meta.image_paths`), read safely under `root`."""
    try:
        paths = json.loads(row.get("meta") or "{}").get("image_paths") or []
    except (ValueError, AttributeError):
        return []
    out: list[bytes | None] = []
    for p in paths:
        try:
            f = resolve_image_path(str(p), root)
            out.append(f.read_bytes() if f.stat().st_size <= MAX_FILE_BYTES else None)
        except (ImageRejected, OSError):
            out.append(None)
    return out


def card(row: dict[str, Any], thumbs: Thumbnails, step: Step | None = None) -> Card:
    """The report's view of one row; `step` (the row's folder) lets it find unloaded images."""
    records = list(row.get("images") or [])
    if any(im.get("bytes") is None for im in records):
        loaded = iter(_unloaded_images(row, _image_root(step)))
        records = [im if im.get("bytes") is not None else {**im, "bytes": next(loaded, None),
                                                           "from_path": True}
                   for im in records]
    images = []
    for im in records:
        if im.get("width"):
            size = f"{im.get('width')}x{im.get('height')} {im.get('format') or ''}".strip()
        elif im.get("bytes") is None:
            size = "no image bytes"
        else:
            size = "read from its path, not validated" if im.get("from_path") else "not validated"
        uri = thumbs.uri(im.get("bytes"))
        # no bytes: the image was never read (a path refused or missing), not a bad image
        missing = "" if uri else ("image never read" if im.get("bytes") is None
                                  else "undecodable")
        images.append({"uri": uri, "missing": missing,
                       "size": size if uri or im.get("bytes") is None else "undecodable"})
    return Card(
        pair_id=str(row.get("pair_id")),
        source=str(row.get("source")),
        prompt=[{"role": str(m.get("role")), "content": str(m.get("content") or "")}
                for m in row.get("prompt") or []],
        chosen=row.get("chosen"),
        rejected=row.get("rejected"),
        images=images,
        reason=row.get("reject_reason"),
        detail=row.get("reject_detail"),
        stage=row.get("reject_stage"),
        extras=_numeric_extras(row),
    )


# -- duplicate clusters ------------------------------------------------------------------------
def _hash_columns(row: dict[str, Any]) -> list[str]:
    return sorted(k for k, v in row.items() if k.startswith("image_") and isinstance(v, list)
                  and all(isinstance(x, int) for x in v))


def hamming(a: dict[str, Any], b: dict[str, Any]) -> int | None:
    """The largest bit distance between the two rows' images, from a stored hash column."""
    for col in _hash_columns(a):
        x, y = a.get(col) or [], b.get(col) or []
        if x and len(x) == len(y) and None not in x and None not in y:
            return max(int(p ^ q).bit_count() for p, q in zip(x, y, strict=True))
    return None


def detail_note(detail: str | None) -> str:
    """A reject detail without the pair ids it names: 'distance=2', 'prompt cosine 0.97'."""
    text = PAIR_ID_RE.sub("", detail or "").strip()
    return text[1:-1].strip() if text.startswith("(") and text.endswith(")") else text


def _member_distance(row: dict[str, Any], survivor: dict[str, Any] | None) -> int | None:
    if not row.get("images"):
        return None
    d = hamming(row, survivor) if survivor is not None else None
    if d is None:
        m = DISTANCE_RE.search(row.get("reject_detail") or "")
        d = int(m.group(1)) if m else (0 if row.get("reject_reason") == "exact_duplicate" else None)
    return d


def _clusters(run: Run, thumbs: Thumbnails, limit: int,
              members: int) -> tuple[list[Cluster], dict[tuple[str, str], int]]:
    out: list[Cluster] = []
    counts: dict[tuple[str, str], int] = {}
    for step in run.lineage:
        reasons = [r for r in (step.manifest.get("rejected_by_reason") or {})
                   if is_cluster_reason(r)]
        if not reasons or not set(LIGHT) <= set(step.columns(D.REJECTED)):
            continue
        light = step.dataset.read(D.REJECTED, columns=LIGHT).to_pylist()
        groups: dict[tuple[str, str], list[str]] = {}  # (reason, survivor) -> members
        for r in light:
            refs = referenced_ids(r["reject_detail"])
            if r["reject_reason"] in reasons and refs:
                groups.setdefault((r["reject_reason"], refs[0]), []).append(r["pair_id"])
        chosen: list[tuple[str, str, list[str]]] = []
        for reason in reasons:
            keys = [k for k in groups if k[0] == reason]
            counts[(step.stage, reason)] = len(keys)
            chosen += [(reason, sid, groups[(reason, sid)][:members]) for _, sid in keys[:limit]]
        wanted = {pid for _, _, ids in chosen for pid in ids}
        rows = {r["pair_id"]: r for r in lookup(step, D.REJECTED, wanted)}
        survivors = {sid for _, sid, _ in chosen}  # one pass over kept/ for all of them
        found = {r["pair_id"]: r for r in lookup(step, D.KEPT, survivors)}
        found.update({r["pair_id"]: r for r in lookup(step, D.REJECTED, survivors - set(found))})
        for reason, sid, ids in chosen:
            survivor = found.get(sid) or find_pair(run, sid)
            cards = []
            for pid in ids:
                c = card(rows[pid], thumbs, step)
                c.distance = _member_distance(rows[pid], survivor)
                c.note = detail_note(rows[pid].get("reject_detail"))
                cards.append(c)
            out.append(Cluster(step.stage, reason, sid,
                               card(survivor, thumbs) if survivor else None, cards))
    return out, counts


# -- histograms --------------------------------------------------------------------------------
def _floats(arr: pa.ChunkedArray | pa.Array) -> np.ndarray:
    values = arr.cast(pa.float64()).to_numpy(zero_copy_only=False)
    return values[~np.isnan(values)]


def _read(steps: list[Step], part: str, column: str) -> pa.ChunkedArray:
    parts = [s.dataset.read(part, columns=[column])[column] for s in steps
             if column in s.columns(part)]
    chunks = [c for p in parts for c in p.chunks]
    return pa.chunked_array(chunks) if chunks else pa.chunked_array([], pa.null())


def _numeric(t: pa.DataType) -> bool:
    return (pa.types.is_integer(t) or pa.types.is_floating(t)) and not pa.types.is_boolean(t)


def _histograms(run: Run, composition: Composition | None = None) -> list[Histogram]:
    finals = run.finals
    where = ", ".join(s.name for s in finals)
    out: list[Histogram] = []
    chosen_color, rejected_color = PALETTE[0], PALETTE[1]

    def pair_hist(key: str, title: str, xlabel: str, steps: list[Step], a: str, b: str,
                  note: str) -> None:
        xs = _floats(_read(steps, D.KEPT, a))
        ys = _floats(_read(steps, D.KEPT, b))
        if xs.size or ys.size:
            out.append(Histogram(key, title, xlabel, [Series("chosen", xs, chosen_color),
                                                      Series("rejected", ys, rejected_color)],
                                 note))

    # response lengths and image sizes, over the final kept rows
    lengths = {}
    if composition is not None and composition.folders == [s.name for s in finals]:
        lengths = {"chosen": composition.chosen_len[np.isfinite(composition.chosen_len)],
                   "rejected": composition.rejected_len[np.isfinite(composition.rejected_len)]}
    for col in ("chosen", "rejected"):
        if col in lengths:
            continue
        arr = _read(finals, D.KEPT, col)
        lengths[col] = _floats(pc.utf8_length(arr)) if len(arr) and pa.types.is_string(
            arr.type) else np.array([])
    if lengths["chosen"].size or lengths["rejected"].size:
        out.append(Histogram("response-length", "Response length", "characters",
                             [Series("chosen", lengths["chosen"], chosen_color),
                              Series("rejected", lengths["rejected"], rejected_color)],
                             f"kept rows of {where}", log_x=True))
    sides = _image_sides(finals)
    if sides.size:
        out.append(Histogram("image-size", "Image size", "longest side (pixels)",
                             [Series("images", sides, PALETTE[3])],
                             f"images of the kept rows of {where}"))
    pair_hist("source-scores", "Source judge scores", "score", finals, "chosen_score",
              "rejected_score", f"the sources' own chosen_score / rejected_score, {where}")

    out += _manifest_histograms(run)

    # columns a stage added: at that stage, kept against rejected (or chosen against rejected)
    seen: set[str] = set()
    for step in run.lineage:
        try:
            schema = step.dataset.schema(D.KEPT)
        except D.DatasetError:
            continue
        parent_cols = {c for p in step.parents for c in run.steps[p].columns(D.KEPT)}
        added = [f.name for f in schema if _numeric(f.type) and f.name not in S.PAIR_COLUMNS
                 and f.name not in parent_cols and f.name not in seen]
        seen.update(added)
        for col in added:
            stem = col.removeprefix("chosen_").removeprefix("rejected_")
            if col.startswith("chosen_") and f"rejected_{stem}" in added:
                pair_hist(col, stem.replace("_", " ").capitalize(), stem, [step],
                          col, f"rejected_{stem}", f"kept rows of {step.name} ({step.stage})")
                continue
            if col.startswith("rejected_") and f"chosen_{stem}" in added:
                continue
            kept = _floats(_read([step], D.KEPT, col))
            rej = _floats(_read([step], D.REJECTED, col))
            if kept.size or rej.size:
                out.append(Histogram(col, col.replace("_", " ").capitalize(), col,
                                     [Series("kept", kept, KEPT_COLOR),
                                      Series("rejected", rej, PALETTE[2])],
                                     f"rows of {step.name} ({step.stage}), where it is added"))
    return out


def _image_sides(steps: list[Step]) -> np.ndarray:
    """The longest side of every image of the kept rows, read from the nested width and
    height columns alone (never the image bytes)."""
    out = []
    for s in steps:
        if "images" not in s.columns(D.KEPT):
            continue
        for f in s.dataset.files(D.KEPT):
            t = s.dataset.parquet_file(f).read(columns=["images.list.element.width",
                                                        "images.list.element.height"])
            flat = pc.list_flatten(t["images"])
            if len(flat):
                w = _floats(pc.struct_field(flat, "width"))
                h = _floats(pc.struct_field(flat, "height"))
                if w.size == h.size:
                    out.append(np.maximum(w, h))
    return np.concatenate(out) if out else np.array([])


def _manifest_histograms(run: Run) -> list[Histogram]:
    """Histograms a stage stored in its manifest (`{"<name>_histogram": {"value": count}}`)."""
    out = []
    for step in run.lineage:
        for section, facts in step.manifest.items():
            if not isinstance(facts, dict):
                continue
            for name, counts in facts.items():
                if not (name.endswith("_histogram") and isinstance(counts, dict) and counts):
                    continue
                try:
                    values = np.repeat([float(k) for k in counts],
                                       [int(v) for v in counts.values()])
                except (TypeError, ValueError):
                    continue
                label = name.removesuffix("_histogram").replace("_", " ")
                out.append(Histogram(f"{step.name}-{name}", f"{step.stage}: {label}", label,
                                     [Series(label, values, PALETTE[6])],
                                     f"from the manifest of {step.name} ({section}.{name})"))
    return out


# -- examples ----------------------------------------------------------------------------------
def _examples(run: Run, thumbs: Thumbnails, n: int) -> list[ReasonExamples]:
    out: list[ReasonExamples] = []
    for step in run.lineage:
        by_reason = step.manifest.get("rejected_by_reason") or {}
        if not by_reason or "reject_reason" not in step.columns(D.REJECTED):
            continue
        taken: Counter[str] = Counter()

        def choose(keys: pa.Table, taken: Counter[str] = taken) -> list[int]:
            picks = []
            for i, reason in enumerate(keys["reject_reason"].to_pylist()):
                if taken[reason] < n:
                    taken[reason] += 1
                    picks.append(i)
            return picks

        rows = take(step, D.REJECTED, ["reject_reason"], choose)
        for reason, count in sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0])):
            cards = [card(r, thumbs, step) for r in rows if r.get("reject_reason") == reason]
            out.append(ReasonExamples(step.stage, step.name, reason, int(count), cards))
    return out
