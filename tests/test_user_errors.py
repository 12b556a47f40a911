"""Issue 13 items 8 and 9: errors always reach stderr (even under --quiet), never as a
traceback (unless --debug / CURATE_DEBUG=1), and a failed write leaves nothing behind."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from curate import dataset as D
from tests.safety_support import ingested, leftovers, snapshot, write_pairs

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "curate.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


@pytest.mark.slow  # three CLI processes: about 30 s here
def test_quiet_still_prints_errors_on_stderr(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes('{"prompt": "caf\xe9"'.encode("latin-1") + b"\n")
    for args, named in (
            (["ingest", "generic", tmp_path / "nope.jsonl", "--out", tmp_path / "o"],
             "nope.jsonl"),
            (["ingest", "generic", bad, "--out", tmp_path / "o"], "latin1.jsonl"),
            (["dedup", tmp_path / "no-such-folder", "--out", tmp_path / "o"], "no-such-folder")):
        proc = _cli(*args, "--quiet")
        assert proc.returncode == 2, proc.stderr
        assert proc.stdout == ""
        assert "error:" in proc.stderr and named in proc.stderr
        assert "Traceback" not in proc.stderr


@pytest.mark.slow  # three CLI processes: about 30 s here
def test_a_traceback_only_with_debug(tmp_path: Path) -> None:
    args = ["dedup", tmp_path / "no-such-folder", "--out", tmp_path / "o", "--quiet"]
    assert "Traceback" not in _cli(*args).stderr
    assert "Traceback" in _cli("--debug", *args).stderr
    assert "Traceback" in _cli(*args, env={"CURATE_DEBUG": "1"}).stderr


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_a_failed_write_is_one_message_and_leaves_nothing(tmp_path: Path, run_cli,
                                                          monkeypatch, code: int) -> None:
    """A full disk, a read-only file system or no permission, as the OS reports them
    (simulated: tests run as root, whom chmod does not stop)."""
    ing = ingested(tmp_path, run_cli)
    out = tmp_path / "dd"
    run_cli("dedup", ing, "--out", out, "--quiet")
    before = snapshot(out)
    real = D.PartWriter._flush

    def failing(self: D.PartWriter) -> None:
        if self._buffer:
            raise OSError(code, os.strerror(code), f"{self.folder}/part-00000.parquet")
        real(self)

    monkeypatch.setattr(D.PartWriter, "_flush", failing)
    res = run_cli("dedup", ing, "--out", out, "--quiet", "--force", expect=2)
    assert os.strerror(code) in res.output and "part-00000.parquet" in res.output
    assert "nothing was written" in res.output and "Traceback" not in res.output
    assert snapshot(out) == before
    assert leftovers(tmp_path) == []


def test_an_out_below_a_file_is_one_message(tmp_path: Path, run_cli) -> None:
    """A real OS error, as root too: the output's parent is a file."""
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    src = write_pairs(tmp_path / "one.jsonl")
    res = run_cli("ingest", "generic", src, "--out", blocker / "sub", "--quiet", expect=2)
    assert "afile" in res.output and "Traceback" not in res.output
    assert blocker.read_text() == "x"
    assert leftovers(tmp_path) == []


def test_an_unexpected_error_is_one_line_and_exit_1(tmp_path: Path, run_cli,
                                                    monkeypatch) -> None:
    import curate.commands.dedup as dedup_command

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(dedup_command, "run", broken)  # the stage's entry point
    ing = ingested(tmp_path, run_cli)
    res = run_cli("dedup", ing, "--out", tmp_path / "dd", "--quiet", expect=1)
    assert "internal error (RuntimeError: a bug)" in res.output and "--debug" in res.output
    assert "Traceback" not in res.output
