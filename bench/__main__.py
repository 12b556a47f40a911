"""Run the benchmarks: `python -m bench` runs every bench_* module with its defaults;
`python -m bench NAME [ARGS...]` runs one, and every argument after NAME is its own
(`python -m bench bench_dedup --help` shows bench_dedup's options)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def bench_names() -> list[str]:
    here = Path(__file__).parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))


def main(argv: list[str]) -> int:
    names = bench_names()
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        print("benchmarks: " + ", ".join(names))
        return 0
    if argv:
        name, args = argv[0], argv[1:]
        if name not in names:
            print(f"unknown benchmark {name!r}; choose one of: {', '.join(names)}",
                  file=sys.stderr)
            return 2
        runs = [(name, args)]
    else:
        runs = [(name, []) for name in names]
    for name, args in runs:
        mod = importlib.import_module(f"bench.{name}")
        print(f"== {name} ==", flush=True)
        mod.main(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
