"""Pipeline runs for the report / check / explain tests, made by the real stage functions.

Runs are built once per test session and shared by the test modules; tests that
change a run work on a copy (`copy_run`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from curate.dataset import Dataset

_BUILT: dict[str, Path] = {}


def shared(factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """`build(root)` once per session; later calls get the same (read-only by convention) root."""
    if name not in _BUILT:
        root = factory.getbasetemp() / f"shared-{name}"
        build(root)
        _BUILT[name] = root
    return _BUILT[name]


def stage_folders(root: Path) -> dict[str, list[Path]]:
    """{stage: [folders]} of the dataset folders directly under `root`."""
    out: dict[str, list[Path]] = {}
    for p in sorted(root.iterdir()):
        if (p / "manifest.json").is_file():
            out.setdefault(Dataset.open(p).manifest["stage"], []).append(p)
    return out


def one_worker() -> Any:
    from curate.engine import get_engine

    return get_engine("local", workers=1)


def demo_run(root: Path) -> None:
    """`curate demo`'s folders under `root`, plus dedup while the demo does not run it."""
    from curate.recipes.demo import run_demo

    run_demo(root)
    stages = stage_folders(root)
    if "dedup" not in stages:
        from curate.stages.dedup import dedup

        dedup(stages["ingest"], root / "02-dedup", engine=one_worker())


def small_run(root: Path) -> None:
    """The demo's raw sample through ingest (four sources) and dedup: a fixed two-stage run."""
    from curate.recipes.demo import build_sample
    from curate.stages.dedup import dedup
    from curate.stages.ingest import ingest

    raw = build_sample(root / "raw")
    folders = []
    for kind, path in raw.items():
        folders.append(root / f"01-ingest-{kind}")
        ingest(kind, [str(path)], folders[-1], image_root=root / "raw", engine=one_worker())
    dedup(folders, root / "02-dedup", engine=one_worker())


def eval_set(folder: Path, prompts: list[str]) -> Path:
    """A RewardBench-format eval set with these prompts, ingested into `folder`."""
    from curate.stages.ingest import ingest

    folder.parent.mkdir(parents=True, exist_ok=True)
    raw = folder.parent / f"{folder.name}.jsonl"
    raw.write_text("".join(json.dumps({"id": i, "prompt": p, "chosen": "A good answer.",
                                       "rejected": "A bad answer.", "subset": "demo"}) + "\n"
                           for i, p in enumerate(prompts)))
    ingest("rewardbench", [str(raw)], folder, engine=one_worker())
    return folder


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("raw", "*.html"))
    return dst
