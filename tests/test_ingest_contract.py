"""Ingest keeps the folder contract: conservation, determinism, skip, atomicity, clear errors."""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curate import dataset as D
from curate.sources import ADAPTERS
from curate.stages.ingest import ingest
from tests.helpers import assert_conserved, jpeg_bytes, rows, write_jsonl, write_parquet

# -- images Pillow decodes are kept as they are --------------------------------------------


def _encode(im, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _image_zoo() -> dict[str, bytes]:
    from PIL import Image

    rgb = Image.new("RGB", (40, 30), (10, 120, 200))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90
    frames = [Image.new("P", (16, 16), i) for i in range(3)]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:])
    return {
        "cmyk": _encode(Image.new("CMYK", (20, 20), (0, 50, 100, 0)), "JPEG"),
        "16bit": _encode(Image.new("I;16", (20, 20), 40000), "PNG"),
        "palette": _encode(Image.new("P", (20, 20), 3), "PNG"),
        "alpha": _encode(Image.new("RGBA", (20, 20), (1, 2, 3, 4)), "PNG"),
        "gif": gif.getvalue(),
        "webp": _encode(rgb, "WEBP"),
        "bmp": _encode(rgb, "BMP"),
        "exif": _encode(rgb, "JPEG", exif=exif),
    }


def test_every_decodable_image_is_kept_as_is(tmp_path: Path) -> None:
    zoo = _image_zoo()
    src = write_parquet(tmp_path / "zoo.parquet", [
        {"prompt": f"Look at {k}", "chosen": "yes", "rejected": "no", "image": v, "id": k}
        for k, v in zoo.items()
    ])
    out = tmp_path / "out"
    ingest("generic", [str(src)], out)
    kept = {r["source_id"]: r for r in rows(out)}
    assert set(kept) == set(zoo)
    for k, data in zoo.items():
        assert kept[k]["images"][0]["bytes"] == data, k
    assert kept["gif"]["images"][0]["format"] == "GIF"
    assert kept["webp"]["images"][0]["format"] == "WEBP"


def test_corrupt_truncated_and_oversized_images_are_rejected(tmp_path: Path) -> None:
    from PIL import Image

    full = jpeg_bytes(size=(300, 200))
    big = _encode(Image.new("L", (5000, 5000)), "PNG")  # 25 Mpx, compresses to little
    src = write_parquet(tmp_path / "bad.parquet", [
        {"prompt": "ok", "chosen": "a", "rejected": "b", "image": full, "id": "ok"},
        {"prompt": "trunc", "chosen": "a", "rejected": "b", "image": full[: len(full) // 2],
         "id": "truncated"},
        {"prompt": "junk", "chosen": "a", "rejected": "b", "image": b"not an image", "id": "junk"},
        {"prompt": "big", "chosen": "a", "rejected": "b", "image": big, "id": "big"},
    ])
    out = tmp_path / "out"
    ingest("generic", [str(src)], out, max_pixels=10_000_000)
    assert_conserved(out)
    assert [r["source_id"] for r in rows(out)] == ["ok"]
    rej = {r["source_id"]: r["reject_reason"] for r in rows(out, "rejected")}
    assert rej == {"truncated": "corrupt_image", "junk": "corrupt_image", "big": "image_too_large"}


# -- conservation under malformed rows (hypothesis) ---------------------------------------------

_text = st.one_of(st.none(), st.text(max_size=12), st.integers(), st.just("   "),
                  st.lists(st.text(max_size=3), max_size=2))
_row = st.fixed_dictionaries(
    {"prompt": _text, "chosen": _text, "rejected": _text},
    optional={"image": st.one_of(st.none(), st.just(b"junk"), st.just("missing.jpg"))},
)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_row, min_size=1, max_size=25))
def test_generic_conserves_rows_under_malformed_input(tmp_path_factory, data) -> None:
    tmp = tmp_path_factory.mktemp("h")
    src = tmp / "rows.jsonl"
    src.write_text("".join(json.dumps(r, default=lambda b: b.decode()) + "\n" for r in data))
    out = tmp / "out"
    m = ingest("generic", [str(src)], out, image_root=tmp)
    assert m["rows_in"] == len(data)
    assert_conserved(out)
    for r in rows(out):
        assert isinstance(r["chosen"], str) and r["chosen"].strip()
        assert r["chosen"] != r["rejected"]


@pytest.mark.parametrize("kind", list(ADAPTERS))
def test_every_adapter_conserves_junk_rows(tmp_path: Path, kind: str) -> None:
    junk = [{"nothing": 1}, {"chosen": None, "rejected": 5, "conversations": "x",
                             "response": "x", "prompt": None, "question": None}, {}]
    src = write_jsonl(tmp_path / "junk.jsonl", junk)
    out = tmp_path / "out"
    m = ingest(kind, [str(src)], out)
    assert m["rows_in"] == 3 and m["rows_kept"] == 0
    assert_conserved(out)


# -- determinism, skip, force ---------------------------------------------------------------------


def _sample(tmp_path: Path) -> Path:
    return write_parquet(tmp_path / "s.parquet", [
        {"prompt": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}",
         "image": jpeg_bytes(seed=i) if i % 3 == 0 else None} for i in range(40)
    ])


def test_same_input_gives_identical_files(tmp_path: Path) -> None:
    src = _sample(tmp_path)
    a, b = tmp_path / "a", tmp_path / "b"
    ingest("generic", [str(src)], a, chunk_size=7)
    ingest("generic", [str(src)], b, chunk_size=7)
    ma, mb = D.Dataset.open(a).manifest, D.Dataset.open(b).manifest
    assert ma["files"] == mb["files"]
    assert sorted(ma["files"]) == ["kept/part-00000-00000.parquet",
                                   "rejected/part-00000.parquet"]


def test_rerun_is_skipped_by_fingerprint_and_force_redoes(tmp_path: Path, run_cli) -> None:
    src = _sample(tmp_path)
    out = tmp_path / "out"
    run_cli("ingest", "generic", src, "--out", out, "--quiet")
    before = (out / D.MANIFEST).stat().st_mtime_ns
    res = run_cli("ingest", "generic", src, "--out", out)
    assert "up to date" in res.output
    assert (out / D.MANIFEST).stat().st_mtime_ns == before
    run_cli("ingest", "generic", src, "--out", out, "--force", "--quiet")
    assert (out / D.MANIFEST).stat().st_mtime_ns != before


def test_changed_config_is_not_skipped(tmp_path: Path) -> None:
    src = _sample(tmp_path)
    out = tmp_path / "out"
    ingest("generic", [str(src)], out)
    m = ingest("generic", [str(src)], out, source="renamed")
    assert {r["source"] for r in rows(out)} == {"renamed"}
    assert m["config"]["source"] == "renamed"


# -- unreadable files: exit 2, file and line named, no output folder ----------------------------


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("bad.jsonl", b'{"prompt": "a", "chosen": "b", "rejected": "c"}\n{oops\n', "bad.jsonl:2"),
        ("bad.json", b"[{\"a\": 1},", "bad.json"),
        ("latin1.jsonl", '{"prompt": "caf\xe9"}\n'.encode("latin-1"), "not UTF-8"),
        ("bad.parquet", b"PAR1 not really", "not a readable parquet"),
        ("bad.jsonl.gz", b"not gzip at all", "gzip"),
        ("empty.parquet", b"", "parquet"),
    ],
)
def test_unreadable_file_exits_2_and_leaves_no_folder(
    tmp_path: Path, run_cli, name: str, content: bytes, needle: str
) -> None:
    src = tmp_path / name
    src.write_bytes(content)
    out = tmp_path / "out"
    res = run_cli("ingest", "generic", src, "--out", out, expect=2)
    assert needle in res.output
    assert not out.exists()
    assert not list(tmp_path.glob(".out.tmp-*"))


def test_empty_jsonl_gives_an_empty_dataset(tmp_path: Path) -> None:
    src = tmp_path / "empty.jsonl"
    src.write_text("")
    out = tmp_path / "out"
    m = ingest("generic", [str(src)], out)
    assert (m["rows_in"], m["rows_kept"], m["rows_rejected"]) == (0, 0, 0)
    assert_conserved(out)


def test_missing_input_and_unknown_kind(tmp_path: Path, run_cli) -> None:
    res = run_cli("ingest", "generic", tmp_path / "nope.jsonl", "--out", tmp_path / "o", expect=2)
    assert "nope.jsonl" in res.output
    src = write_jsonl(tmp_path / "x.jsonl", [{"prompt": "a"}])
    res = run_cli("ingest", "nosuchkind", src, "--out", tmp_path / "o", expect=2)
    assert "unknown KIND" in res.output


def test_incomplete_folder_is_refused_by_readers(tmp_path: Path) -> None:
    (tmp_path / "half" / "kept").mkdir(parents=True)
    with pytest.raises(D.DatasetError, match="incomplete"):
        D.Dataset.open(tmp_path / "half")


# -- interrupted runs ------------------------------------------------------------------------


def test_killed_ingest_leaves_no_complete_folder_and_rerun_succeeds(tmp_path: Path) -> None:
    src = tmp_path / "big.jsonl.gz"
    with gzip.open(src, "wt") as fh:
        for i in range(60_000):
            fh.write(json.dumps({"prompt": f"question {i}", "chosen": f"yes {i}",
                                 "rejected": f"no {i}"}) + "\n")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "curate.cli", "ingest", "generic", str(src), "--out", str(out),
           "--quiet", "--workers", "1"]
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.time() + 60
    while time.time() < deadline and not list(tmp_path.glob(".out.tmp-*/kept/*.parquet")):
        time.sleep(0.05)
    assert list(tmp_path.glob(".out.tmp-*")), "the run should be mid-way, writing its temp folder"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / D.MANIFEST).exists()
    with pytest.raises(D.DatasetError):
        D.Dataset.open(out)
    m = ingest("generic", [str(src)], out)
    assert m["rows_kept"] == 60_000
    assert_conserved(out)
    assert not list(tmp_path.glob(".out.tmp-*")), "the stale temp folder is cleaned up"


def test_pixel_hash_matches_the_same_picture_in_other_files() -> None:
    from PIL import Image

    from curate.images import inspect_image

    rgb = Image.effect_mandelbrot((64, 48), (-2, -1.5, 1, 1.5), 50).convert("RGB")
    exif = Image.Exif()
    exif[0x010E] = "a description"
    same = [_encode(rgb, "PNG"), _encode(rgb, "BMP"), _encode(rgb, "TIFF"),
            _encode(rgb, "WEBP", lossless=True)]
    infos = [inspect_image(b) for b in same]
    assert len({i.sha256 for i in infos}) == 4
    assert len({i.pixel_hash for i in infos}) == 1
    jpeg_a = inspect_image(_encode(rgb, "JPEG", quality=90))
    jpeg_b = inspect_image(_encode(rgb, "JPEG", quality=90, exif=exif))
    assert jpeg_a.sha256 != jpeg_b.sha256 and jpeg_a.pixel_hash == jpeg_b.pixel_hash
    assert inspect_image(_encode(rgb.rotate(90), "PNG")).pixel_hash != infos[0].pixel_hash
    gray = inspect_image(_encode(rgb.convert("L"), "PNG"))
    assert gray.pixel_hash not in {i.pixel_hash for i in infos}


# -- decoding on threads ------------------------------------------------------------------------


@pytest.mark.parametrize("threads", [True, False])
def test_threads_and_processes_write_the_same_files_as_one_worker(
        threads: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from curate.engine import get_engine

    # the sample's thumbnails would go to processes; 0 sends every chunk to threads
    monkeypatch.setattr("curate.images.THREADS_MIN_IMAGE_BYTES", 0 if threads else 1e12)
    src = _sample(tmp_path)
    one, threads = tmp_path / "one", tmp_path / "threads"
    ingest("generic", [str(src)], one, chunk_size=3, engine=get_engine("local", workers=1))
    ingest("generic", [str(src)], threads, chunk_size=3, engine=get_engine("local", workers=3))
    m1, m3 = D.Dataset.open(one).manifest, D.Dataset.open(threads).manifest
    assert m1["files"] == m3["files"]
    assert m3["engine"]["workers"] == 3 and m3["rows_kept"] == 40


def test_photos_decode_on_threads_and_thumbnails_in_processes() -> None:
    from curate.sources.base import ImageRef, RawPair
    from curate.stages.ingest import IngestOptions, peek_threads

    def chunk(size: tuple[int, int]) -> tuple:
        img = jpeg_bytes(size=size)
        return ([RawPair(source_id=str(i), prompt=None, chosen="a", rejected="b",
                         images=[ImageRef(data=img)]) for i in range(3)], "src", None)

    opts = IngestOptions()
    for size, want in (((900, 700), True), ((96, 72), False)):
        work, threads = peek_threads(iter([chunk(size), chunk(size)]), opts)
        assert threads is want, size
        assert len(list(work)) == 2, "the peeked chunk is not lost"
    work, threads = peek_threads(iter([]), opts)
    assert list(work) == [] and threads is False


def test_concurrent_inspections_neither_trip_nor_leak_pillows_bomb_limit(monkeypatch) -> None:
    """Each inspection lifts Pillow's global limit (ours is --max-pixels); on threads, one
    must not restore it under another, which would raise DecompressionBombError there."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    from curate.images import inspect_image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # every image below is > 2x it
    images = [jpeg_bytes(size=(64 + i % 7, 48), seed=i) for i in range(400)]
    with ThreadPoolExecutor(8) as pool:
        infos = list(pool.map(inspect_image, images))
    assert [i.width for i in infos] == [64 + i % 7 for i in range(400)]
    assert Image.MAX_IMAGE_PIXELS == 1000


def test_streaming_a_parquet_of_images_holds_one_row_group(tmp_path: Path) -> None:
    """pyarrow's default pre-buffering keeps every row group read until the file closes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from curate.sources.readers import iter_records

    blob = os.urandom(1 << 17)
    table = pa.table({"id": list(range(400)), "image": [blob] * 400})  # 50 MiB
    path = tmp_path / "blobs.parquet"
    pq.write_table(table, path, row_group_size=64, compression="none", use_dictionary=False)
    del table
    base = pa.total_allocated_bytes()
    peak = n = 0
    for _ in iter_records([str(path)]):
        n += 1
        peak = max(peak, pa.total_allocated_bytes() - base)
    assert n == 400
    assert peak < 24 * (1 << 20), f"{peak / 2**20:.0f} MiB held while streaming 50 MiB"
