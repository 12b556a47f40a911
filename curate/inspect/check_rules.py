"""The rules `curate check` knows: each a function over a run that returns what offends.

A rule sees a `Context` (the folders of the run; `finals` are the folders whose
kept rows are the product) and its parameters, and returns a `Finding`: how many
rows (or folders, or sources) offend, the first few of them, and one line saying
what was measured. Rules read only the columns they need.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow.parquet as pq

from curate import dataset as D
from curate import schema as S
from curate import text as T
from curate.report.pipeline import Run, Step, iter_rows, load_run
from curate.stages.decontam import DEFAULT_CONTAIN_MIN, DEFAULT_NGRAM


@dataclass
class Finding:
    """What a rule found: `count` offenders (0 = pass), the first ones, and a summary."""

    count: int
    offending: list[str]
    message: str


@dataclass
class Context:
    run: Run
    limit: int = 5  # offenders kept per rule

    @property
    def finals(self) -> list[Step]:
        return self.run.finals

    @property
    def folders(self) -> list[Step]:
        return self.run.steps

    def where(self) -> str:
        return ", ".join(s.name for s in self.finals)


@dataclass(frozen=True)
class Param:
    kind: type | tuple[type, ...]
    default: Any = None
    required: bool = False
    fraction: bool = False  # a number in [0, 1]
    help: str = ""


@dataclass(frozen=True)
class RuleSpec:
    name: str
    fn: Callable[..., Finding]
    params: dict[str, Param] = field(default_factory=dict)
    doc: str = ""


RULES: dict[str, RuleSpec] = {}


def rule(name: str, **params: Param) -> Callable[[Callable[..., Finding]], Callable[..., Finding]]:
    """Register a rule function under `name` with its parameters."""
    def wrap(fn: Callable[..., Finding]) -> Callable[..., Finding]:
        doc = " ".join((fn.__doc__ or "").strip().split("\n\n")[0].split())
        RULES[name] = RuleSpec(name, fn, params, doc)
        return fn
    return wrap


class _Collector:
    """Counts offenders and keeps the first `limit` of them."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self.first: list[str] = []

    def add(self, item: str) -> None:
        self.count += 1
        if len(self.first) < self.limit:
            self.first.append(item)

    def finding(self, ok: str, bad: str) -> Finding:
        return Finding(self.count, self.first, bad.format(n=self.count) if self.count else ok)


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _kept_rows(ctx: Context, columns: list[str]) -> Iterator[dict[str, Any]]:
    for s in ctx.finals:
        yield from iter_rows(s, D.KEPT, columns)


# -- structure -----------------------------------------------------------------------------------
@rule("schema_valid")
def schema_valid(ctx: Context) -> Finding:
    """Every parquet file has the canonical columns and types; ids are never null."""
    c = _Collector(ctx.limit)
    for s in ctx.folders:
        for part in (D.KEPT, D.REJECTED):
            files = s.dataset.files(part)
            if not files:
                c.add(f"{s.name}/{part}: no parquet file")
            for f in files:
                where = f"{s.name}/{part}/{f.name}"
                try:
                    schema = pq.read_schema(f)
                    S.validate(schema, rejected=part == D.REJECTED)
                except (S.SchemaError, OSError) as exc:
                    c.add(f"{where}: {exc}")
                    continue
                table = pq.read_table(f, columns=["pair_id", "source", "source_id"])
                for col in table.column_names:
                    if table[col].null_count:
                        c.add(f"{where}: {table[col].null_count} null {col}")
    return c.finding(f"{plural(len(ctx.folders), 'folder')}, every file canonical",
                     "{n} schema problem(s)")


@rule("conservation")
def conservation(ctx: Context) -> Finding:
    """Manifests agree with the files, rows in = kept + rejected, and every input row comes
    out exactly once (pair ids of the parents' kept rows = the child's kept + rejected)."""
    c = _Collector(ctx.limit)
    for s in ctx.folders:
        m = s.manifest
        kept, rejected = s.dataset.count(D.KEPT), s.dataset.count(D.REJECTED)
        consumed = m.inputs_consumed or {"kept": kept, "rejected": rejected}
        checks = [
            (m.rows_kept == kept, f"manifest rows_kept {m.rows_kept} != {kept}"),
            (m.rows_rejected == rejected,
             f"manifest rows_rejected {m.rows_rejected} != {rejected}"),
            (m.rows_in == consumed["kept"] + consumed["rejected"],
             f"rows_in {m.rows_in} != kept {consumed['kept']} + rejected "
             f"{consumed['rejected']}"),
            (sum(m.rejected_by_reason.values()) == rejected,
             "rejected_by_reason does not add up to rows_rejected"),
        ]
        for ok, msg in checks:
            if not ok:
                c.add(f"{s.name}: {msg}")
        for name, sha in m.files.items():
            p = s.path / name
            if not p.is_file() or D.sha256_file(p) != sha:
                c.add(f"{s.name}: {name} does not match its manifest checksum")
        if rejected and "reject_reason" in s.columns(D.REJECTED):
            reasons = s.dataset.read(D.REJECTED, columns=["reject_reason"])["reject_reason"]
            if reasons.null_count:
                c.add(f"{s.name}: {reasons.null_count} rejected rows without a reason")
        if s.parents:
            _conserved_ids(ctx.run, s, c)
    return c.finding(f"{plural(len(ctx.folders), 'folder')}: rows in = kept + rejected, "
                     "ids conserved", "{n} conservation failure(s)")


def _ids(step: Step, part: str) -> Counter[str]:
    if "pair_id" not in step.columns(part):
        return Counter()
    return Counter(step.dataset.read(part, columns=["pair_id"])["pair_id"].to_pylist())


def _conserved_ids(run: Run, s: Step, c: _Collector) -> None:
    parents = [run.steps[p] for p in s.parents]
    if len(parents) != len(s.manifest.inputs):
        return  # some inputs are not among the given folders: nothing to compare
    before: Counter[str] = Counter()
    for p in parents:
        before.update(_ids(p, D.KEPT))
    after = _ids(s, D.KEPT) + _ids(s, D.REJECTED)
    for pid in sorted((before - after).keys()):
        c.add(f"{pid}: in {', '.join(p.name for p in parents)} but lost by {s.name}")
    for pid in sorted((after - before).keys()):
        c.add(f"{pid}: in {s.name} but not in its inputs (invented or written twice)")


# -- rows ----------------------------------------------------------------------------------------
def _image_ids(images: list[dict[str, Any]] | None) -> list[str]:
    return [str(im.get("pixel_hash") or im.get("sha256") or
                hashlib.sha256(im.get("bytes") or b"").hexdigest()) for im in images or []]


@rule("no_exact_duplicates")
def no_exact_duplicates(ctx: Context) -> Finding:
    """No two kept rows share the normalised prompt, the decoded images and both responses
    (dedup's definition of an exact duplicate)."""
    c = _Collector(ctx.limit)
    first: dict[bytes, str] = {}
    for r in _kept_rows(ctx, ["pair_id", "prompt", "chosen", "rejected", "images"]):
        key = json.dumps([T.normalise_prompt(r["prompt"]), _image_ids(r["images"]), r["chosen"],
                          r["rejected"]], ensure_ascii=False).encode()
        digest = hashlib.blake2b(key, digest_size=16).digest()
        if digest in first:
            c.add(f"{r['pair_id']} (duplicates {first[digest]})")
        else:
            first[digest] = r["pair_id"]
    return c.finding(f"{plural(len(first), 'distinct kept row')} in {ctx.where()}",
                     "{n} kept row(s) duplicate another kept row")


@rule("no_empty_responses")
def no_empty_responses(ctx: Context) -> Finding:
    """Both responses of every kept row are non-empty after trimming whitespace."""
    c = _Collector(ctx.limit)
    n = 0
    for r in _kept_rows(ctx, ["pair_id", "chosen", "rejected"]):
        n += 1
        empty = [k for k in ("chosen", "rejected") if not (r[k] or "").strip()]
        if empty:
            c.add(f"{r['pair_id']} (empty {' and '.join(empty)})")
    return c.finding(f"{plural(n, 'kept row')}, every response non-empty",
                     "{n} kept row(s) with an empty response")


@rule("chosen_differs")
def chosen_differs(ctx: Context) -> Finding:
    """Chosen and rejected differ (after trimming whitespace) in every kept row."""
    c = _Collector(ctx.limit)
    n = 0
    for r in _kept_rows(ctx, ["pair_id", "chosen", "rejected"]):
        n += 1
        if (r["chosen"] or "").strip() == (r["rejected"] or "").strip():
            c.add(r["pair_id"])
    return c.finding(f"{plural(n, 'kept row')}, chosen != rejected in each",
                     "{n} kept row(s) with chosen == rejected")


@rule("images_decodable", max_pixels=Param(int, 89_478_485, help="larger images fail"))
def images_decodable(ctx: Context, max_pixels: int) -> Finding:
    """Every image of every kept row decodes fully (truncated files and bombs fail)."""
    from curate.images import ImageRejected, inspect_image

    c = _Collector(ctx.limit)
    n = 0
    for r in _kept_rows(ctx, ["pair_id", "images"]):
        for i, im in enumerate(r["images"] or []):
            n += 1
            try:
                inspect_image(im.get("bytes") or b"", max_pixels)
            except ImageRejected as exc:
                c.add(f"{r['pair_id']} (image {i}: {exc.reason})")
    return c.finding(f"{plural(n, 'image')} decoded", "{n} image(s) do not decode")


@rule("no_contamination",
      eval=Param(list, required=True, help="eval dataset folders (kept and rejected rows)"),
      min_chars=Param(int, 0, help="ignore eval prompts shorter than this (normalised)"),
      ngram=Param(int, DEFAULT_NGRAM,
                  help="decontam's --ngram: eval prompts of fewer words are short"),
      contain_min=Param(int, DEFAULT_CONTAIN_MIN,
                        help="decontam's --contain-min: a row containing a short eval prompt "
                        "of at least this many words asks it"))
def no_contamination(ctx: Context, eval: list[str], min_chars: int, ngram: int,
                     contain_min: int) -> Finding:
    """No kept row asks an eval set's question: what `curate decontam` rejects as an `exact`
    match, on the same definition (`curate.text.prompt_keys`).

    A row asks an eval row's question when they share a prompt key (the words of the whole
    prompt or of its last user message: case, punctuation, whitespace and `<image>`
    placeholders aside), or when its words hold a short eval prompt (`contain_min` to
    `ngram`-1 words) as a run. A short eval prompt is weak evidence against a row with
    images ("Describe this image."), so such a row also needs one of that eval row's images
    (same decoded pixels). Eval rows their own stages rejected are still eval content."""
    short: list[bool] = []  # per eval row
    eval_images: list[set[str]] = []
    by_key: dict[str, list[int]] = {}  # prompt key -> eval rows
    by_run: dict[int, dict[str, list[int]]] = {}  # word count -> short prompt -> eval rows
    for folder in eval:
        for s in load_run([folder]).steps:
            for part in (D.KEPT, D.REJECTED):
                for r in iter_rows(s, part, ["prompt", "images"]):
                    words = T.normalise_words(T.prompt_text(r["prompt"]))
                    if not words:
                        continue
                    e = len(short)
                    short.append(len(words) < ngram)
                    eval_images.append(set(_image_ids(r["images"])))
                    for key in T.prompt_keys(r["prompt"]):
                        if len(key) >= min_chars:
                            by_key.setdefault(key, []).append(e)
                    whole = " ".join(words)
                    if contain_min <= len(words) < ngram and len(whole) >= min_chars:
                        by_run.setdefault(len(words), {}).setdefault(whole, []).append(e)
    c = _Collector(ctx.limit)
    n = 0
    for r in _kept_rows(ctx, ["pair_id", "prompt", "images"]):
        n += 1
        matches = [(key, e) for key in T.prompt_keys(r["prompt"]) for e in by_key.get(key, [])]
        words = T.normalise_words(T.prompt_text(r["prompt"]))
        matches += [(run, e) for k, runs in by_run.items() for run in T.word_runs(words, k)
                    for e in runs.get(run, [])]
        images = set(_image_ids(r["images"]))
        hit = next((key for key, e in matches
                    if not images or not short[e] or images & eval_images[e]), None)
        if hit is not None:
            c.add(f"{r['pair_id']} ({hit[:60]!r})")
    return c.finding(f"{n} kept rows against {len(short)} eval prompts",
                     "{n} kept row(s) appear in an eval set")


# -- proportions -------------------------------------------------------------------------------
@rule("row_count", min=Param(int, None, help="at least this many kept rows"),
      max=Param(int, None, help="at most this many kept rows"))
def row_count(ctx: Context, min: int | None, max: int | None) -> Finding:
    """The number of kept rows is within [min, max]."""
    n = sum(s.dataset.count(D.KEPT) for s in ctx.finals)
    bounds = f"[{'-' if min is None else min}, {'-' if max is None else max}]"
    bad = (min is not None and n < min) or (max is not None and n > max)
    return Finding(int(bad), [f"{ctx.where()}: {plural(n, 'kept row')}"] if bad else [],
                   f"{plural(n, 'kept row')}, {'outside' if bad else 'within'} {bounds}")


@rule("max_source_share", max=Param((int, float), required=True, fraction=True,
                                    help="the largest share one source may have"))
def max_source_share(ctx: Context, max: float) -> Finding:
    """No source has more than `max` of the kept rows."""
    counts: Counter[str] = Counter()
    for s in ctx.finals:
        if "source" in s.columns(D.KEPT):
            counts.update(s.dataset.read(D.KEPT, columns=["source"])["source"].to_pylist())
    total = sum(counts.values()) or 1
    over = [(src, n / total) for src, n in counts.most_common() if n / total > max]
    top = counts.most_common(1)
    share = f"{top[0][0]} has {100 * top[0][1] / total:.1f}%" if top else "no rows"
    return Finding(len(over), [f"{src}: {100 * f:.1f}% of kept rows" for src, f in over],
                   f"largest source: {share} (max {100 * max:.1f}%)")


@rule("max_reject_fraction",
      max=Param((int, float), required=True, fraction=True,
                help="the largest fraction of a folder's rows in one reason may reject"),
      reasons=Param(list, None, help="only these reasons (default: every reason)"),
      stage=Param(str, None, help="only folders of this stage (default: every stage)"))
def max_reject_fraction(ctx: Context, max: float, reasons: list[str] | None,
                        stage: str | None) -> Finding:
    """No reason rejects more than `max` of the rows that entered its folder."""
    c = _Collector(ctx.limit)
    worst = (0.0, "")
    for s in ctx.folders:
        if stage is not None and s.stage != stage:
            continue
        rows_in = s.manifest.rows_in or 0
        for reason, n in s.manifest.rejected_by_reason.items():
            if reasons is not None and reason not in reasons:
                continue
            f = n / rows_in if rows_in else 0.0
            worst = (f, f"{s.name}: {reason}") if f > worst[0] else worst
            if f > max:
                c.add(f"{s.name}: {reason} rejected {n}/{rows_in} = {100 * f:.1f}%")
    return c.finding(f"largest: {worst[1] or '-'} {100 * worst[0]:.1f}% (max {100 * max:.1f}%)",
                     "{n} reason(s) reject more than " + f"{100 * max:.1f}%")


# -- the reward filter ------------------------------------------------------------------------
@rule("reward_precision",
      min_precision=Param((int, float), 0.5, fraction=True,
                          help="the lowest expected precision a reward folder's rejections "
                          "may have"))
def reward_precision(ctx: Context, min_precision: float) -> Finding:
    """No `curate reward` folder abstained (its surrogate could not tell the noise apart),
    and none rejected pairs with an expected precision (its 95% lower bound) below
    `min_precision` (the manifest's reward.quality). A folder that only flagged pairs
    (`--action flag`) removed nothing and passes."""
    c = _Collector(ctx.limit)
    seen = 0
    for s in ctx.folders:
        q = (s.manifest.get("reward") or {}).get("quality")
        if not q:  # not a `curate reward` folder, or no margin rule ran
            continue
        seen += 1
        if (s.manifest.get("reward") or {}).get("action") == "flag":
            continue  # flagging removes nothing: no precision to keep
        prec = q.get("expected_precision_lower", q.get("expected_precision"))
        if q.get("abstained"):
            c.add(f"{s.name}: abstained: {q.get('abstain_reason')}")
        elif q.get("rejected") and (prec is None or prec < min_precision):
            got = "unknown" if prec is None else f"{prec:.2f}"
            c.add(f"{s.name}: expected precision {got} < {min_precision:g}")
    return c.finding(f"{plural(seen, 'reward folder')} checked",
                     "{n} reward folder(s) abstained or imprecise")


def describe() -> list[tuple[str, str, str]]:
    """(rule, parameters, what it checks) for every rule, for help texts."""
    out = []
    for spec in RULES.values():
        params = ", ".join(f"{k}{'' if p.required else '=' + json.dumps(p.default)}"
                           for k, p in spec.params.items())
        out.append((spec.name, params, spec.doc))
    return out

