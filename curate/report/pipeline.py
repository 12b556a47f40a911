"""A pipeline run as `report`, `check` and `explain` see it: dataset folders in lineage order.

The folders of a run are linked through their manifests: each input record holds
the input folder's content fingerprint, so the links survive moved or relative
paths. A folder given on the command line without a manifest is searched one
level down (`curate report demo-out` finds `demo-out/01-ingest-*`, ...).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from curate import dataset as D
from curate.manifest import Manifest

PAIR_ID_RE = re.compile(r"\b[0-9a-f]{32}\b")


@dataclass
class Step:
    """One dataset folder of the run."""

    dataset: D.Dataset
    manifest: Manifest
    fingerprint: str
    parents: list[int] = field(default_factory=list)  # indices into Run.steps
    children: list[int] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return self.dataset.path

    @property
    def name(self) -> str:
        return self.dataset.path.name

    @property
    def stage(self) -> str:
        return self.manifest.stage

    def count(self, part: str) -> int:
        key = "rows_kept" if part == D.KEPT else "rows_rejected"
        value = self.manifest.get(key)
        return int(value) if isinstance(value, int) else self.dataset.count(part)

    def columns(self, part: str = D.KEPT) -> list[str]:
        try:
            return self.dataset.schema(part).names
        except D.DatasetError:
            return []


@dataclass
class Run:
    """The folders in topological order; `main` marks the lineage of the last stage."""

    steps: list[Step]
    main: list[int]

    @property
    def lineage(self) -> list[Step]:
        return [self.steps[i] for i in self.main]

    @property
    def others(self) -> list[Step]:
        """Folders outside the main lineage (e.g. ingested eval sets)."""
        main = set(self.main)
        return [s for i, s in enumerate(self.steps) if i not in main]

    @property
    def finals(self) -> list[Step]:
        """Folders of the main lineage that no other folder of it consumes."""
        main = set(self.main)
        return [self.steps[i] for i in self.main
                if not any(c in main for c in self.steps[i].children)]

    def stages(self) -> list[tuple[str, list[Step]]]:
        """The main lineage grouped by stage name, in order of first appearance."""
        groups: dict[str, list[Step]] = {}
        for s in self.lineage:
            groups.setdefault(s.stage, []).append(s)
        return list(groups.items())

    def upstream(self, index: int) -> list[int]:
        """`index` and every folder it was made from, in topological order."""
        seen = {index}
        todo = [index]
        while todo:
            for p in self.steps[todo.pop()].parents:
                if p not in seen:
                    seen.add(p)
                    todo.append(p)
        return sorted(seen)


def expand(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Dataset folders named by `paths`: each one itself, or its subfolders with a manifest."""
    found: list[Path] = []
    for p in map(Path, paths):
        if (p / D.MANIFEST).is_file():
            found.append(p)
            continue
        if not p.is_dir():
            raise D.DatasetError(f"{p}: no such dataset folder")
        subs = sorted(c for c in p.iterdir()
                      if c.is_dir() and not c.name.startswith(".") and (c / D.MANIFEST).is_file())
        if not subs:
            raise D.DatasetError(f"{p}: no {D.MANIFEST} here or in its subfolders")
        found.extend(subs)
    unique: dict[Path, Path] = {}
    for p in found:
        unique.setdefault(p.resolve(), p)
    return list(unique.values())


def load_run(paths: Iterable[str | os.PathLike[str]]) -> Run:
    """Open the folders named by `paths` and link them through their manifests."""
    datasets = [D.Dataset.open(p) for p in expand(paths)]
    steps = [Step(d, d.manifest, d.fingerprint) for d in datasets]
    by_fp: dict[str, list[int]] = {}
    for i, s in enumerate(steps):
        by_fp.setdefault(s.fingerprint, []).append(i)
    for i, s in enumerate(steps):
        for rec in s.manifest.inputs:
            for j in by_fp.get(str(rec.get("fingerprint")), []):
                if j != i and j not in s.parents:
                    s.parents.append(j)
                    steps[j].children.append(i)
    order = _topological(steps)
    remap = {old: new for new, old in enumerate(order)}
    ordered = [steps[i] for i in order]
    for s in ordered:
        s.parents = sorted(remap[p] for p in s.parents)
        s.children = sorted(remap[c] for c in s.children)
    run = Run(ordered, [])
    depth = _depths(ordered)
    deepest = max(depth) if depth else 0
    main: set[int] = set()
    for i, d in enumerate(depth):
        if d == deepest:
            main.update(run.upstream(i))
    run.main = sorted(main)
    return run


def _topological(steps: Sequence[Step]) -> list[int]:
    """Parents before children; ties by folder name, so the order is stable."""
    pending = {i: set(s.parents) for i, s in enumerate(steps)}
    order: list[int] = []
    while pending:
        ready = sorted((i for i, ps in pending.items() if not ps), key=lambda i: steps[i].name)
        if not ready:  # a cycle cannot come from content fingerprints; be safe anyway
            ready = sorted(pending, key=lambda i: steps[i].name)[:1]
        for i in ready:
            del pending[i]
            order.append(i)
        for ps in pending.values():
            ps.difference_update(ready)
    return order


def _depths(steps: Sequence[Step]) -> list[int]:
    depth = [0] * len(steps)
    for i, s in enumerate(steps):
        depth[i] = max((depth[p] + 1 for p in s.parents), default=0)
    return depth


# -- reading rows ---------------------------------------------------------------------------
def column_values(step: Step, part: str, column: str) -> pa.ChunkedArray | None:
    """One column of a part, or None when the part does not have it."""
    if column not in step.columns(part):
        return None
    return step.dataset.read(part, columns=[column])[column]


def iter_rows(step: Step, part: str, columns: list[str] | None = None,
              batch_size: int = 256) -> Iterator[dict[str, Any]]:
    """Rows of a part as dicts, streamed."""
    have = step.columns(part)
    cols = None if columns is None else [c for c in columns if c in have]
    for batch in step.dataset.iter_batches(part, columns=cols, batch_size=batch_size):
        yield from batch.to_pylist()


def take(step: Step, part: str, keys: list[str],
         choose: Callable[[pa.Table], Sequence[int]],
         columns: list[str] | None = None) -> list[dict[str, Any]]:
    """Rows of a part picked by `choose`, which sees only the light `keys` columns of each file.

    Only the row groups that hold a picked row are read in full, so picking a few
    rows of a large image dataset does not read every image.
    """
    found: list[dict[str, Any]] = []
    for f in step.dataset.files(part):
        pf = step.dataset.parquet_file(f)
        names = pf.schema_arrow.names
        hits = sorted(choose(pf.read(columns=[k for k in keys if k in names])))
        if not hits:
            continue
        cols = None if columns is None else [c for c in columns if c in names]
        start = 0
        for g in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            local = [h - start for h in hits if start <= h < start + n]
            if local:
                table = pf.read_row_group(g, columns=cols)
                found.extend(table.take(pa.array(local)).to_pylist())
            start += n
    return found


def lookup(step: Step, part: str, ids: Iterable[str], *, prefix: bool = False,
           columns: list[str] | None = None) -> list[dict[str, Any]]:
    """Rows of a part whose `pair_id` is in `ids` (or starts with one of them, with `prefix`)."""
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        return []

    def choose(keys: pa.Table) -> list[int]:
        if "pair_id" not in keys.column_names:  # a folder of prompts (candidates), not pairs
            return []
        pids = keys["pair_id"]
        if prefix:
            mask = pc.starts_with(pids, wanted[0])
            for w in wanted[1:]:
                mask = pc.or_(mask, pc.starts_with(pids, w))
        else:
            mask = pc.is_in(pids, value_set=pa.array(wanted, pa.string()))
        return pc.indices_nonzero(mask).to_pylist()

    return take(step, part, ["pair_id"], choose, columns)


def find_pair(run: Run, pair_id: str, prefer: Step | None = None) -> dict[str, Any] | None:
    """A row by id: in `prefer`'s kept then rejected rows, then anywhere in the run."""
    steps = ([prefer] if prefer is not None else []) + [s for s in run.steps if s is not prefer]
    for s in steps:
        for part in (D.KEPT, D.REJECTED):
            rows = lookup(s, part, [pair_id])
            if rows:
                return rows[0]
    return None


def referenced_ids(detail: str | None) -> list[str]:
    """The pair ids a `reject_detail` names (a duplicate's survivor, a matched pair)."""
    return PAIR_ID_RE.findall(detail or "")


def user_text(prompt: Sequence[dict[str, Any]] | None) -> str:
    """The last user message of a prompt (the question a reader recognises)."""
    for m in reversed(list(prompt or [])):
        if m.get("role") == "user":
            return str(m.get("content") or "")
    return str((list(prompt or [{}])[-1] or {}).get("content") or "")
