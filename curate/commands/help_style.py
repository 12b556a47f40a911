"""How `--help` shows options: a flag is shown as a flag.

typer (0.29) prints every option's type in its rich help panel, flags included, so
`--force`, `--quiet` and even `--help` read `<bool>` as if they took a value. It is
not how our options are declared (a bare `typer.Option("--force")` on a `bool` shows
the same): the panel asks each option for `display_type_rich`, which has no case
for flags. `show_flags_as_flags` gives it one: no type for a flag (`--x/--no-x`
pairs included), everything else unchanged.
"""

from __future__ import annotations

from typing import Any


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
