"""Ingest part by part on every engine: JSON lines files cut into line spans read alike."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curate import dataset as D
from curate.engine import get_engine
from curate.sources.readers import jsonl_spans, read_file, read_jsonl_span
from curate.stages.ingest import ingest
from tests.helpers import assert_conserved, jpeg_bytes, rows

LINE = st.one_of(
    st.dictionaries(st.sampled_from(["a", "b", "ü"]), st.text(max_size=8), max_size=2)
    .map(json.dumps),
    st.sampled_from(["", "  ", "[1, 2]", "{not json"]),
)


@settings(max_examples=60, deadline=None)
@given(lines=st.lists(LINE, max_size=30), crlf=st.booleans(), final=st.booleans(),
       per_span=st.integers(1, 12), span_bytes=st.integers(1, 400))
def test_spans_read_the_same_records_as_the_whole_file(
        tmp_path_factory: pytest.TempPathFactory, lines: list[str], crlf: bool, final: bool,
        per_span: int, span_bytes: int) -> None:
    path = tmp_path_factory.mktemp("spans") / "a.jsonl"
    end = "\r\n" if crlf else "\n"
    path.write_bytes((end.join(lines) + (end if final else "")).encode())

    def records(read):  # noqa: ANN001, ANN202 - (index, data, problem) or the error's text
        try:
            return [(r.index, r.data, r.problem) for r in read()]
        except Exception as exc:  # noqa: BLE001 - a bad line must fail alike
            return str(exc)

    spans = jsonl_spans(str(path), per_span, span_bytes)
    assert spans is not None and spans[0].start == 0 and spans[-1].end == path.stat().st_size
    assert all(a.end == b.start for a, b in zip(spans, spans[1:], strict=False))
    whole = records(lambda: read_file(str(path)))
    got = records(lambda: [r for s in spans for r in read_jsonl_span(str(path), s)])
    assert got == whole


def test_a_file_with_lone_cr_line_ends_or_gzip_is_read_whole(tmp_path: Path) -> None:
    cr = tmp_path / "cr.jsonl"
    cr.write_bytes(b'{"a": 1}\r{"a": 2}\r')
    assert jsonl_spans(str(cr), 1, 1) is None
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_bytes(b'{"a": 1}\r\n{"a": 2}\r{"a": 3}\n')
    assert jsonl_spans(str(mixed), 1, 1) is None
    assert jsonl_spans(str(tmp_path / "x.jsonl.gz"), 1, 1) is None


def _pairs(path: Path, n: int) -> Path:
    """`n` lines: the last 3 repeat lines 1-3 (the same pair ids), every 11th has an
    empty chosen response, every 4th an image."""
    img = base64.b64encode(jpeg_bytes()).decode()
    recs = [{"id": f"r{i}", "prompt": f"question {i}", "chosen": f"good {i}" if i % 11 else "",
             "rejected": f"bad {i}", "image": img if i % 4 == 0 else None}
            for i in range(n - 3)]
    path.write_text("".join(json.dumps(r) + "\n" for r in [*recs, *recs[1:4]]))
    return path


@pytest.mark.parametrize("workers", [1, 2])
def test_a_json_lines_file_in_parts_gives_the_rows_of_one_part(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int) -> None:
    """The same kept and rejected rows, in the same order (repeated ids settled across
    parts in input order), whatever the parts and the workers."""
    src = _pairs(tmp_path / "in.jsonl", 60)
    whole = tmp_path / "whole"
    ingest("generic", [str(src)], whole, engine=get_engine("local", workers=1))
    monkeypatch.setattr("curate.stages.ingest_parts.ROWS_PER_PART", 7)
    parts = tmp_path / f"parts{workers}"
    m = ingest("generic", [str(src)], parts, engine=get_engine("local", workers=workers))
    assert_conserved(parts)
    kept_files = [f for f in m["files"] if f.startswith(f"{D.KEPT}/")]
    assert len(kept_files) == 9  # 60 lines in spans of 7
    for part in (D.KEPT, D.REJECTED):
        assert [r["pair_id"] for r in rows(parts, part)] == [
            r["pair_id"] for r in rows(whole, part)], part
    reasons = D.read_manifest(parts)["rejected_by_reason"]
    assert reasons == D.read_manifest(whole)["rejected_by_reason"]
    assert reasons["duplicate_pair_id"] == 3 and reasons["empty_response"] == 6


def test_the_parts_share_out_every_stored_byte(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The progress bar's bytes: the parts' shares add up to the input files' sizes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from curate.pipeline.fragment_writes import WriteTarget
    from curate.sources import AdapterOptions, make_adapter
    from curate.stages.ingest_parts import plan_parts
    from curate.stages.ingest_rows import IngestOptions

    monkeypatch.setattr("curate.stages.ingest_parts.ROWS_PER_PART", 7)
    lines = _pairs(tmp_path / "a.jsonl", 40)
    table = pa.table({"prompt": [f"q{i}" for i in range(50)], "chosen": ["a"] * 50,
                      "rejected": ["b"] * 50})
    pq.write_table(table, tmp_path / "b.parquet", row_group_size=5)
    inputs = [str(lines), str(tmp_path / "b.parquet")]
    parts = plan_parts(inputs, make_adapter("generic", AdapterOptions()), IngestOptions(),
                       WriteTarget(str(tmp_path / "out")), 64)
    assert len(parts) == 6 + 5  # 40 lines by 7, 10 row groups of 5 by 2
    assert sum(p.nbytes for p in parts) == sum(Path(i).stat().st_size for i in inputs)
