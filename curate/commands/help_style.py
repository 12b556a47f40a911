"""How `--help` shows options: a flag is shown as a flag.

typer (0.29) prints every option's type in its rich help panel, flags included, so
`--force`, `--quiet` and even `--help` read `<bool>` as if they took a value. It is
not how our options are declared (a bare `typer.Option("--force")` on a `bool` shows
the same): the panel asks each option for `display_type_rich`, which has no case
for flags. `show_flags_as_flags` gives it one: no type for a flag (`--x/--no-x`
pairs included), everything else unchanged.

`live_help` is the other thing help needs: help text computed from a registry when the
help is shown, not when the module is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from copy import copy
from typing import Any, TypeVar

from typer.models import ParameterInfo


def show_flags_as_flags() -> None:
    """Patch typer's option class once (idempotent; a no-op on typer versions without
    the hook)."""
    from typer import core

    option = getattr(core, "TyperOption", None)
    original = getattr(option, "display_type_rich", None)
    if option is None or original is None or getattr(original, "_curate_flags", False):
        return

    def display_type_rich(self: Any, ctx: Any) -> str | None:
        if getattr(self, "is_flag", False) and not getattr(self, "count", False):
            return None
        return original(self, ctx)

    display_type_rich._curate_flags = True  # type: ignore[attr-defined]
    option.display_type_rich = display_type_rich


P = TypeVar("P", bound=ParameterInfo)


def live_help(info: P, text: Callable[[], str]) -> P:
    """`info` (a `typer.Argument(...)` or `typer.Option(...)`) whose help is `text()`, read
    each time the help is built rather than once at import: text made from a registry
    (the KINDs `curate ingest` takes) then lists what was registered after this module
    was imported too."""
    cls = type(info)
    live = type(f"Live{cls.__name__}", (cls,),
                {"help": property(lambda self: text(), lambda self, value: None)})
    out = copy(info)
    out.__class__ = live
    return out
