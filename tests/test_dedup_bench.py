"""bench_dedup runs end to end on a tiny workload (its figures are for the real sizes)."""

from __future__ import annotations

import pytest


def test_bench_dedup_runs(capsys: pytest.CaptureFixture[str]) -> None:
    from bench.bench_dedup import main

    assert main(["--images", "6", "--size", "320x240", "--workers", "1",
                 "--sizes", "3000", "--flat-sizes", "3000", "--radius", "12"]) == 0
    out = capsys.readouterr().out
    assert "(wanted >= 3)" in out
    assert "same pairs: yes" in out


def test_bench_dedup_decide_runs(capsys: pytest.CaptureFixture[str]) -> None:
    from bench.bench_dedup import main

    assert main(["--images", "0", "--sizes", "", "--decide-rows", "2000,8000",
                 "--baseline"]) == 0
    out = capsys.readouterr().out
    assert "columnar n=8,000" in out and "reference n=8,000" in out
    assert "4x the rows" in out
