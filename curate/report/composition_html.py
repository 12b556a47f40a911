"""The report's "Training mix" section: what the trainer will read."""

from __future__ import annotations

from collections import Counter

import numpy as np

from curate.report.composition import Composition, summary
from curate.report.markup import block, e, num, pct, table
from curate.report.svg import PALETTE, Series, histogram

MIX_ROWS = 60  # source × category rows listed; the rest are summed in a note


def _mix(c: Composition) -> str:
    """Rows by split and modality, then a source × category pivot with a column per
    split × modality (compact however many categories there are)."""
    by_split: Counter[tuple[str, str]] = Counter()
    pivot: dict[tuple[str, str], Counter[tuple[str, str]]] = {}
    for (split, mod, src, cat), n in c.mix.items():
        by_split[(split, mod)] += n
        pivot.setdefault((src, cat), Counter())[(split, mod)] += n
    splits = table(["split", "modality", "rows", "share"],
                   [[e(s), e(m), n, pct(n / c.rows if c.rows else None)]
                    for (s, m), n in sorted(by_split.items())],
                   numeric={2, 3}, cls="split-modality")
    cols = sorted(by_split)
    order = sorted(pivot, key=lambda k: (-sum(pivot[k].values()), k))
    rows = [[e(src), e(cat)] + [pivot[(src, cat)].get(col, 0) for col in cols]
            + [sum(pivot[(src, cat)].values())] for src, cat in order[:MIX_ROWS]]
    more = order[MIX_ROWS:]
    note = (f'<p class="muted">{len(more)} more source × category combinations with '
            f"{sum(sum(pivot[k].values()) for k in more)} rows not listed.</p>" if more else "")
    mix = table(["source", "category"] + [f"{s} {m}" for s, m in cols] + ["rows"], rows,
                numeric=set(range(2, len(cols) + 3)), cls="sortable mix")
    return (block("Rows by split and modality", splits)
            + block("Rows by source × category, per split and modality", mix + note))


def _stages(c: Composition) -> str:
    if set(tag for _, tag, _ in c.stages) == {"-"}:
        return '<p class="muted">No stage tags (no <code>stage</code> column).</p>'
    return table(["split", "training stage tag", "modality", "rows"],
                 [[e(s), e(t), e(m), n] for (s, t, m), n in c.stages.items()],
                 numeric={3}, cls="stage-tags")


def _tokens(c: Composition) -> str:
    if not c.shard_tokens:
        return '<p class="muted">No token estimates (no shard manifest, no est_tokens).</p>'
    return table(["split", "shards", "rows", "tokens min", "tokens median", "tokens max",
                  "tokens total"],
                 [[e(t.split), t.shards, t.rows, num(t.tokens_min, 0), num(t.tokens_median, 0),
                   num(t.tokens_max, 0), num(t.tokens_total, 0)] for t in c.shard_tokens],
                 numeric={1, 2, 3, 4, 5, 6}, cls="shard-tokens")


def _summary_rows(label: str, values: np.ndarray) -> list[str]:
    s = summary(values)
    return [e(label), s["n"], num(s["min"], 0), num(s["median"], 0), num(s["mean"], 1),
            num(s["max"], 0)]


def _lengths(c: Composition) -> str:
    stats = table(["", "n", "min", "median", "mean", "max"],
                  [_summary_rows("chosen (characters)", c.chosen_len),
                   _summary_rows("rejected (characters)", c.rejected_len)],
                  numeric={1, 2, 3, 4, 5}, cls="lengths")
    longer = c.chosen_longer
    bias = ("" if longer is None else
            f'<p class="length-bias" data-share="{longer:.6f}">The chosen response is the '
            f"longer one in <b>{pct(longer)}</b> of the pairs: a reward model can reach that "
            "accuracy by preferring length alone.</p>")
    chart = histogram([Series("chosen", c.chosen_len[np.isfinite(c.chosen_len)], PALETTE[0]),
                       Series("rejected", c.rejected_len[np.isfinite(c.rejected_len)],
                              PALETTE[1])],
                      title="response length", xlabel="characters", log_x=True)
    return f'{bias}<div class="charts"><div class="chart-box">{chart}{stats}</div></div>'


def _images(c: Composition) -> str:
    per_row = table(["images per row", "rows"],
                    [[k, n] for k, n in sorted(c.image_counts.items())], numeric={0, 1},
                    cls="images-per-row")
    if not c.image_sides.size:
        return per_row
    sizes = table(["", "n", "min", "median", "mean", "max"],
                  [_summary_rows("longest side (pixels)", c.image_sides)],
                  numeric={1, 2, 3, 4, 5}, cls="image-sides")
    return per_row + sizes


def render_composition(c: Composition | None) -> str:
    if c is None:
        return '<p class="muted">No folder with kept rows.</p>'
    notes = "".join(f'<p class="muted">{e(n)}</p>' for n in c.notes)
    return (f'<p>{c.rows} rows in {e(", ".join(c.folders))}, the folder the trainer reads.</p>'
            f'{notes}<div class="blocks">{_mix(c)}'
            + block("Training stage tags", _stages(c))
            + block("Tokens per shard (estimated)", _tokens(c))
            + block("Images", _images(c)) + "</div>"
            f"<h3>Response lengths: chosen against rejected</h3>{_lengths(c)}")
