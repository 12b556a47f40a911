"""Small inline SVG charts: stacked horizontal bars and histograms, no libraries.

Every mark carries a `<title>` (the browser shows it on hover) so a reader can
read exact numbers off the chart; the numbers are also in the tables beside it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

import numpy as np

PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
           "#ff9da7", "#9c755f", "#bab0ac", "#86bcb6", "#d37295", "#8cd17d", "#b6992d"]
KEPT_COLOR = "#59a14f"
# Reject reasons: ten hues far apart from each other and from KEPT_COLOR (green); the
# eleventh reason on reuses them with white hatching (`reason_fill`).
REASON_HUES = ["#1f77b4", "#ff7f0e", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
               "#bcbd22", "#17becf", "#1d2433"]


def reason_fill(i: int) -> str:
    """The fill of the i-th reject reason: a plain hue, then hatched hues (see `pattern_defs`)."""
    if i < len(REASON_HUES):
        return REASON_HUES[i]
    return f"url(#hatch-{(i - len(REASON_HUES)) % (2 * len(REASON_HUES))})"


def pattern_defs() -> str:
    """One hidden SVG holding the hatch patterns `reason_fill` refers to (once per page)."""
    pats = []
    for j in range(2 * len(REASON_HUES)):
        hue = REASON_HUES[j % len(REASON_HUES)]
        angle = 45 if j < len(REASON_HUES) else -45
        pats.append(f'<pattern id="hatch-{j}" width="6" height="6" patternUnits="userSpaceOnUse" '
                    f'patternTransform="rotate({angle})"><rect width="6" height="6" fill="{hue}"/>'
                    '<rect width="2" height="6" fill="#fff"/></pattern>')
    return ('<svg width="0" height="0" style="position:absolute" aria-hidden="true">'
            f'<defs>{"".join(pats)}</defs></svg>')
FONT = "font-family:system-ui,sans-serif;font-size:12px"


@dataclass(frozen=True)
class Segment:
    label: str
    value: float
    color: str


@dataclass(frozen=True)
class Series:
    label: str
    values: np.ndarray
    color: str


def color_for(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def fmt(x: float) -> str:
    """A short human number: 12, 3.5, 0.042, 1.2e+06."""
    if x == 0 or not math.isfinite(x):
        return str(0 if x == 0 else x)
    if float(x).is_integer() and abs(x) < 1e6:
        return str(int(x))
    if abs(x) >= 1e6 or abs(x) < 1e-3:
        return f"{x:.2g}"
    return f"{x:.3g}"


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About `n` round tick values covering [lo, hi]."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    ticks = []
    t = start
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    return ticks


def _svg(width: int, height: int, body: list[str], label: str) -> str:
    return (f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
            f'width="{width}" height="{height}" role="img" aria-label="{escape(label)}" '
            f'style="{FONT}">' + "".join(body) + "</svg>")


def _legend(items: Sequence[tuple[str, str]], x: float, y: float, width: float) -> tuple[list[str],
                                                                                           float]:
    """Legend swatches wrapped into rows; returns the marks and the height used."""
    out: list[str] = []
    cx, cy = x, y
    for label, color in items:
        w = 18 + 7 * len(label)
        if cx + w > x + width and cx > x:
            cx, cy = x, cy + 18
        out.append(f'<rect x="{cx:.1f}" y="{cy:.1f}" width="11" height="11" fill="{color}"/>'
                   f'<text x="{cx + 15:.1f}" y="{cy + 10:.1f}">{escape(label)}</text>')
        cx += w + 8
    return out, (cy - y) + 22 if items else 0


def stacked_bars(rows: Sequence[tuple[str, Sequence[Segment]]], *, title: str,
                 width: int = 900, unit: str = "rows") -> str:
    """One horizontal bar per row, split into segments; a shared legend below."""
    label_w = min(260, max(60, 7 * max((len(r[0]) for r in rows), default=4) + 10))
    bar_h, gap, top = 22, 10, 8
    plot_w = width - label_w - 70
    total_max = max((sum(s.value for s in segs) for _, segs in rows), default=0) or 1
    body: list[str] = []
    y = top
    legend: dict[str, str] = {}
    for label, segs in rows:
        body.append(f'<text x="{label_w - 6}" y="{y + bar_h * 0.7:.1f}" text-anchor="end">'
                    f"{escape(label)}</text>")
        x = float(label_w)
        total = sum(s.value for s in segs)
        for s in segs:
            if s.value <= 0:
                continue
            w = plot_w * s.value / total_max
            legend.setdefault(s.label, s.color)
            body.append(f'<rect class="seg" x="{x:.2f}" y="{y}" width="{max(w, 0.8):.2f}" '
                        f'height="{bar_h}" fill="{s.color}"><title>{escape(label)} / '
                        f"{escape(s.label)}: {fmt(s.value)} {unit} "
                        f"({100 * s.value / (total or 1):.1f}%)</title></rect>")
            x += w
        body.append(f'<text x="{x + 5:.1f}" y="{y + bar_h * 0.7:.1f}">{fmt(total)}</text>')
        y += bar_h + gap
    marks, h = _legend(list(legend.items()), label_w, y + 4, plot_w)
    body.extend(marks)
    return _svg(width, int(y + 4 + h + 4), body, title)


def histogram(series: Sequence[Series], *, title: str, xlabel: str, bins: int = 30,
              width: int = 440, height: int = 230, log_x: bool = False) -> str:
    """Counts of each series in shared bins, drawn side by side within a bin."""
    finite = [s.values[np.isfinite(s.values)] for s in series]
    every = np.concatenate(finite) if finite else np.array([])
    left, right, top, bottom = 48, 24, 10, 62
    plot_w, plot_h = width - left - right, height - top - bottom
    body: list[str] = []
    if every.size == 0:
        body.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">no values</text>')
        return _svg(width, height, body, title)
    lo, hi = float(every.min()), float(every.max())
    if lo == hi:  # one bar as wide as the plot says nothing: say what the values are
        body.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" '
                    f'class="constant">all {every.size} values are {fmt(lo)}</text>')
        marks, _ = _legend([(f"{s.label} (n={f.size})", s.color)
                            for s, f in zip(series, finite, strict=True)],
                           left, top + plot_h + 38, plot_w)
        return _svg(width, height, body + marks, title)
    integral = bool(np.all(every == np.round(every))) and hi - lo <= 60
    if integral and not log_x:  # small counts and distances: one bar per integer value
        edges = np.arange(lo - 0.5, hi + 1.0, 1.0)
        bins = len(edges) - 1
    elif log_x and lo > 0:
        edges = np.geomspace(lo, hi if hi > lo else lo * 1.01, bins + 1)
    else:
        log_x = False
        integral = False
        if hi == lo:
            lo, hi = lo - 0.5, hi + 0.5
        edges = np.linspace(lo, hi, bins + 1)
    counts = [np.histogram(v, bins=edges)[0] for v in finite]
    if integral and not log_x:
        ticks = [t for t in nice_ticks(lo, hi, 6) if float(t).is_integer()] or [lo]
    ymax = max(int(c.max()) for c in counts) or 1
    yticks = [t for t in nice_ticks(0, ymax, 4) if float(t).is_integer()]

    def sx(v: float) -> float:
        if log_x:
            return left + plot_w * (math.log(v) - math.log(edges[0])) / (
                math.log(edges[-1]) - math.log(edges[0]))
        return left + plot_w * (v - edges[0]) / (edges[-1] - edges[0])

    def sy(c: float) -> float:
        return top + plot_h * (1 - c / ymax)

    for t in yticks:
        body.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" '
                    f'stroke="#ddd"/><text x="{left - 4}" y="{sy(t) + 4:.1f}" '
                    f'text-anchor="end">{fmt(t)}</text>')
    k = len(series)
    for b in range(bins):
        x0, x1 = sx(edges[b]), sx(edges[b + 1])
        w = (x1 - x0) / k
        for j, s in enumerate(series):
            c = int(counts[j][b])
            if c == 0:
                continue
            body.append(f'<rect class="bin" x="{x0 + j * w:.2f}" y="{sy(c):.2f}" '
                        f'width="{max(w - 0.5, 0.6):.2f}" height="{plot_h + top - sy(c):.2f}" '
                        f'fill="{s.color}"><title>{escape(s.label)}: {c} in '
                        f"[{fmt(edges[b])}, {fmt(edges[b + 1])})</title></rect>")
    body.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}" '
                'stroke="#333"/>')
    if log_x:
        xticks = [float(edges[0]), float(np.sqrt(edges[0] * edges[-1])), float(edges[-1])]
    elif integral:
        xticks = ticks
    else:
        xticks = nice_ticks(float(edges[0]), float(edges[-1]), 5)
    for t in xticks:
        body.append(f'<text x="{sx(t):.1f}" y="{top + plot_h + 14}" text-anchor="middle">'
                    f"{fmt(t)}</text>")
    body.append(f'<text x="{left + plot_w / 2}" y="{top + plot_h + 30}" text-anchor="middle">'
                f"{escape(xlabel)}{' (log scale)' if log_x else ''}</text>")
    marks, _ = _legend([(f"{s.label} (n={f.size})", s.color) for s, f in zip(series, finite,
                                                                               strict=True)],
                       left, top + plot_h + 38, plot_w)
    body.extend(marks)
    return _svg(width, height, body, title)


@dataclass(frozen=True)
class Line:
    label: str
    xs: Sequence[float]
    ys: Sequence[float | None]
    color: str
    dashed: bool = False


def line_chart(lines: Sequence[Line], *, title: str, xlabel: str, ylabel: str,
               width: int = 440, height: int = 240, marks: Sequence[tuple[float, str]] = (),
               y_range: tuple[float, float] | None = None) -> str:
    """Lines with a dot per point (points without a y are skipped); `marks` are labelled
    vertical rules, e.g. where a training stage starts."""
    left, right, top, bottom = 52, 16, 12, 64
    plot_w, plot_h = width - left - right, height - top - bottom
    pts = [(x, y) for ln in lines for x, y in zip(ln.xs, ln.ys, strict=True) if y is not None]
    body: list[str] = []
    if not pts:
        body.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">no values</text>')
        return _svg(width, height, body, title)
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = y_range or (min(p[1] for p in pts), max(p[1] for p in pts))
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5

    def sx(v: float) -> float:
        return left + plot_w * (v - x0) / (x1 - x0)

    def sy(v: float) -> float:
        return top + plot_h * (1 - (v - y0) / (y1 - y0))

    for t in nice_ticks(y0, y1, 4):
        body.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" '
                    f'stroke="#ddd"/><text x="{left - 4}" y="{sy(t) + 4:.1f}" '
                    f'text-anchor="end">{fmt(t)}</text>')
    for t in nice_ticks(x0, x1, 5):
        body.append(f'<text x="{sx(t):.1f}" y="{top + plot_h + 14}" text-anchor="middle">'
                    f"{fmt(t)}</text>")
    for x, label in marks:
        body.append(f'<line x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{top}" y2="{top + plot_h}" '
                    f'stroke="#98a2b3" stroke-dasharray="3 3"/><text x="{sx(x) + 3:.1f}" '
                    f'y="{top + 10}" fill="#667085">{escape(label)}</text>')
    for ln in lines:
        xy = [(sx(x), sy(y), x, y) for x, y in zip(ln.xs, ln.ys, strict=True) if y is not None]
        if not xy:
            continue
        dash = ' stroke-dasharray="5 3"' if ln.dashed else ""
        body.append(f'<polyline fill="none" stroke="{ln.color}" stroke-width="2"{dash} points="'
                    + " ".join(f"{a:.1f},{b:.1f}" for a, b, _, _ in xy) + '"/>')
        body += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{ln.color}"><title>'
                 f"{escape(ln.label)}: {fmt(y)} at {escape(xlabel)} {fmt(x)}</title></circle>"
                 for a, b, x, y in xy]
    body.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}" '
                'stroke="#333"/>')
    body.append(f'<text x="{left + plot_w / 2}" y="{top + plot_h + 30}" text-anchor="middle">'
                f"{escape(xlabel)}</text>")
    body.append(f'<text x="12" y="{top + plot_h / 2}" text-anchor="middle" '
                f'transform="rotate(-90 12 {top + plot_h / 2})">{escape(ylabel)}</text>')
    legend, _ = _legend([(ln.label, ln.color) for ln in lines], left, top + plot_h + 38, plot_w)
    return _svg(width, height, body + legend, title)
