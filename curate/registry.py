"""One registry type for the things `curate` has several of: source adapters, stages,
export formats, reject reasons.

Each is registered once, where it is defined (a decorator or a call at module import),
and everything that lists them (help text, the README's checks, the contract tests,
the demo) iterates the registry instead of a copy kept by hand, so a new adapter or
stage cannot be left out of them. `import_submodules` imports every module of a
package, so a new module registers itself without an edit to a list of modules.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Name -> entry, iterated by `order` (then registration order).

    A read-only mapping for its users (`kind in ADAPTERS`, `ADAPTERS[kind]`, `[*ADAPTERS]`);
    `add` / `register` put an entry in, `temporarily` puts one in for a `with` block
    (a test's throwaway adapter or stage).
    """

    def __init__(self, what: str) -> None:
        self.what = what  # "source adapter", ...: named in errors
        self._entries: dict[str, tuple[float, int, T]] = {}
        self._added = 0

    def add(self, name: str, entry: T, *, order: float = 500) -> T:
        """Register `entry` under `name`; a second entry under one name is a bug."""
        if name in self._entries and self._entries[name][2] is not entry:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        if name not in self._entries:
            self._added += 1
            self._entries[name] = (order, self._added, entry)
        return entry

    def register(self, name: str, *, order: float = 500) -> Callable[[T], T]:
        """A decorator: `@REGISTRY.register("name")` on the class or function to add."""
        def wrap(entry: T) -> T:
            return self.add(name, entry, order=order)
        return wrap

    def remove(self, name: str) -> None:
        del self._entries[name]

    @contextmanager
    def temporarily(self, name: str, entry: T, *, order: float = 500) -> Iterator[T]:
        """`entry` registered for the block, removed after it (tests)."""
        self.add(name, entry, order=order)
        try:
            yield entry
        finally:
            self.remove(name)

    def _sorted(self) -> list[tuple[str, T]]:
        items = sorted(self._entries.items(), key=lambda kv: kv[1][:2])
        return [(name, value[2]) for name, value in items]

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name][2]
        except KeyError:
            raise KeyError(name) from None

    def __iter__(self) -> Iterator[str]:
        return iter([name for name, _ in self._sorted()])

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}, {list(self)})"


def import_submodules(package: str) -> list[str]:
    """Import every module of `package` (not sub-packages' modules), so each registers what
    it defines; returns their names, sorted."""
    pkg = importlib.import_module(package)
    names = sorted(m.name for m in pkgutil.iter_modules(pkg.__path__, f"{package}.")
                   if not m.ispkg)
    for name in names:
        importlib.import_module(name)
    return names
