"""Helpers for the safety tests: small inputs built by the test, folder snapshots."""

from __future__ import annotations

import json
from pathlib import Path

from curate import dataset as D


def write_pairs(path: Path, n: int = 40) -> Path:
    """A generic-format .jsonl of `n` text pairs (a few exact duplicates among them)."""
    with open(path, "w") as fh:
        for i in range(n):
            k = i % max(1, n - 5)
            fh.write(json.dumps({"prompt": f"question {k}", "chosen": f"good answer {k}",
                                 "rejected": f"bad answer {k}"}) + "\n")
    return path


def ingested(tmp_path: Path, run_cli, name: str = "ing", n: int = 40) -> Path:
    """A dataset folder written by `curate ingest generic` from `write_pairs`."""
    src = write_pairs(tmp_path / f"{name}.jsonl", n)
    out = tmp_path / name
    run_cli("ingest", "generic", src, "--out", out, "--quiet", "--workers", "1")
    return out


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative path -> bytes), to compare byte for byte."""
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(parent: Path) -> list[str]:
    """Temporary or moved-aside folders a run left in `parent`."""
    return sorted(p.name for p in parent.iterdir()
                  if ".tmp-" in p.name or ".old-" in p.name)


def first_kept(folder: Path) -> Path:
    return sorted((folder / D.KEPT).glob("*.parquet"))[0]


def flip_byte(path: Path, at: float = 0.5) -> None:
    """Change one byte of `path` in place (same size): at fraction `at` of the file."""
    data = bytearray(path.read_bytes())
    i = int(len(data) * at)
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))
