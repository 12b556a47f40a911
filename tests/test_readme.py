"""The README cannot drift: its `bash` blocks run in order as a newcomer would run them,
its table of reject reasons is the registry the stages are checked against, and the
tests it names as guarantees exist.

`bash` blocks are the walk-through (run here, in a copy of the project made of links, with
../shared beside it); `sh` blocks are what needs what a test cannot have (network, GPUs,
a login, a cluster) or what sets the project up (`make demo`, `make test`).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from curate.reasons import REASONS, markdown_table
from tests.conftest import SHARED_DATA, shared_data

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
LEFT_OUT = {".git", "work", "demo-out", ".pytest_cache", ".ruff_cache"}


def blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```$", README.read_text(), flags=re.S | re.M)


def test_the_two_commands_are_shown_and_not_run_by_the_walkthrough() -> None:
    shown = "\n".join(blocks("sh"))
    assert "make demo" in shown and "make test" in shown
    runnable = "\n".join(blocks("bash"))
    assert runnable.strip(), "the walk-through has runnable blocks"
    assert not re.search(r"\bmake (test|demo|setup)\b", runnable)


def test_the_reject_reason_table_is_the_registry() -> None:
    text = README.read_text()
    table = text.split("<!-- reasons:start -->\n", 1)[1].split("\n<!-- reasons:end -->", 1)[0]
    assert table == markdown_table(), "regenerate it: python -m curate.reasons"
    assert len(REASONS) == table.count("\n| `")


def test_the_kind_list_is_the_registry() -> None:
    """The Ingest section names every KIND `curate ingest` takes, in the registry's order."""
    from curate.sources import all_kinds

    paragraph = README.read_text().split("KIND is one of ", 1)[1].split("\n\n", 1)[0]
    named = list(dict.fromkeys(re.findall(r"`([a-z][a-z0-9-]*)`", paragraph)))
    assert [k for k in named if k in all_kinds()] == all_kinds(), \
        "a KIND is missing from the README's Ingest section (or out of order)"


def test_every_named_guarantee_test_exists() -> None:
    named = re.findall(r"(tests/test_\w+\.py)::(test_\w+)", README.read_text())
    assert len(named) >= 10
    for path, name in named:
        assert re.search(rf"^def {name}\(", (ROOT / path).read_text(), flags=re.M), \
            f"README names {path}::{name}, which does not exist"


def _project_copy(tmp: Path) -> Path:
    """A project folder of links to this one (its own work/), with ../shared beside it."""
    proj = tmp / "project"
    proj.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in LEFT_OUT:
            (proj / entry.name).symlink_to(entry)
    (tmp / "shared").mkdir()
    (tmp / "shared" / "data").symlink_to(SHARED_DATA.resolve())
    return proj


@pytest.mark.slow
def test_every_readme_command_runs_in_order(tmp_path: Path) -> None:
    for needed in ("hh-rlhf/harmless-base-test.jsonl.gz", "llamafactory/dpo_en_demo.json",
                   "vl-rewardbench/data.jsonl"):
        shared_data(needed)
    proj = _project_copy(tmp_path)
    venv_bin = Path(sys.executable).parent
    script = "set -euo pipefail\nset -x\n" + "\n".join(blocks("bash"))
    (tmp_path / "readme.sh").write_text(script)
    env = {**os.environ, "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}",
           "CURATE_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    res = subprocess.run(["bash", str(tmp_path / "readme.sh")], cwd=proj, env=env,
                         capture_output=True, text=True, timeout=3000)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-6000:]
    # the walk-through's promises: it ends in a passing check, and text pairs reach training
    assert (proj / "work" / "check.xml").is_file()
    assert (proj / "work" / "report.html").stat().st_size > 10_000
    assert (proj / "work" / "shards" / "trl" / "text").is_dir()
    assert (proj / "work" / "shards" / "trl" / "vision").is_dir()
