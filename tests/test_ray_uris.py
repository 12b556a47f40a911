"""Dataset folders as pyarrow filesystem URIs (issue 7's `s3://` / `gs://` / `file://`).

`file://` goes through the same code path as any remote filesystem (pyarrow's
`FileSystem.from_uri`, reads through the filesystem, writes staged locally and
uploaded with the manifest last), so these tests cover it without a network. They
need no Ray: URIs work the same with either engine.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.fs as pafs
import pytest

from bench.bench_ray import make_raw
from curate import dataset as D
from curate.engine import get_engine
from curate.stages.dedup import dedup
from curate.stages.ingest import ingest
from tests.helpers import assert_conserved

N_PAIRS = 120


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    tmp = tmp_path_factory.mktemp("uris")
    out = []
    for k, raw in enumerate(make_raw(tmp / "raw", N_PAIRS)):
        out.append(tmp / f"src{k}")
        ingest("generic", [str(raw)], out[-1], source=f"src{k}",
               engine=get_engine("local", workers=1))
    return out


def test_uri_in_and_out_gives_the_same_files_as_paths(sources: list[Path],
                                                     tmp_path: Path) -> None:
    engine = get_engine("local", workers=1)
    by_path = dedup(sources, tmp_path / "a", engine=engine)
    by_uri = dedup([s.as_uri() for s in sources], (tmp_path / "b").as_uri(), engine=engine)
    assert by_uri["files"] == by_path["files"]
    assert [i["path"] for i in by_uri["inputs"]] == [s.as_uri() for s in sources]
    assert [i["fingerprint"] for i in by_uri["inputs"]] == \
        [i["fingerprint"] for i in by_path["inputs"]]
    assert_conserved(tmp_path / "b")
    ds = D.Dataset.open((tmp_path / "b").as_uri())
    assert ds.filesystem is not None and ds.count() == by_uri["rows_kept"]
    assert ds.read(columns=["pair_id"]).num_rows == by_uri["rows_kept"]


def test_uri_output_rerun_is_skipped_and_force_replaces_every_file(sources: list[Path],
                                                                   tmp_path: Path) -> None:
    engine = get_engine("local", workers=1)
    out = (tmp_path / "d").as_uri()
    manifest = tmp_path / "d" / "manifest.json"
    dedup(sources, out, engine=engine)
    written = manifest.stat().st_ino
    dedup(sources, out, engine=engine)
    assert manifest.stat().st_ino == written, "up to date: skipped, manifest untouched"
    stray = tmp_path / "d" / D.KEPT / "part-09999.parquet"
    for force in (True, False):  # --force, or a file the manifest does not list: redone
        stray.write_bytes(b"left over from an older version")
        dedup(sources, out, engine=engine, force=force)
        assert not stray.exists(), "a new version replaces the whole folder"
    assert_conserved(tmp_path / "d")


def _staging() -> set[Path]:
    import tempfile

    return set(Path(tempfile.gettempdir()).glob("curate-staging-*"))


def test_interrupted_upload_leaves_no_manifest(sources: list[Path], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    real_copy = pafs.copy_files

    def failing_copy(src: str, dest: str, **kw: object) -> None:
        if dest.endswith(D.MANIFEST):
            raise OSError("connection lost")
        real_copy(src, dest, **kw)

    monkeypatch.setattr(pafs, "copy_files", failing_copy)
    out = (tmp_path / "x").as_uri()
    before = _staging()
    with pytest.raises(OSError, match="connection lost"):
        dedup(sources, out, engine=get_engine("local", workers=1))
    assert _staging() <= before, "the local staging folder is removed"
    assert (tmp_path / "x" / D.KEPT).is_dir(), "the data files went up"
    assert D.read_manifest(out) is None
    with pytest.raises(D.DatasetError, match="not a complete dataset folder"):
        D.Dataset.open(out)


def test_cli_keeps_uris_as_text(sources: list[Path], tmp_path: Path, run_cli) -> None:
    from curate.commands.common import location

    assert location("s3://bucket/work/x") == "s3://bucket/work/x"
    assert location("work/x") == Path("work/x")
    out = (tmp_path / "cli").as_uri()
    res = run_cli("dedup", *[s.as_uri() for s in sources], "--out", out, "--workers", "1")
    assert f"dedup -> {out}" in res.output.replace("\n", "")
    assert_conserved(tmp_path / "cli")
