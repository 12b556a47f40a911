"""`--engine ray` on a machine where a Ray cluster already runs (issue 21).

A real head is started with `ray start --head` in a temporary RAY_TMPDIR and HOME (so
its `ray_current_cluster` file and `~/.ray/auth_token` are the test's own), with token
authentication on, and stopped by its process group at the end. Every `curate` run is a
CLI subprocess in that environment, as a user's shell would be.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import assert_same_output, write_jsonl

pytest.importorskip("ray", reason="ray is not installed (pip install -e '.[ray]')")

pytestmark = pytest.mark.slow  # a head start (~15 s) and several Ray starts

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(base: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("RAY_") or k in ("RAY_memory_monitor_refresh_ms",)}
    env.update(HOME=str(base / "home"), RAY_TMPDIR=str(base / "raytmp"),
               RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(ROOT))
    env.update(extra)
    return env


def _curate(env: dict[str, str], *args: object,
            timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "curate.cli", *map(str, args)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def head() -> Iterator[dict]:
    """A token-authenticated Ray head on 127.0.0.1, and the folders its users share.
    (A short /tmp folder: Ray's socket paths under RAY_TMPDIR must fit in 107 bytes.)"""
    base = Path(tempfile.mkdtemp(prefix="crc", dir="/tmp"))
    (base / "home" / ".ray").mkdir(parents=True)
    (base / "raytmp").mkdir()
    token = secrets.token_hex(16)
    (base / "home" / ".ray" / "auth_token").write_text(token)
    port = _free_port()
    env = _env(base, RAY_AUTH_MODE="token")
    ray_bin = Path(sys.executable).with_name("ray")
    proc = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
         "--num-cpus", "2", "--disable-usage-stats", "--include-dashboard", "false"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, out[-3000:]
    rows = [{"prompt": f"question {i} about colour {i % 7}", "chosen": f"answer {i}",
             "rejected": f"wrong {i}"} for i in range(40)]
    rows += rows[:5]  # exact duplicates for dedup to find
    raw = write_jsonl(base / "raw.jsonl", rows)
    local = _env(base)
    ingested = base / "ingested"
    res = _curate(local, "ingest", "generic", raw, "--out", ingested, "-q")
    assert res.returncode == 0, res.stderr
    # every run's output is named `dedup` (manifests name their folder), in its own parent
    res = _curate(local, "dedup", ingested, "--out", base / "local" / "dedup", "-q")
    assert res.returncode == 0, res.stderr
    yield {"base": base, "port": port, "token": token, "ingested": ingested,
           "local": base / "local" / "dedup"}
    _stop_head(base, proc.pid)
    shutil.rmtree(base, ignore_errors=True)


def _stop_head(base: Path, pgid: int) -> None:
    """Stop this test's head only: its process group and every process whose command line
    names its folder. Never `ray stop`, which stops every Ray on the machine, a pytest
    process's own Ray too (which then exits pytest with code 1 a minute later)."""
    import psutil

    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for p in psutil.process_iter(["pid", "cmdline"]):
        if p.info["pid"] != os.getpid() and str(base) in " ".join(p.info["cmdline"] or []):
            try:
                p.kill()
            except psutil.Error:
                pass


def _engine(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())["engine"]


def test_without_an_address_a_running_cluster_is_not_joined(head: dict) -> None:
    """The head's ray_current_cluster is in RAY_TMPDIR; curate still starts its own Ray."""
    assert (head["base"] / "raytmp" / "ray" / "ray_current_cluster").exists()
    out = head["base"] / "private" / "dedup"
    res = _curate(_env(head["base"]), "dedup", head["ingested"], "--out", out,
                  "--engine", "ray", "--workers", "1")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "a private local Ray" in res.stdout + res.stderr
    assert _engine(out)["ray_mode"] == "private"
    assert_same_output(head["local"], out)


def test_auto_joins_the_running_cluster_with_its_token(head: dict) -> None:
    out = head["base"] / "joined" / "dedup"
    res = _curate(_env(head["base"]), "dedup", head["ingested"], "--out", out,
                  "--engine", "ray", "--ray-address", "auto")
    assert res.returncode == 0, res.stderr[-3000:]
    engine = _engine(out)
    assert engine["ray_mode"] == "joined"
    assert engine["cluster_cpus"] == 2
    assert "the Ray cluster at" in res.stdout + res.stderr
    assert_same_output(head["local"], out)


@pytest.mark.parametrize("token", ["wrong", None], ids=["wrong-token", "no-token"])
def test_a_refused_token_fails_fast_with_one_message(head: dict, token: str | None,
                                                     tmp_path: Path) -> None:
    env = _env(head["base"])
    if token:
        env["RAY_AUTH_TOKEN"] = token
    else:
        env["HOME"] = str(tmp_path)  # no ~/.ray/auth_token
    t = time.monotonic()
    res = _curate(env, "dedup", head["ingested"], "--out", tmp_path / "x", "--engine", "ray",
                  "--ray-address", f"127.0.0.1:{head['port']}", "-q")
    assert time.monotonic() - t < 10 + 5  # interpreter start included
    assert res.returncode == 2
    err = res.stderr.strip()
    assert "token" in err and ("refused" in err or "no token was found" in err), err
    assert "gcs_client" not in err and "Traceback" not in err
    assert len(err.splitlines()) <= 3, err  # one message (rich may wrap it)
    assert not (tmp_path / "x").exists()


def test_a_stale_cluster_file_does_not_break_the_ray_engine(head: dict) -> None:
    """A `ray_current_cluster` left by a head that died without `ray stop`."""
    tmp_path = Path(tempfile.mkdtemp(prefix="crs", dir="/tmp"))
    raytmp = tmp_path / "raytmp" / "ray"
    raytmp.mkdir(parents=True)
    (raytmp / "ray_current_cluster").write_text(f"127.0.0.1:{_free_port()}")
    env = _env(tmp_path)
    env["HOME"] = str(head["base"] / "home")
    out = tmp_path / "dedup"
    res = _curate(env, "dedup", head["ingested"], "--out", out, "--engine", "ray",
                  "--workers", "1", "-q")
    assert res.returncode == 0, res.stderr[-3000:]
    assert_same_output(head["local"], out)
    t = time.monotonic()
    res = _curate(env, "dedup", head["ingested"], "--out", tmp_path / "y", "--engine", "ray",
                  "--ray-address", "auto", "-q")
    assert res.returncode == 2 and "no Ray cluster at" in res.stderr, res.stderr
    assert time.monotonic() - t < 15
    shutil.rmtree(tmp_path, ignore_errors=True)
