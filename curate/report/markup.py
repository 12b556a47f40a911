"""Small HTML building blocks shared by the report's section renderers."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

from curate.report.svg import fmt


def e(value: Any) -> str:
    """`value` as escaped HTML text (attribute-safe)."""
    return escape(str(value), quote=True)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *,
          numeric: set[int] | frozenset[int] = frozenset(), cls: str = "sortable") -> str:
    """A table; cells are HTML already (escape text with `e`), `numeric` columns align right."""
    head = "".join(f'<th class="num">{e(h)}</th>' if i in numeric else f"<th>{e(h)}</th>"
                   for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
                         for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def num(value: float | int | None, digits: int = 3) -> str:
    """A number for a table cell; '-' for a missing one."""
    if value is None:
        return "-"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.{digits}f}" if abs(value) < 1e6 else fmt(value)


def pct(value: float | None, digits: int = 1) -> str:
    """A share in [0, 1] as a percentage; '-' for a missing one."""
    return "-" if value is None else f"{100 * value:.{digits}f}%"


def interval(ci: tuple[float, float] | None) -> str:
    return "-" if ci is None else f"{100 * ci[0]:.1f}–{100 * ci[1]:.1f}%"


def block(title: str, body: str) -> str:
    """A titled box that sits beside its neighbours in a `.blocks` row."""
    return f'<div class="block"><h3>{e(title)}</h3>{body}</div>'
