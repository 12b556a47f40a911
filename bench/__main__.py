"""Run every benchmark module in bench/ (or those named): python -m bench [NAME...]."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    names = argv or sorted(m.name for m in pkgutil.iter_modules([str(here)])
                           if m.name.startswith("bench_"))
    for name in names:
        mod = importlib.import_module(f"bench.{name}")
        print(f"== {name} ==", flush=True)
        mod.main([])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
