"""`python -m bench`: arguments after a benchmark's name belong to that benchmark."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_help_after_a_name_is_that_benchmarks_help() -> None:
    res = _bench("bench_dedup", "--help")
    assert res.returncode == 0, res.stderr
    assert "usage: python -m bench bench_dedup" in res.stdout
    assert "No module named" not in res.stderr


def test_bench_help_lists_the_benchmarks_and_runs_none() -> None:
    res = _bench("--help")
    assert res.returncode == 0
    assert "bench_dedup" in res.stdout and "== bench_" not in res.stdout


def test_an_unknown_benchmark_is_exit_2() -> None:
    res = _bench("bench_nope")
    assert res.returncode == 2 and "unknown benchmark 'bench_nope'" in res.stderr


def test_bench_generate_is_listed_and_has_its_own_help() -> None:
    assert "bench_generate" in _bench("--help").stdout
    res = _bench("bench_generate", "--help")
    assert res.returncode == 0, res.stderr
    assert "usage: python -m bench bench_generate" in res.stdout and "--rss-requests" in res.stdout
