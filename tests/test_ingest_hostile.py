"""Hostile rows and files at ingest (issue 13, items 5, 6, 7 and 9), through the CLI.

One bad row is that row's rejection with a reason, and every other row is kept; a file
that cannot be read at all is exit 2 with one message naming it, and nothing is left
behind. Each input is built here.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate import dataset as D
from tests.helpers import assert_conserved, jpeg_bytes, png_bytes, rows, write_jsonl

GOOD = {"prompt": "What is shown?", "chosen": "A cat.", "rejected": "A dog."}
W1 = ("--workers", "1")  # rows are checked inline: fast, and the same code as the pool runs


def _ingest(run_cli, src: Path, out: Path, *extra: str, kind: str = "generic", expect: int = 0):
    return run_cli("ingest", kind, src, "--out", out, *W1, *extra, expect=expect)


def _between_good_rows(path: Path, hostile_line: str) -> Path:
    """A JSON lines file: a good row, the hostile line, another good row."""
    good = [json.dumps({**GOOD, "id": f"good-{i}", "chosen": f"A cat {i}."}) for i in range(2)]
    path.write_text(f"{good[0]}\n{hostile_line}\n{good[1]}\n", encoding="utf-8")
    return path


def _rejected(out: Path) -> list[dict]:
    return rows(out, D.REJECTED)


def _assert_only_hostile_rejected(out: Path, reason: str) -> dict:
    m = assert_conserved(out)
    assert (m["rows_in"], m["rows_kept"], m["rows_rejected"]) == (3, 2, 1)
    assert sorted(r["source_id"] for r in rows(out)) == ["good-0", "good-1"]
    (rej,) = _rejected(out)
    assert rej["reject_reason"] == reason, rej["reject_detail"]
    assert rej["reject_detail"]
    return rej


def _no_traceback(res) -> None:
    assert "Traceback" not in res.output


# -- item 5: one row never stops a run ----------------------------------------------------------

DEEP = "[" * 1000 + "]" * 1000  # deeper than Python's json parser reaches
HOSTILE_ROWS = {
    # name: (line, reason, text the detail must hold)
    "surrogate_in_prompt": ('{"prompt": "x\\ud800", "chosen": "a", "rejected": "b", "id": "h"}',
                            "invalid_unicode", "surrogate"),
    "surrogate_in_response": ('{"prompt": "p", "chosen": "\\udfff", "rejected": "b", "id": "h"}',
                              "invalid_unicode", "surrogate"),
    "surrogate_in_extra_column": (
        '{"prompt": "p", "chosen": "a", "rejected": "b", "note": ["\\ud800"], "id": "h"}',
        "invalid_unicode", "surrogate"),
    "surrogate_in_a_key": ('{"prompt": "p", "chosen": "a", "rejected": "b", "\\ud800": 1, '
                           '"id": "h"}', "invalid_unicode", "surrogate"),
    "surrogate_in_id": ('{"prompt": "p", "chosen": "a", "rejected": "b", "id": "\\ud800"}',
                        "invalid_unicode", "surrogate"),
    "nested_1000_levels": ('{"prompt": "p", "chosen": "a", "rejected": "b", "x": ' + DEEP + "}",
                           "malformed_row", "nested too deep"),
    "nested_300_levels_in_meta": ('{"prompt": "p", "chosen": "a", "rejected": "b", "id": "h", '
                                  '"x": ' + "[" * 300 + "]" * 300 + "}",
                                  "malformed_row", "nested deeper"),
    "image_path_too_long": ('{"prompt": "p", "chosen": "a", "rejected": "b", "id": "h", '
                            '"image": "' + "a" * 5000 + '.png"}', "invalid_image_path",
                            "File name too long"),
    "image_path_with_nul": ('{"prompt": "p", "chosen": "a", "rejected": "b", "id": "h", '
                            '"image": "a\\u0000b.png"}', "invalid_image_path", "null"),
    "image_path_with_surrogate": ('{"prompt": "p", "chosen": "a", "rejected": "b", "id": "h", '
                                  '"image": "\\udc00.png"}', "invalid_image_path", "surrogate"),
    "bytes_field_not_base64": ('{"prompt": "p", "chosen": "a", "rejected": "b", "id": "h", '
                               '"image": {"bytes": "not base64!"}}', "malformed_row", "base64"),
    "bytes_field_a_number": ('{"prompt": "p", "chosen": "a", "rejected": "b", "id": "h", '
                             '"image": {"bytes": 7}}', "malformed_row", "int"),
    "image_a_number": ('{"prompt": "p", "chosen": "a", "rejected": "b", "id": "h", "image": 3}',
                       "malformed_row", "image is a int"),
    "line_not_an_object": ('[1, 2, 3]', "malformed_row", "not an object"),
    "line_a_string": ('"just text"', "malformed_row", "not an object"),
    "int_of_5000_digits": ('{"prompt": "p", "chosen": "a", "rejected": "b", "n": ' + "7" * 5000
                           + "}", "malformed_row", "cannot be read"),
    "prompt_a_message_list_of_numbers": ('{"prompt": [1, 2], "chosen": "a", "rejected": "b", '
                                         '"id": "h"}', "malformed_row", "message"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_ROWS))
def test_one_hostile_row_is_rejected_and_every_other_row_kept(tmp_path: Path, run_cli,
                                                               name: str) -> None:
    line, reason, needle = HOSTILE_ROWS[name]
    src = _between_good_rows(tmp_path / "in.jsonl", line)
    out = tmp_path / "out"
    res = _ingest(run_cli, src, out, "--image-root", tmp_path)
    _no_traceback(res)
    rej = _assert_only_hostile_rejected(out, reason)
    assert needle.lower() in rej["reject_detail"].lower(), rej["reject_detail"]
    if reason == "malformed_row":
        assert "in.jsonl:2" in rej["reject_detail"]  # file and line


def test_hostile_rows_in_worker_processes_conserve_rows(tmp_path: Path, run_cli) -> None:
    """The same rows through the process pool (two workers), many chunks."""
    lines = [line for line, _, _ in HOSTILE_ROWS.values()]
    good = [json.dumps({**GOOD, "chosen": f"A cat {i}.", "id": f"g{i}"}) for i in range(40)]
    src = tmp_path / "mix.jsonl"
    src.write_text("\n".join(good[:20] + lines + good[20:]) + "\n")
    out = tmp_path / "out"
    res = run_cli("ingest", "generic", src, "--out", out, "--workers", "2",
                  "--image-root", tmp_path)
    _no_traceback(res)
    m = assert_conserved(out)
    assert (m["rows_in"], m["rows_kept"], m["rows_rejected"]) == (40 + len(lines), 40,
                                                                  len(lines))


def test_a_file_name_that_is_not_utf8_names_rows_escaped(tmp_path: Path, run_cli) -> None:
    src = Path(os.fsdecode(str(tmp_path).encode() + b"/\xff-rows.jsonl"))
    write_jsonl(src, [GOOD, {"prompt": "p"}])
    out = tmp_path / "out"
    _ingest(run_cli, src, out)
    assert_conserved(out)
    assert [r["source_id"] for r in rows(out)] == ["\\udcff-rows.jsonl:1"]
    (rej,) = _rejected(out)
    assert rej["reject_reason"] == "missing_response"


def test_surrogate_rejected_row_keeps_its_text_escaped(tmp_path: Path, run_cli) -> None:
    src = _between_good_rows(tmp_path / "in.jsonl",
                             '{"prompt": "caf\\u00e9 \\ud800!", "chosen": "a", "rejected": "b",'
                             ' "id": "h"}')
    out = tmp_path / "out"
    _ingest(run_cli, src, out)
    (rej,) = _rejected(out)
    assert rej["prompt"][0]["content"] == "caf\u00e9 \\ud800!"


def test_deep_nesting_in_a_json_file_is_a_file_error(tmp_path: Path, run_cli) -> None:
    """A .json file is one JSON value: too deep to parse is the file's error (exit 2); in
    JSON lines it is one line's (above)."""
    src = tmp_path / "deep.json"
    src.write_text('[{"prompt": "p", "chosen": "a", "rejected": "b", "x": ' + DEEP + "}]")
    out = tmp_path / "out"
    res = _ingest(run_cli, src, out, expect=2)
    _no_traceback(res)
    assert "deep.json" in res.output and "nested too deep" in res.output
    assert not out.exists()


def test_non_object_items_of_a_json_list_are_rejected_rows(tmp_path: Path, run_cli) -> None:
    src = tmp_path / "list.json"
    src.write_text(json.dumps([{**GOOD, "id": "good-0"}, 5, {**GOOD, "chosen": "x",
                                                             "id": "good-1"}]))
    out = tmp_path / "out"
    _ingest(run_cli, src, out)
    rej = _assert_only_hostile_rejected(out, "malformed_row")
    assert "list.json:1" in rej["reject_detail"] and "number" in rej["reject_detail"]


def _png_b64() -> tuple[bytes, str]:
    data = png_bytes("RGB", (12, 9))
    return data, base64.b64encode(data).decode()


@pytest.mark.parametrize("form", ["bytes_field", "bytes_field_mime_lines", "data_uri"])
def test_base64_image_text_is_decoded(tmp_path: Path, run_cli, form: str) -> None:
    data, b64 = _png_b64()
    image = {"bytes_field": {"bytes": b64, "path": None},
             "bytes_field_mime_lines": {"bytes": "\n".join(b64[i:i + 76]
                                                           for i in range(0, len(b64), 76))},
             "data_uri": f"data:image/png;base64,{b64}"}[form]
    src = write_jsonl(tmp_path / "in.jsonl", [{**GOOD, "image": image}])
    out = tmp_path / "out"
    _ingest(run_cli, src, out)
    (row,) = rows(out)
    im = row["images"][0]
    assert (im["bytes"], im["format"], im["width"], im["height"]) == (data, "PNG", 12, 9)


# -- item 6: an allowlist of image formats, a limit on image bytes ---------------------------------


def _eps() -> bytes:
    return (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"
            b"newpath 0 0 moveto 10 10 lineto stroke showpage\n%%EOF\n")


def _psd_like() -> bytes:
    header = b"\x00\x03" + b"\x00\x00\x00\x10" * 2 + b"\x00\x08\x00\x03"  # RGB 16x16
    return b"8BPS\x00\x01" + b"\x00" * 6 + header


def test_postscript_named_jpg_is_refused_and_never_reaches_ghostscript(
        tmp_path: Path, run_cli, monkeypatch) -> None:
    from PIL import EpsImagePlugin

    calls = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(EpsImagePlugin, "has_ghostscript", lambda: True)
    (tmp_path / "photo.jpg").write_bytes(_eps())
    (tmp_path / "layers.png").write_bytes(_psd_like())
    src = write_jsonl(tmp_path / "in.jsonl", [
        {**GOOD, "id": "file", "image": "photo.jpg"},
        {**GOOD, "id": "inline", "image": {"bytes": base64.b64encode(_eps()).decode()}},
        {**GOOD, "id": "psd", "image": "layers.png"},
        {**GOOD, "id": "ok", "image": {"bytes": base64.b64encode(jpeg_bytes()).decode()}},
    ])
    out = tmp_path / "out"
    _ingest(run_cli, src, out, "--image-root", tmp_path)
    assert_conserved(out)
    assert [r["source_id"] for r in rows(out)] == ["ok"]
    rej = {r["source_id"]: r for r in _rejected(out)}
    assert {k: r["reject_reason"] for k, r in rej.items()} == {
        "file": "unsupported_image_format", "inline": "unsupported_image_format",
        "psd": "unsupported_image_format"}
    assert "EPS" in rej["file"]["reject_detail"] and "PSD" in rej["psd"]["reject_detail"]
    assert calls == []


def test_mpo_from_a_camera_is_decoded(tmp_path: Path, run_cli) -> None:
    from PIL import Image

    frames = [Image.new("RGB", (24, 16), c) for c in ((200, 0, 0), (0, 200, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, format="MPO", save_all=True, append_images=frames[1:])
    src = write_jsonl(tmp_path / "in.jsonl", [
        {**GOOD, "image": {"bytes": base64.b64encode(buf.getvalue()).decode()}}])
    out = tmp_path / "out"
    _ingest(run_cli, src, out)
    (row,) = rows(out)
    assert row["images"][0]["format"] == "MPO"


def test_image_file_over_max_image_bytes_is_rejected_before_it_is_read(
        tmp_path: Path, run_cli, monkeypatch) -> None:
    huge = tmp_path / "huge.jpg"
    with open(huge, "wb") as fh:  # a sparse file: 1.5 GB on paper, nothing on disk
        fh.truncate(1_500_000_000)
    (tmp_path / "small.jpg").write_bytes(jpeg_bytes())
    src = write_jsonl(tmp_path / "in.jsonl", [{**GOOD, "id": "huge", "image": "huge.jpg"},
                                              {**GOOD, "id": "small", "image": "small.jpg"}])
    opened: list[str] = []
    real_open = open

    def spy(file, *a, **k):
        opened.append(str(file))
        return real_open(file, *a, **k)

    monkeypatch.setattr("builtins.open", spy)
    out = tmp_path / "out"
    _ingest(run_cli, src, out, "--image-root", tmp_path)
    monkeypatch.undo()
    assert_conserved(out)
    (rej,) = _rejected(out)
    assert (rej["source_id"], rej["reject_reason"]) == ("huge", "image_too_large")
    assert "--max-image-bytes" in rej["reject_detail"]
    assert os.path.realpath(huge) not in opened
    assert os.path.realpath(tmp_path / "small.jpg") in opened


def test_inline_image_over_max_image_bytes_is_rejected(tmp_path: Path, run_cli) -> None:
    data = jpeg_bytes()
    src = write_parquet_rows(tmp_path / "in.parquet", [{**GOOD, "image": data}])
    out = tmp_path / "out"
    _ingest(run_cli, src, out, "--max-image-bytes", str(len(data) - 1))
    (rej,) = _rejected(out)
    assert rej["reject_reason"] == "image_too_large"
    out2 = tmp_path / "out2"
    _ingest(run_cli, src, out2, "--max-image-bytes", str(len(data)))
    assert len(rows(out2)) == 1


def write_parquet_rows(path: Path, data: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(data), path)
    return path


# -- item 7: validation gaps ------------------------------------------------------------------


@pytest.mark.parametrize("score", ["NaN", "Infinity", "-Infinity", '"nan"', '"inf"', "1e999",
                                   '"lots"', "[1]"])
def test_non_finite_or_non_numeric_scores_are_invalid_score(tmp_path: Path, run_cli,
                                                            score: str) -> None:
    line = '{"prompt": "p", "chosen": "a", "rejected": "b", "id": "h", "cs": ' + score + "}"
    src = _between_good_rows(tmp_path / "in.jsonl", line)
    out = tmp_path / "out"
    _ingest(run_cli, src, out, "--map", "chosen_score=cs")
    rej = _assert_only_hostile_rejected(
        out, "malformed_row" if score in ('"lots"', "[1]") else "invalid_score")
    assert rej["reject_detail"]


def test_nan_score_in_csv_is_invalid_score(tmp_path: Path, run_cli) -> None:
    src = tmp_path / "in.csv"
    src.write_text("id,prompt,chosen,rejected,cs\ngood-0,p,a,b,0.5\nh,p,a,b,nan\n"
                   "good-1,p,c,d,1\n")
    out = tmp_path / "out"
    _ingest(run_cli, src, out, "--map", "chosen_score=cs")
    _assert_only_hostile_rejected(out, "invalid_score")


INVISIBLE = ["\u200b", "\u200b\u200c\u200d", "\ufeff", "\u2060 \u00a0", "\u202e\u200f", "\t\u3000"]


@pytest.mark.parametrize("text", INVISIBLE)
@pytest.mark.parametrize(("field", "reason"), [("prompt", "no_prompt"),
                                               ("chosen", "empty_response"),
                                               ("rejected", "empty_response")])
def test_invisible_only_text_is_empty(tmp_path: Path, run_cli, text: str, field: str,
                                      reason: str) -> None:
    src = _between_good_rows(tmp_path / "in.jsonl", json.dumps({**GOOD, field: text, "id": "h"}))
    out = tmp_path / "out"
    _ingest(run_cli, src, out)
    _assert_only_hostile_rejected(out, reason)


def test_visible_text_with_zero_width_characters_is_kept(tmp_path: Path, run_cli) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "\u200bhi", "chosen": "\ufeffa",
                                               "rejected": "b\u200d"}])
    out = tmp_path / "out"
    _ingest(run_cli, src, out)
    assert len(rows(out)) == 1


@pytest.mark.parametrize(("value", "type_name"), [(42, "int"), ({"text": "hi"}, "dict"),
                                                  (True, "bool"), (1.5, "float")])
def test_non_string_prompt_keeps_its_raw_value_and_names_its_type(
        tmp_path: Path, run_cli, value, type_name: str) -> None:
    src = _between_good_rows(tmp_path / "in.jsonl",
                             json.dumps({**GOOD, "prompt": value, "id": "h"}))
    out = tmp_path / "out"
    _ingest(run_cli, src, out)
    rej = _assert_only_hostile_rejected(out, "prompt_not_string")
    assert type_name in rej["reject_detail"]
    assert json.loads(rej["meta"])["raw_prompt"][0]["content"] == value


@pytest.mark.parametrize("flag", [("--max-pixels", "-5"), ("--max-pixels", "0"),
                                  ("--max-image-bytes", "-1"), ("--max-image-bytes", "0")])
def test_non_positive_limits_exit_2_before_reading(tmp_path: Path, run_cli, flag) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("not even json\n")  # reading it would fail differently
    out = tmp_path / "out"
    res = _ingest(run_cli, src, out, *flag, expect=2)
    _no_traceback(res)
    assert flag[0] in res.output and "positive" in res.output
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_missing_image_root_exits_2_before_reading(tmp_path: Path, run_cli) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("not even json\n")
    out = tmp_path / "out"
    res = _ingest(run_cli, src, out, "--image-root", tmp_path / "no-such-dir", expect=2)
    _no_traceback(res)
    assert "--image-root" in res.output and "no-such-dir" in res.output
    assert not out.exists() and not list(tmp_path.glob(".out*"))
    (tmp_path / "a-file").write_text("x")
    res = _ingest(run_cli, src, out, "--image-root", tmp_path / "a-file", expect=2)
    assert "no such folder" in res.output


@pytest.mark.parametrize(("name", "content"), [
    ("empty.jsonl", b""), ("empty.json", b""), ("blank.json", b"  \n\n "),
    ("blank.jsonl", b"\n \n"), ("empty.csv", b""), ("empty.jsonl.gz", gzip.compress(b"")),
    ("empty.json.gz", gzip.compress(b"")), ("list.json", b"[]"),
])
def test_an_empty_file_holds_no_rows(tmp_path: Path, run_cli, name: str,
                                     content: bytes) -> None:
    """The rule for every text format: an empty (or whitespace-only) file holds no rows."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / name).write_bytes(content)
    write_jsonl(tmp_path / "in" / "z.jsonl", [GOOD])
    out = tmp_path / "out"
    _ingest(run_cli, tmp_path / "in", out)
    m = assert_conserved(out)
    assert (m["rows_in"], m["rows_kept"]) == (1, 1)
    alone = tmp_path / "alone"
    _ingest(run_cli, tmp_path / "in" / name, alone)
    assert D.Dataset.open(alone).manifest["rows_in"] == 0


def test_a_csv_field_longer_than_csv_module_default_is_a_row(tmp_path: Path, run_cli) -> None:
    long_text = "word " * 60_000  # 300,000 characters; csv's default limit is 131,072
    src = tmp_path / "in.csv"
    with open(src, "w", newline="") as fh:
        import csv

        w = csv.writer(fh)
        w.writerow(["prompt", "chosen", "rejected"])
        w.writerow(["p", long_text, "short"])
    out = tmp_path / "out"
    _ingest(run_cli, src, out)
    (row,) = rows(out)
    assert row["chosen"] == long_text


# -- item 9 (files): corrupt gzip and parquet ----------------------------------------------------


def _lines(n: int) -> bytes:
    return "".join(json.dumps({**GOOD, "chosen": f"yes {i} " * 8}) + "\n"
                   for i in range(n)).encode()


def _assert_file_error(res, out: Path, tmp_path: Path, name: str) -> None:
    _no_traceback(res)
    assert res.exit_code == 2
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and name in errors[0], res.output
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_gzip_with_a_corrupt_deflate_block_exits_2_naming_the_file(tmp_path: Path,
                                                                     run_cli) -> None:
    data = bytearray(gzip.compress(_lines(3000), compresslevel=1))
    data[10] ^= 0xFF  # the first deflate block's header
    data[11] ^= 0xFF
    src = tmp_path / "corrupt.jsonl.gz"
    src.write_bytes(bytes(data))
    out = tmp_path / "out"
    res = _ingest(run_cli, src, out, expect=2)
    _assert_file_error(res, out, tmp_path, "corrupt.jsonl.gz")
    assert "gzip" in res.output


def test_truncated_gzip_exits_2_naming_the_file(tmp_path: Path, run_cli) -> None:
    data = gzip.compress(_lines(3000))
    src = tmp_path / "cut.json.gz"
    src.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    res = _ingest(run_cli, src, out, expect=2)
    _assert_file_error(res, out, tmp_path, "cut.json.gz")


def test_parquet_with_a_corrupt_data_page_exits_2_naming_the_file(tmp_path: Path,
                                                                    run_cli) -> None:
    src = tmp_path / "pages.parquet"
    table = pa.Table.from_pylist([{**GOOD, "chosen": f"answer number {i} " * 5}
                                  for i in range(3000)])
    pq.write_table(table, src, compression="zstd", row_group_size=1000)
    col = pq.ParquetFile(src).metadata.row_group(1).column(1)  # `chosen`, second row group
    data = bytearray(src.read_bytes())
    mid = col.data_page_offset + col.total_compressed_size // 2
    data[mid:mid + 64] = b"\xff" * 64  # a page body; the footer is intact
    src.write_bytes(bytes(data))
    assert pq.ParquetFile(src).metadata.num_rows == 3000
    out = tmp_path / "out"
    res = _ingest(run_cli, src, out, expect=2)
    _assert_file_error(res, out, tmp_path, "pages.parquet")
    assert "corrupt" in res.output


# -- issue 14 item 13: a gzip input's progress is in bytes, with an ETA --------------------------


def test_gzip_input_progress_counts_bytes_toward_the_file_size(tmp_path: Path,
                                                                monkeypatch) -> None:
    from rich.console import Console

    import curate.progress as P
    from curate.stages.ingest import ingest

    src = tmp_path / "big.jsonl.gz"
    src.write_bytes(gzip.compress(_lines(5000)))
    shown = io.StringIO()
    monkeypatch.setattr(P, "is_quiet", lambda: False)
    monkeypatch.setattr(P, "console", lambda: Console(file=shown, force_terminal=True,
                                                      width=200))
    ingest("generic", [str(src)], tmp_path / "out", chunk_size=100)
    text = shown.getvalue()
    size_kb = f"{os.path.getsize(src) / 1000:.1f}/{os.path.getsize(src) / 1000:.1f} kB"
    assert size_kb in text, text[-600:]  # done/total in bytes of the .gz, not rows/?
    assert "5,000 rows" in text
    assert "/?" not in text


def test_read_progress_moves_through_the_compressed_bytes(tmp_path: Path) -> None:
    from curate.sources.readers import ReadProgress, iter_records

    a = tmp_path / "a.jsonl.gz"  # incompressible text: the .gz is read in several blocks
    a.write_bytes(gzip.compress("".join(json.dumps({**GOOD, "chosen": os.urandom(100).hex()})
                                        + "\n" for _ in range(4000)).encode()))
    b = tmp_path / "b.jsonl"
    b.write_bytes(_lines(100))
    progress = ReadProgress.of([str(a), str(b)])
    assert progress.total == a.stat().st_size + b.stat().st_size
    seen = []
    for _ in iter_records([str(a), str(b)], progress=progress):
        seen.append(progress.done)
    assert seen == sorted(seen)
    assert 0 < seen[len(seen) // 4] < a.stat().st_size  # it moves during the .gz
    assert progress.done == progress.total


@pytest.mark.parametrize("field", ["model", "responses"])
def test_candidates_with_a_lone_surrogate_are_rejected(tmp_path: Path, run_cli,
                                                       field: str) -> None:
    hostile = {"model": '"\\ud800"', "responses": '["ok", "\\ud800 no"]'}[field]
    good = [json.dumps({"prompt": f"q{i}", "responses": ["a", "b"], "model": "m"})
            for i in range(2)]
    src = tmp_path / "in.jsonl"
    src.write_text(f'{good[0]}\n{{"prompt": "p", "responses": ["a", "b"], "{field}": '
                   f'{hostile}}}\n{good[1]}\n')
    out = tmp_path / "out"
    res = _ingest(run_cli, src, out, kind="candidates")
    _no_traceback(res)
    m = assert_conserved(out)
    assert (m["rows_in"], m["rows_kept"], m["rows_rejected"]) == (3, 2, 1)
    (rej,) = _rejected(out)
    assert rej["reject_reason"] == "invalid_unicode"


def test_every_later_decoder_keeps_the_allowlist(monkeypatch) -> None:
    """Stored bytes are decoded again by dedup's hashing, the model encoders and the
    report's thumbnails: a PostScript image that reached a folder some other way (a
    hand-made parquet) is refused there too, never handed to Ghostscript."""
    from PIL import EpsImagePlugin, UnidentifiedImageError

    from curate.hashing import load_gray
    from curate.models.encoding import decode_image
    from curate.report.thumbs import Thumbnails

    calls = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(EpsImagePlugin, "has_ghostscript", lambda: True)
    for decode in (load_gray, decode_image):
        with pytest.raises(UnidentifiedImageError):
            decode(_eps())
    assert Thumbnails()._make(_eps()) is None
    assert load_gray(jpeg_bytes()).mode == "L"  # an allowed format still decodes
    assert calls == []
