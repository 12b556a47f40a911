"""Issue 13 item 10: a SIGKILL of the main process leaves no process behind (pool workers,
forkserver, resource tracker die with it), and a rerun gives identical bytes; a folder
moved aside by a commit that was killed half-way is put back or removed."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from curate import dataset as D
from tests.safety_support import ingested, leftovers, snapshot

ROOT = Path(__file__).resolve().parents[1]


def _group(pgid: int) -> list[int]:
    """The live (not zombie) processes in process group `pgid`."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry))
    return pids


def _wait_until(cond: Callable[[], bool], seconds: float) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def _start(*args: str | Path) -> subprocess.Popen[bytes]:
    """The CLI in a new session: its own process group, the group's id its pid."""
    return subprocess.Popen(
        [sys.executable, "-m", "curate.cli", *map(str, args)], cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _kill_main_and_check_group(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()  # SIGKILL, the main process only
    proc.wait()
    gone = _wait_until(lambda: not _group(proc.pid), 20)
    stray = _group(proc.pid)
    for pid in stray:  # do not leave them to the next test
        os.kill(pid, 9)
    assert gone, f"processes left in the group after the main process died: {stray}"


def _data_files(folder: Path) -> dict[str, bytes]:
    return {k: v for k, v in snapshot(folder).items() if k != D.MANIFEST}


def _points(tmp: Path, name: str) -> dict[str, Callable[[int], bool]]:
    """When to kill: once the pool is up; once the temp folder has a data file."""
    return {
        "pool": lambda pid: len(_group(pid)) >= 3,
        "writing": lambda pid: bool(list(tmp.glob(f".{name}.tmp-*/*/*.parquet"))),
    }


@pytest.mark.slow
@pytest.mark.parametrize("point", ["pool", "writing"])
def test_killed_ingest_leaves_no_process_and_the_rerun_is_identical(tmp_path: Path,
                                                                    point: str) -> None:
    src = tmp_path / "big.jsonl.gz"
    with gzip.open(src, "wt") as fh:
        for i in range(20_000):
            fh.write(json.dumps({"prompt": f"question {i}", "chosen": f"yes {i}",
                                 "rejected": f"no {i}"}) + "\n")
    args = ["ingest", "generic", src, "--quiet", "--workers", "2"]
    ref = tmp_path / "ref"
    assert subprocess.run([sys.executable, "-m", "curate.cli", *map(str, args), "--out", ref],
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}).returncode == 0
    out = tmp_path / "out"
    proc = _start(*args, "--out", out)
    reached = _wait_until(lambda: _points(tmp_path, "out")[point](proc.pid), 120)
    _kill_main_and_check_group(proc)
    assert reached, f"the run never reached {point}"
    assert not (out / D.MANIFEST).exists()
    rerun = subprocess.run([sys.executable, "-m", "curate.cli", *map(str, args), "--out", out],
                           cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert rerun.returncode == 0
    assert _data_files(out) == _data_files(ref)
    assert D.Dataset.open(out).manifest["files"] == D.Dataset.open(ref).manifest["files"]
    assert leftovers(tmp_path) == []


@pytest.mark.slow
@pytest.mark.parametrize("point", ["pool", "writing"])
def test_killed_dedup_leaves_no_process_and_the_rerun_is_identical(tmp_path: Path, run_cli,
                                                                   point: str) -> None:
    ing = ingested(tmp_path, run_cli, n=15_000)
    args = ["dedup", ing, "--quiet", "--workers", "2"]
    ref = tmp_path / "ref"
    run_cli(*args, "--out", ref)
    before = snapshot(ing)
    out = tmp_path / "out"
    proc = _start(*args, "--out", out)
    reached = _wait_until(lambda: _points(tmp_path, "out")[point](proc.pid), 120)
    _kill_main_and_check_group(proc)
    assert reached, f"the run never reached {point}"
    run_cli(*args, "--out", out)
    assert _data_files(out) == _data_files(ref)
    assert snapshot(ing) == before
    assert leftovers(tmp_path) == []


def test_a_killed_commit_is_restored_or_cleaned(tmp_path: Path, run_cli) -> None:
    """The two renames of a commit: killed between them, the old output is put back;
    killed after them, the moved-aside copy is removed."""
    out = ingested(tmp_path, run_cli, "out")
    good = snapshot(out)
    dead = 2**22 + 12345  # above pid_max's default: no such process
    aside = tmp_path / f".out.old-{dead}"
    os.replace(out, aside)  # killed between the renames: no output, the old one aside
    assert D.Dataset.open(out).manifest["stage"] == "ingest"
    assert snapshot(out) == good and leftovers(tmp_path) == []
    shutil.copytree(out, aside)  # killed after them: the new output and the old aside
    run_cli("ingest", "generic", tmp_path / "out.jsonl", "--out", out, "--quiet")
    assert snapshot(out) == good and leftovers(tmp_path) == []
