"""Render a `Comparison` of two runs as one self-contained page."""

from __future__ import annotations

import json
from typing import Any

from curate.report.compare import Comparison, Flipped
from curate.report.html import page, pair_html
from curate.report.markup import e, table

SECTIONS = [("stages", "Rows per stage and reason"), ("config", "Config differences"),
            ("kept-a", "Kept in A, rejected in B"), ("kept-b", "Kept in B, rejected in A")]


def _delta(a: int | None, b: int | None) -> str:
    if a is None or b is None:
        return "-"
    d = b - a
    cls = "up" if d > 0 else "down" if d < 0 else "same"
    return f'<span class="delta {cls}" data-delta="{d}">{d:+d}</span>'


def _n(v: int | None) -> str:
    return "-" if v is None else str(v)


def _stages(c: Comparison) -> str:
    rows: list[list[Any]] = []
    for s in c.stages:
        rows.append([f"<b>{e(s.stage)}</b>", "rows in", _n(s.rows_in[0]), _n(s.rows_in[1]),
                     _delta(*s.rows_in)])
        rows.append([e(s.stage), "kept", _n(s.kept[0]), _n(s.kept[1]), _delta(*s.kept)])
        rows += [[e(s.stage), f"rejected: {e(r)}", a, b, _delta(a, b)]
                 for r, (a, b) in s.by_reason.items()]
    return table(["stage", "rows", "A", "B", "B − A"], rows, numeric={2, 3, 4},
                 cls="compare-stages")


def _value(v: Any) -> str:
    return f"<code>{e(json.dumps(v, sort_keys=True, default=str))}</code>"


def _configs(c: Comparison) -> str:
    if not c.configs:
        return '<p class="muted">The two runs have the same config at every stage.</p>'
    rows = [[e(d.stage), e(d.folder), f"<code>{e(k)}</code>", _value(a), _value(b)]
            for d in c.configs for k, a, b in d.changes]
    return table(["stage", "folder", "setting", "A", "B"], rows, cls="compare-config")


def _flipped(f: Flipped) -> str:
    other = "B" if f.kept_in == "A" else "A"
    if not f.total:
        return (f'<p class="muted">Every row that {f.kept_in} keeps at the end is also kept by '
                f"{other} or absent from it.</p>")
    counts = table([f"stage in {other}", f"reason in {other}", "rows"],
                   [[e(s), e(r), n] for (s, r), n in f.by_reason.items()], numeric={2},
                   cls="flipped-reasons")
    return (f'<p><b>{f.total}</b> rows kept at the end of {f.kept_in} were rejected by {other}.'
            f"</p>{counts}<h3>Examples (as {other} rejected them)</h3>"
            + "".join(f'<div class="flip" data-kept-in="{e(f.kept_in)}" data-reason="'
                      f'{e(card.reason)}">{pair_html(card)}</div>' for card in f.cards))


def render_compare(c: Comparison, title: str = "curate compare") -> str:
    kpis = [("kept at the end, A", c.final_kept[0]), ("kept at the end, B", c.final_kept[1]),
            ("B − A", f"{c.final_kept[1] - c.final_kept[0]:+d}"),
            ("settings changed", sum(len(d.changes) for d in c.configs))]
    notes = "".join(f'<p class="muted">{e(n)}</p>' for n in c.notes)
    bodies = {"stages": notes + _stages(c), "config": _configs(c),
              "kept-a": _flipped(c.flipped[0]), "kept-b": _flipped(c.flipped[1])}
    return page(title, [f"A: {c.names[0]}", f"B: {c.names[1]}"], kpis,
                [(sid, name, bodies[sid]) for sid, name in SECTIONS])
