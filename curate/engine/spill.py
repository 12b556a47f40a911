"""The local engine's shuffle blocks on disk: what Ray's object store is to its shuffle.

A map task writes its blocks (one Arrow table per reduce item) to one uncompressed
Arrow IPC file in the spill folder and returns a `Spilled` handle (the file and which
record batches are which block); a reduce task memory-maps the files and reads only
its own blocks. So the driver holds a few integers per map task, never a block, and
memory holds what the running tasks hold: one map item's blocks, or one reduce
item's. The folder lives beside the output (same disk) and goes when the shuffle ends,
however it ends.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa


@dataclass(frozen=True)
class Spilled:
    """One map task's blocks: record batches `first[s]` to `first[s + 1]` of `path` are
    block `s`."""

    path: str
    first: tuple[int, ...]

    def block(self, s: int) -> pa.Table:
        """Block `s`, memory-mapped (no copy until the reducer gathers its rows)."""
        reader = pa.ipc.open_file(pa.memory_map(self.path))
        batches = [reader.get_batch(i) for i in range(self.first[s], self.first[s + 1])]
        return pa.Table.from_batches(batches, schema=reader.schema)


@contextlib.contextmanager
def spill_folder(parent: str | Path | None) -> Iterator[Path]:
    """A fresh folder under `parent` (None: the system's temp folder), removed at exit."""
    if parent is not None:
        Path(parent).mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=".shuffle-", dir=parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def spill_map(map_fn: Callable[[Any], list[pa.Table]], path: str, item: Any) -> Spilled:
    """Run `map_fn(item)` and write its blocks (Arrow tables of one schema) to `path`."""
    blocks = map_fn(item)
    first = [0]
    schema = blocks[0].schema if blocks else pa.schema([])
    with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        for block in blocks:
            batches = block.to_batches()
            for batch in batches:
                writer.write_batch(batch)
            first.append(first[-1] + len(batches))
    return Spilled(path, tuple(first))


def reduce_spilled(reduce_fn: Callable[[Any, list[pa.Table]], Any], s: int, item: Any,
                   spilled: list[Spilled]) -> Any:
    """`reduce_fn(item, [block s of every map task, in map order])`, read from the spill."""
    return reduce_fn(item, [m.block(s) for m in spilled])
