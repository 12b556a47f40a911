"""Shared fixtures. Real data lives in ../shared/data and is never copied into the project."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# the shared checks in tests/helpers.py show their diffs like a test's own asserts
pytest.register_assert_rewrite("tests.helpers")

# every reject reason a stage writes must be in curate/reasons.py (the README's table);
# set here so CLI subprocesses inherit it
os.environ.setdefault("CURATE_STRICT_REASONS", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CURATE_SHARED_DATA", ROOT.parent / "shared" / "data"))


def shared_data(relative: str) -> Path:
    """Path to a file under ../shared/data; skip when absent, fail when absent under CI=true."""
    path = SHARED_DATA / relative
    if not path.exists():
        msg = f"real data {path} is absent (see ../shared/data/README.md)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg + "; CI=true requires it")
        pytest.skip(msg)
    return path


@pytest.fixture
def run_cli():
    """Invoke the typer app in-process: run_cli('ingest', 'hh-rlhf', ...) -> Result."""
    from typer.testing import CliRunner

    from curate.cli import app

    runner = CliRunner()

    def _run(*args: str, expect: int | None = 0):
        result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
        if expect is not None:
            assert result.exit_code == expect, (result.exit_code, result.output)
        return result

    return _run


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray with 2 CPUs in this process for one test module, shut down at its end:
    never for the whole session (a Ray left connected exits pytest with code 1 when another
    test stops the Ray processes on this machine)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024**2,
             logging_level="WARNING")
    try:
        yield ray
    finally:
        ray.shutdown()
