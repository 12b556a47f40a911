"""`curate/` type-checks clean under mypy with the project's config (`[tool.mypy]` in
pyproject.toml), as `make lint` runs it (issue 15)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # a cold mypy run over curate/ and its typed dependencies: about 40 s
def test_mypy_is_clean_on_curate() -> None:
    pytest.importorskip("mypy")
    res = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True,
                         text=True, timeout=900)
    assert res.returncode == 0, f"mypy found errors:\n{res.stdout}{res.stderr}"
