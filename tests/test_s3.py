"""Dataset folders on a real S3 protocol server (moto's, on localhost): `s3://` URIs in and out.

The same small pipeline (ingest two generic parquet sources with images -> dedup ->
similar, then shard) runs once on local paths and once on `s3://` URIs, through the CLI;
both must give the same rows, counts and file checksums. Also: reruns skipped by
fingerprint, `--force`, `info`, the Ray engine, and a missing bucket, an unreachable
endpoint or a bad URI failing with exit code 2 and a message naming the URI.

pyarrow's S3 URIs carry the server in query parameters (`endpoint_override`, `scheme`,
`region`), so no environment variable points at the server; credentials and region are
set for this module only. Needs `moto[server]` (the `dev` extra); without it the module
skips, except under CI=true. About 35 s on 2 cores (12 s of it the unreachable endpoint's
retries, 11 s Ray).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import pytest

from curate.pipeline.card import CARD

try:
    from moto.server import ThreadedMotoServer
except ImportError:  # pragma: no cover - depends on the environment
    if os.environ.get("CI") == "true":
        raise ImportError("CI=true needs moto: pip install -e '.[dev]'") from None
    pytest.skip("moto[server] is not installed (pip install -e '.[dev]')",
                allow_module_level=True)

from bench.bench_ray import make_raw  # noqa: E402
from curate import dataset as D  # noqa: E402

N_PAIRS = 120
BUCKET = "curate-test"
REGION = "us-east-1"
# what must agree between a local run and an S3 run of the same stage, same engine
COMPARED = ("stage", "fingerprint", "rows_in", "rows_kept", "rows_rejected",
            "rejected_by_reason", "files", "file_rows")
# ... and between engines, whose file layouts may differ (Ray's workers write their own)
COUNTS = ("stage", "rows_in", "rows_kept", "rows_rejected", "rejected_by_reason")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class S3:
    """The moto server of this module: URIs for keys in its bucket, and a client of it."""

    port: int
    fs: pafs.S3FileSystem

    def query(self, port: int | None = None) -> str:
        return (f"endpoint_override=127.0.0.1:{port or self.port}&scheme=http"
                f"&region={REGION}")

    def uri(self, key: str, bucket: str = BUCKET, port: int | None = None,
            credentials: bool = False) -> str:
        """`credentials`: the keys in the URI, so a pickled filesystem carries them (Ray
        workers started before this module's AWS variables were set have none)."""
        auth = "testing:testing@" if credentials else ""
        return f"s3://{auth}{bucket}/{key}?{self.query(port)}"

    def keys(self, prefix: str) -> list[str]:
        sel = pafs.FileSelector(f"{BUCKET}/{prefix}", recursive=True, allow_not_found=True)
        return sorted(i.path for i in self.fs.get_file_info(sel) if i.type == pafs.FileType.File)


@pytest.fixture(scope="module")
def s3() -> Iterator[S3]:
    """A moto S3 server on a free localhost port with one bucket; AWS settings for this
    module only (undone afterwards), none of the machine's own AWS configuration."""
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
                     "AWS_ENDPOINT_URL_S3", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE",
                     "RAY_ADDRESS"):
            mp.delenv(name, raising=False)
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", REGION)
        mp.setenv("AWS_REGION", REGION)
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata lookups
        werkzeug = logging.getLogger("werkzeug")
        level = werkzeug.level
        werkzeug.setLevel(logging.ERROR)  # one log line per request otherwise
        port = _free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        try:
            admin = pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http",
                                      region=REGION, allow_bucket_creation=True)
            admin.create_dir(BUCKET)
            yield S3(port, admin)
        finally:
            server.stop()
            werkzeug.setLevel(level)


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two generic parquet sources with images (duplicates, near duplicates, label
    conflicts, corrupt images and empty responses planted)."""
    return make_raw(tmp_path_factory.mktemp("s3-raw"), N_PAIRS)


def _cli(*args: Any) -> Any:
    from typer.testing import CliRunner

    from curate.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def _ok(*args: Any) -> Any:
    res = _cli(*args)
    assert res.exit_code == 0, (res.exit_code, res.output)
    return res


STEPS = ("src0", "src1", "dedup", "similar")
SHARD_ARGS = ("--shards", "2", "--eval-fraction", "0.1", "--workers", "1", "-q")


def ingest_and_dedup(raw: list[Path], at: Any, *extra: str) -> None:
    """ingest x2 -> dedup through the CLI; `at(name)` is each folder."""
    for k, path in enumerate(raw):
        _ok("ingest", "generic", path, "--out", at(f"src{k}"), "--source", f"src{k}", "-q",
            *extra)
    _ok("dedup", at("src0"), at("src1"), "--out", at("dedup"), "--prefer", "src1", "-q", *extra)


def run_pipeline(raw: list[Path], at: Any) -> dict[str, Any]:
    """ingest x2 -> dedup -> similar through the CLI; the manifests by step."""
    ingest_and_dedup(raw, at, "--workers", "1")
    _ok("similar", at("dedup"), "--out", at("similar"), "--cache", "none", "--workers", "1",
        "-q")
    return {name: D.Dataset.open(at(name)).manifest for name in STEPS}


@pytest.fixture(scope="module")
def local_run(raw: list[Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("s3-local")
    manifests = run_pipeline(raw, lambda name: root / name)
    _ok("shard", root / "similar", "--out", root / "shard", *SHARD_ARGS)
    manifests["shard"] = D.Dataset.open(root / "shard").manifest
    return {"root": root, "manifests": manifests}


@pytest.fixture(scope="module")
def s3_run(s3: S3, raw: list[Path]) -> dict[str, Any]:
    t = time.perf_counter()
    manifests = run_pipeline(raw, lambda name: s3.uri(f"run/{name}"))
    return {"manifests": manifests, "seconds": time.perf_counter() - t}


def pair_ids(location: Any, part: str) -> list[str]:
    return sorted(D.Dataset.open(location).read(part, columns=["pair_id"])["pair_id"]
                  .to_pylist())


def assert_conserved_uri(uri: str) -> dict[str, Any]:
    """rows_in = kept + rejected, and every file's sha256 matches the manifest, read from S3."""
    import hashlib

    ds = D.Dataset.open(uri)
    m = ds.manifest
    kept, rejected = ds.count(D.KEPT), ds.count(D.REJECTED)
    assert (m["rows_kept"], m["rows_rejected"]) == (kept, rejected)
    consumed = m.get("inputs_consumed", {"kept": kept, "rejected": rejected})
    assert m["rows_in"] == consumed["kept"] + consumed["rejected"]
    assert sum(m["rejected_by_reason"].values()) == rejected
    assert ds.filesystem is not None
    for name, sha in m["files"].items():
        with ds.filesystem.open_input_stream(f"{ds.path}/{name}") as fh:
            assert hashlib.sha256(fh.read()).hexdigest() == sha, name
    return m


# -- the filesystem itself ---------------------------------------------------------------
def test_s3_uri_resolves_to_the_local_server(s3: S3) -> None:
    fs, inner = pafs.FileSystem.from_uri(s3.uri("probe/x"))
    assert isinstance(fs, pafs.S3FileSystem)
    assert inner == f"{BUCKET}/probe/x"
    opts = fs.__reduce__()[1][0]  # the options it was made with
    assert (opts["endpoint_override"], opts["scheme"]) == (f"127.0.0.1:{s3.port}", "http")
    assert fs.region == REGION
    with fs.open_output_stream(f"{inner}/hello.txt") as fh:
        fh.write(b"hi")
    assert s3.keys("probe") == [f"{BUCKET}/probe/x/hello.txt"]
    fs.delete_dir(inner)
    assert s3.keys("probe") == []


# -- the pipeline, local vs S3 -----------------------------------------------------------
def test_s3_pipeline_gives_the_local_rows_counts_and_files(s3: S3, local_run: dict[str, Any],
                                                           s3_run: dict[str, Any]) -> None:
    for name in STEPS:
        lm, sm = local_run["manifests"][name], s3_run["manifests"][name]
        assert {k: sm.get(k) for k in COMPARED} == {k: lm.get(k) for k in COMPARED}, name
        m = assert_conserved_uri(s3.uri(f"run/{name}"))
        assert m["rows_in"] == m["rows_kept"] + m["rows_rejected"] or "inputs_consumed" in m
        for part in (D.KEPT, D.REJECTED):
            assert pair_ids(s3.uri(f"run/{name}"), part) == \
                pair_ids(local_run["root"] / name, part), (name, part)
    dedup = s3_run["manifests"]["dedup"]
    assert dedup["rows_rejected"] > 0 and dedup["rejected_by_reason"], "planted duplicates"
    assert [i["path"] for i in dedup["inputs"]] == [s3.uri("run/src0"), s3.uri("run/src1")]
    # every object is where the manifest says, and nothing else (the manifest and the
    # dataset card, a view of the manifest outside its checksums, included)
    for name in STEPS:
        files = s3_run["manifests"][name]["files"]
        assert s3.keys(f"run/{name}/") == sorted(
            f"{BUCKET}/run/{name}/{f}" for f in [*files, D.MANIFEST, CARD])


def test_s3_rerun_is_skipped_and_force_replaces_every_file(s3: S3, s3_run: dict[str, Any],
                                                           raw: list[Path]) -> None:
    out = s3.uri("run/dedup")
    before = D.read_manifest(out)
    res = _ok("dedup", s3.uri("run/src0"), s3.uri("run/src1"), "--out", out, "--prefer",
              "src1", "--workers", "1")
    assert "is up to date" in res.output.replace("\n", "")
    assert D.read_manifest(out) == before, "skipped: the manifest was not rewritten"
    # an ingest rerun too (its input is a local file, its output on S3)
    res = _ok("ingest", "generic", raw[0], "--out", s3.uri("run/src0"), "--source", "src0",
              "--workers", "1")
    assert "is up to date" in res.output.replace("\n", "")

    stray = f"{BUCKET}/run/dedup/kept/part-09999.parquet"
    with s3.fs.open_output_stream(stray) as fh:
        fh.write(b"left over from an older version")
    _ok("dedup", s3.uri("run/src0"), s3.uri("run/src1"), "--out", out, "--prefer", "src1",
        "--workers", "1", "--force", "-q")
    assert stray not in s3.keys("run/dedup/"), "a new version replaces the whole folder"
    after = assert_conserved_uri(out)
    assert after["files"] == before["files"] and after["seconds"] != before["seconds"]


def test_function_api_reads_and_writes_s3(s3: S3, local_run: dict[str, Any],
                                          s3_run: dict[str, Any]) -> None:
    """The stage functions (not the CLI) with URIs: S3 in, S3 out; S3 in, local out."""
    from curate.engine import get_engine
    from curate.stages.dedup import dedup

    engine = get_engine("local", workers=1)
    want = local_run["manifests"]["dedup"]
    srcs = [s3.uri("run/src0"), s3.uri("run/src1")]
    m = dedup(srcs, s3.uri("api/dedup"), prefer=["src1"], engine=engine)
    assert {k: m.get(k) for k in COMPARED} == {k: want.get(k) for k in COMPARED}
    assert D.read_manifest(s3.uri("api/dedup")) == m
    ds = D.Dataset.open(s3.uri("api/dedup"))
    assert ds.filesystem is not None and ds.count() == m["rows_kept"]
    assert ds.read(columns=["pair_id"]).num_rows == m["rows_kept"]
    local = dedup(srcs, local_run["root"] / "from-s3", prefer=["src1"], engine=engine)
    assert local["files"] == want["files"]
    assert D.read_manifest(s3.uri("api/nothing-here")) is None


def test_shard_writes_to_s3(s3: S3, local_run: dict[str, Any], s3_run: dict[str, Any],
                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # where the bug leaves its stray local folder
    _ok("shard", s3.uri("run/similar"), "--out", s3.uri("run/shard"), *SHARD_ARGS)
    m = assert_conserved_uri(s3.uri("run/shard"))
    want = local_run["manifests"]["shard"]
    assert {k: m.get(k) for k in COMPARED} == {k: want.get(k) for k in COMPARED}
    assert m["shards"] == want["shards"]


def test_info_reads_an_s3_folder(s3: S3, s3_run: dict[str, Any]) -> None:
    res = _ok("info", s3.uri("run/dedup"), "--json")
    info = json.loads(res.output)
    m = s3_run["manifests"]["dedup"]
    assert (info["rows_in"], info["rows_kept"], info["rows_rejected"]) == \
        (m["rows_in"], m["rows_kept"], m["rows_rejected"])
    assert info["rejected_by_reason"] == m["rejected_by_reason"]
    assert sum(info["kept_by_source"].values()) == m["rows_kept"]


# -- failures: a clear message and exit code 2, no traceback ------------------------------
def test_a_bucket_itself_is_refused_as_an_output(s3: S3, local_run: dict[str, Any]) -> None:
    """Replacing an output deletes it: never the whole bucket."""
    out = f"s3://{BUCKET}?{s3.query()}"
    with s3.fs.open_output_stream(f"{BUCKET}/keep-me/object") as f:
        f.write(b"precious")
    res = _cli("dedup", local_run["root"] / "src0", "--out", out, "--workers", "1")
    assert res.exit_code == 2, res.output
    # refused by the folder rule (a bucket holding objects is not a curate dataset folder),
    # or, for an empty bucket, by the bucket rule
    said = res.output.replace("\n", "")
    assert "not a curate dataset folder" in said or "must be a folder inside the bucket" in said
    assert f"{BUCKET}/keep-me/object" in s3.keys("keep-me")


def test_output_to_a_missing_bucket_fails_clearly(s3: S3, local_run: dict[str, Any]) -> None:
    out = s3.uri("x/dedup", bucket="no-such-bucket")
    res = _cli("dedup", local_run["root"] / "src0", "--out", out, "--workers", "1")
    assert res.exit_code == 2, res.output
    text = res.output.replace("\n", "")
    assert out in text and "bucket 'no-such-bucket' not found" in text, "found before the work"
    # --force reads no old manifest: the upload at the end says it
    res = _cli("dedup", local_run["root"] / "src0", "--out", out, "--workers", "1", "--force")
    assert res.exit_code == 2, res.output
    text = res.output.replace("\n", "")
    assert out in text and "upload failed" in text and "no-such-bucket" in text
    # for callers of the functions: a DatasetError that is still an OSError
    with pytest.raises(D.RemoteError, match="bucket 'no-such-bucket' not found") as err:
        D.read_manifest(out)
    assert isinstance(err.value, OSError) and isinstance(err.value, D.DatasetError)


def test_input_in_a_missing_bucket_fails_clearly(s3: S3, tmp_path: Path) -> None:
    src = s3.uri("x/src", bucket="no-such-bucket")
    res = _cli("dedup", src, "--out", tmp_path / "out", "--workers", "1")
    assert res.exit_code == 2, res.output
    assert src in res.output.replace("\n", "")
    assert not (tmp_path / "out").exists()


def test_bad_query_parameter_fails_clearly(s3: S3, tmp_path: Path) -> None:
    src = s3.uri("run/src0") + "&endpoint=oops"
    res = _cli("dedup", src, "--out", tmp_path / "out", "--workers", "1")
    assert res.exit_code == 2, res.output
    text = res.output.replace("\n", "")
    assert src in text and "endpoint" in text


def test_unreachable_endpoint_fails_clearly(s3: S3, local_run: dict[str, Any],
                                            tmp_path: Path) -> None:
    dead = _free_port()  # nothing listens there
    src = s3.uri("run/src0", port=dead)
    t = time.monotonic()
    res = _cli("dedup", src, "--out", tmp_path / "out", "--workers", "1")
    assert res.exit_code == 2, res.output
    text = res.output.replace("\n", "")
    assert src in text and "connect" in text.lower()
    out = s3.uri("x/out", port=dead)
    res = _cli("dedup", local_run["root"] / "src0", "--out", out, "--workers", "1")
    assert res.exit_code == 2, res.output
    assert out in res.output.replace("\n", "")
    assert time.monotonic() - t < 60


# -- Ray -----------------------------------------------------------------------------------
def test_ray_engine_reads_and_writes_s3(s3: S3, raw: list[Path],
                                        local_run: dict[str, Any]) -> None:
    """--engine ray: ingest and dedup with S3 outputs (the workers read and write S3
    themselves) give the local engine's local rows and counts. About 11 s on 2 cores, Ray's
    start included."""
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:  # started here, under this module's AWS settings, which its workers inherit
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=400 * 1024**2,
                 logging_level="WARNING")
    try:
        ingest_and_dedup(raw, lambda name: s3.uri(f"ray/{name}", credentials=True),
                         "--engine", "ray",
                         "--workers", "2")
    finally:
        if started:
            ray.shutdown()
    for name in ("src0", "src1", "dedup"):
        m = assert_conserved_uri(s3.uri(f"ray/{name}"))
        text = json.dumps(m)
        assert "testing:testing" not in text and "s3://***@" in text or name != "dedup", \
            "keys in an input URI are masked in the manifest"
        want = local_run["manifests"][name]
        assert m["engine"]["engine"] == "ray" and m["engine"]["workers"] == 2
        assert {k: m.get(k) for k in COUNTS} == {k: want.get(k) for k in COUNTS}, name
        for part in (D.KEPT, D.REJECTED):
            assert pair_ids(s3.uri(f"ray/{name}"), part) == \
                pair_ids(local_run["root"] / name, part), (name, part)

