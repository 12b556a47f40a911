"""`curate explain`: where one pair went through a pipeline run, stage by stage.

For every folder that holds the pair: kept or rejected, the reason and detail,
and the values the stage attached. A detail that names another pair (the copy a
duplicate was removed in favour of, the eval item it matched) is resolved in
the given folders, so both prompts can be read side by side.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from curate import dataset as D
from curate import schema as S
from curate.report.pipeline import (
    Run,
    Step,
    load_run,
    lookup,
    referenced_ids,
    take,
    user_text,
)

MIN_PREFIX = 6
MAX_RELATED = 5
SHOWN = ["pair_id", "source", "source_id", "prompt", "chosen", "rejected", "images", "category"]


class PairNotFound(LookupError):
    """No row (or more than one, for a prefix) has the pair id asked for."""


@dataclass
class Related:
    """A pair a reject detail names, and where it is in the run."""

    pair_id: str
    found: bool
    relation: str = "named by this pair's detail"  # or "rejected in favour of this pair"
    folder: str | None = None
    outcome: str | None = None  # kept | rejected
    reason: str | None = None
    row: dict[str, Any] = field(default_factory=dict)


@dataclass
class Visit:
    """The pair in one folder."""

    folder: str
    stage: str
    path: str
    outcome: str  # kept | rejected | missing
    reason: str | None = None
    detail: str | None = None
    attached: dict[str, Any] = field(default_factory=dict)  # columns the stages added
    related: list[Related] = field(default_factory=list)


@dataclass
class Explanation:
    pair_id: str
    row: dict[str, Any]  # the pair's canonical columns, images summarised
    visits: list[Visit]

    @property
    def final(self) -> Visit:
        return self.visits[-1]

    def as_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def summarise_row(row: dict[str, Any]) -> dict[str, Any]:
    """The columns a reader needs, images as size and format instead of bytes."""
    out = {k: row.get(k) for k in SHOWN if k in row}
    out["images"] = [f"{im.get('width')}x{im.get('height')} {im.get('format')}"
                     for im in row.get("images") or []]
    return out


def _attached(row: dict[str, Any]) -> dict[str, Any]:
    skip = set(S.PAIR_COLUMNS) | set(S.REJECT_COLUMNS)
    out = {}
    for k, v in row.items():
        if k in skip:
            continue
        if isinstance(v, list) and len(v) > 8:
            v = f"[{len(v)} values]"
        elif k.startswith("image_") and isinstance(v, list):  # perceptual hashes, as hex
            v = [f"{x:016x}" if isinstance(x, int) else x for x in v]
        out[k] = v
    return out


def resolve_id(run: Run, pair_id: str) -> str:
    """The full pair id for `pair_id` or a unique prefix of it."""
    pid = pair_id.strip().lower()
    if len(pid) < MIN_PREFIX:
        raise PairNotFound(f"give at least {MIN_PREFIX} characters of the pair id")
    found: set[str] = set()
    for s in run.steps:
        for part in (D.KEPT, D.REJECTED):
            found.update(r["pair_id"] for r in lookup(s, part, [pid], prefix=True,
                                                      columns=["pair_id"]))
    if not found:
        raise PairNotFound(f"no pair {pair_id} in {', '.join(s.name for s in run.steps)}")
    if len(found) > 1:
        raise PairNotFound(f"{pair_id} is ambiguous: {', '.join(sorted(found)[:5])}")
    return found.pop()


def _locate(step: Step, pid: str) -> tuple[str, dict[str, Any]] | None:
    for part in (D.KEPT, D.REJECTED):
        rows = lookup(step, part, [pid])
        if rows:
            return part, rows[0]
    return None


def _rejected_for(step: Step, pid: str) -> list[Related]:
    """Rows of `step` rejected with a detail that names `pid` (copies removed in its favour)."""
    if "reject_detail" not in step.columns(D.REJECTED):
        return []

    def choose(keys: pa.Table) -> list[int]:
        return pc.indices_nonzero(pc.fill_null(
            pc.match_substring(keys["reject_detail"], pid), False)).to_pylist()

    rows = take(step, D.REJECTED, ["reject_detail"], choose)
    return [Related(r["pair_id"], True, "rejected in favour of this pair", step.name, D.REJECTED,
                    r.get("reject_reason"), summarise_row(r)) for r in rows[:MAX_RELATED]]


def _related(run: Run, pid: str, near: Step) -> Related:
    """Where pair `pid` is: the folder `near` first, then the latest folder holding it."""
    order = [near] + [s for s in reversed(run.steps) if s is not near]
    for s in order:
        hit = _locate(s, pid)
        if hit is not None:
            part, row = hit
            return Related(pid, True, folder=s.name, outcome=part,
                           reason=row.get("reject_reason"), row=summarise_row(row))
    return Related(pid, False)


def explain(pair_id: str, paths: Iterable[str | os.PathLike[str]]) -> Explanation:
    """Trace `pair_id` (or a unique prefix of it) through the folders named by `paths`."""
    run = load_run(paths)
    pid = resolve_id(run, pair_id)
    visits: list[Visit] = []
    row: dict[str, Any] = {}
    kept_in: set[int] = set()
    for i, s in enumerate(run.steps):
        hit = _locate(s, pid)
        if hit is None:
            if any(p in kept_in for p in s.parents) and s.manifest.inputs:
                visits.append(Visit(s.name, s.stage, str(s.path), "missing"))
            continue
        part, r = hit
        row = row or summarise_row(r)
        v = Visit(s.name, s.stage, str(s.path), part, r.get("reject_reason"),
                  r.get("reject_detail"), _attached(r))
        if part == D.KEPT:
            kept_in.add(i)
            v.related = _rejected_for(s, pid)
        else:
            v.related = [_related(run, ref, s) for ref in referenced_ids(v.detail) if ref != pid]
        visits.append(v)
    return Explanation(pid, row, visits)


def _short(text: Any, n: int = 160) -> str:
    """One line of at most `n` characters, escaped for rich markup."""
    from rich.markup import escape

    if text is None:
        return "(missing)"
    text = " ".join(str(text).split())
    return escape(text if len(text) <= n else text[: n - 1] + "…")


def print_explanation(e: Explanation) -> None:
    """The explanation as rich tables on stdout."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    r = e.row
    console.print(f"[bold]pair {e.pair_id}[/bold]  source {_short(r.get('source'))} "
                  f"(source_id {_short(r.get('source_id'))}), "
                  f"{len(r.get('images') or [])} image(s)", highlight=False)
    for m in r.get("prompt") or []:
        console.print(f"  [bold]{_short(m.get('role'))}:[/bold] {_short(m.get('content'))}",
                      highlight=False)
    console.print(f"  [green]chosen:[/green] {_short(r.get('chosen'))}", highlight=False)
    console.print(f"  [red]rejected:[/red] {_short(r.get('rejected'))}", highlight=False)
    t = Table(title="through the pipeline")
    for col in ("folder", "stage", "outcome", "reason", "detail / values attached"):
        t.add_column(col, overflow="fold")
    for v in e.visits:
        outcome = {"kept": "[green]kept[/green]", "rejected": "[bold red]rejected[/bold red]",
                   "missing": "[yellow]missing[/yellow]"}[v.outcome]
        values = ", ".join(f"{k}={x}" for k, x in v.attached.items())
        t.add_row(_short(v.folder), _short(v.stage), outcome, _short(v.reason or ""),
                  "\n".join(_short(x, 400) for x in (v.detail, values) if x))
    console.print(t)
    for v in e.visits:
        for rel in v.related:
            _print_related(console, e, v, rel)
    f = e.final
    verdict = (f"kept in {f.folder}" if f.outcome == "kept" else
               f"rejected at {f.stage} ({f.reason})" if f.outcome == "rejected" else
               f"missing from {f.folder}")
    console.print(f"final: {_short(verdict)}", highlight=False)


def _print_related(console: Any, e: Explanation, v: Visit, rel: Related) -> None:
    from rich.table import Table

    if not rel.found:
        console.print(f"{_short(v.stage)}: {_short(v.reason)} names {rel.pair_id}, which is not "
                      "in the given folders (pass the folder that holds it, e.g. the eval set)",
                      highlight=False)
        return
    where = _short(f"{rel.outcome} in {rel.folder}" + (f" ({rel.reason})" if rel.reason else ""))
    title = (f"{v.stage}: {v.reason}: this pair and {rel.pair_id}" if v.reason else
             f"{v.stage}: {rel.pair_id} was {rel.reason} in favour of this pair")
    t = Table(title=_short(title))
    t.add_column("")
    t.add_column(f"this pair {e.pair_id[:12]}", overflow="fold")
    t.add_column(f"{rel.pair_id[:12]} ({where})", overflow="fold")
    a, b = e.row, rel.row
    t.add_row("source", _short(a.get("source")), _short(b.get("source")))
    t.add_row("prompt", _short(user_text(a.get("prompt")), 300),
              _short(user_text(b.get("prompt")), 300))
    t.add_row("images", _short(", ".join(a.get("images") or []) or "-"),
              _short(", ".join(b.get("images") or []) or "-"))
    t.add_row("chosen", _short(a.get("chosen")), _short(b.get("chosen")))
    t.add_row("rejected", _short(a.get("rejected")), _short(b.get("rejected")))
    console.print(t)
