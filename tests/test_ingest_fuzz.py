"""Fuzz `curate ingest` with hostile JSON for every adapter kind (issue 13).

hypothesis writes random records (any JSON types, deep nesting, lone surrogates,
control and zero-width characters, huge strings, random bytes as images, inline and
as files) as JSON lines or a JSON list, and runs them through the CLI. Properties:
the exit code is 0, or 2 only for a file-level error (a .json too deep to parse, or
columns the kind needs that no readable record has), with one message naming the file;
no traceback; rows in = kept + rejected, every reject has a reason; kept rows hold
usable text.

A few examples per kind run by default; `-m slow` runs many more.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curate import dataset as D
from curate.sources import ADAPTERS
from curate.sources.base import lone_surrogate
from curate.stages.ingest_checks import is_blank
from tests.helpers import assert_conserved, png_bytes, rows

# every registered kind, plus candidates (its own stage, the same CLI command)
KINDS = sorted({*ADAPTERS, "candidates"})
CONFIGS = {"llava-critic": [None, "pointwise"]}  # adapters with more than one reading

# keys the adapters read (any of them), so records reach past "missing column"
KEYS = ["prompt", "chosen", "rejected", "image", "images", "id", "idx", "question",
        "conversations", "messages", "response", "human_ranking", "query", "subset", "source",
        "system", "responses", "model", "category", "ds_name", "origin_split", "image_path",
        "chosen_model", "value", "from", "role", "content", "bytes", "path"]

HOSTILE_CHARS = ["\ud800", "\udfff", "\udc80", "\x00", "\x1b", "\u200b", "\ufeff", "\u202e",
                 "\u3000", "\n\nHuman: ", "\n\nAssistant: ", "<image>", "[1]", "é", "中", "🙂",
                 "The better response: [2]", "Question: ", "The first response: ",
                 "The second response: ", "score: 7", "equally good"]
DEEP_FILE_ERROR = 100_000  # deeper than the JSON parser reaches (even with the raised
# recursion limit hypothesis runs tests under): a .json file's error
DEEP_READABLE = 150  # parses, but deeper than meta keeps


@dataclass(frozen=True)
class Deep:
    """A value nested `depth` lists deep, written into the file as text."""

    depth: int


@dataclass(frozen=True)
class ImageFile:
    """Bytes written to a file under --image-root; the record holds its path."""

    data: bytes


@dataclass(frozen=True)
class Inline:
    """Image bytes written inline, as base64 text in a {bytes} struct or a data URI."""

    data: bytes
    uri: bool


_text = st.one_of(
    st.text(max_size=20),
    st.lists(st.sampled_from(HOSTILE_CHARS) | st.text(max_size=3), max_size=6).map("".join),
    st.builds(lambda c, n: c * n, st.sampled_from(["x", "é", "\u200b", "ab "]),
              st.integers(20_000, 200_000)),
)
_image_bytes = st.one_of(
    st.binary(max_size=64),
    st.just(png_bytes("RGB", (8, 6))),
    st.just(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 1 1\nshowpage\n"),
    st.builds(lambda d, n: d[:n], st.just(png_bytes("RGB", (40, 30))), st.integers(8, 120)),
)
_image = st.one_of(
    st.builds(ImageFile, _image_bytes),
    st.builds(Inline, _image_bytes, st.booleans()),
    st.sampled_from(["missing.png", "../outside.png", "/etc/passwd", "a\x00b.png",
                     "x" * 5000, "\ud800.png", ""]),
)
_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True), _text,
    st.builds(Deep, st.sampled_from([DEEP_READABLE, DEEP_FILE_ERROR])),
)
_value = st.recursive(
    _leaf,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.sampled_from(KEYS) | _text, inner, max_size=3)),
    max_leaves=8,
)
_message = st.dictionaries(  # a chat turn, well or badly formed
    st.sampled_from(["from", "role", "value", "content"]),
    st.sampled_from(["human", "gpt", "user", "assistant"]) | _text | _leaf, max_size=3)
_field = st.one_of(_value, _text, st.lists(_message, max_size=4), _image,
                   st.lists(_image, max_size=2), st.lists(_text, max_size=3),
                   st.fixed_dictionaries({"bytes": _image_bytes.map(
                       lambda b: base64.b64encode(b).decode()), "path": st.none()}))
_record = st.one_of(
    st.dictionaries(st.sampled_from(KEYS), _field, max_size=8),
    st.dictionaries(st.sampled_from(KEYS), _field, max_size=8),
    _value,  # sometimes not an object at all
)


class _Writer:
    """Serialises records, writing image files under `root` and deep values as text."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files = 0

    def default(self, obj: object) -> object:
        if isinstance(obj, Deep):
            return f"__DEEP_{obj.depth}__"
        if isinstance(obj, ImageFile):
            self.files += 1
            name = f"img{self.files}.jpg"
            (self.root / name).write_bytes(obj.data)
            return name
        if isinstance(obj, Inline):
            b64 = base64.b64encode(obj.data).decode()
            return f"data:image/jpeg;base64,{b64}" if obj.uri else {"bytes": b64}
        raise TypeError(type(obj).__name__)

    def dumps(self, obj: object) -> str:
        text = json.dumps(obj, default=self.default)
        return re.sub(r'"__DEEP_(\d+)__"', lambda m: "[" * int(m[1]) + "]" * int(m[1]), text)


REASON = re.compile(r"^[a-z_]+$")


def check_ingest(run_cli, tmp: Path, kind: str, config: str | None, records: list,
                 as_json: bool) -> None:
    """Write `records`, ingest them through the CLI, and check the properties."""
    writer = _Writer(tmp)
    lines = [writer.dumps(r) for r in records]
    src = tmp / ("rows.json" if as_json else "rows.jsonl")
    src.write_text(("[" + ",\n".join(lines) + "]") if as_json else "\n".join(lines) + "\n",
                   encoding="utf-8")
    file_error = as_json and f"[{'[' * (DEEP_FILE_ERROR - 1)}" in src.read_text()
    out = tmp / "out"
    extra = ["--config", config] if config else []
    res = run_cli("ingest", kind, src, "--out", out, "--image-root", tmp, "--workers", "1",
                  *extra, expect=None)
    assert "Traceback" not in res.output, res.output[-3000:]
    if file_error:
        assert res.exit_code == 2, res.output[-2000:]
        errors = [line for line in res.output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and src.name in errors[0], res.output[-2000:]
        assert not out.exists()
        return
    if res.exit_code == 2 and "missing column(s)" in res.output:
        # a schema error, not N bad rows: the named columns are in no record of the file
        errors = [line for line in res.output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and src.name in errors[0], res.output[-2000:]
        named = re.findall(r"'([^']+)'", errors[0].split("missing column(s)", 1)[1].split(";")[0])
        keys = {k for r, line in zip(records, lines, strict=True)
                if isinstance(r, dict) and "[" * DEEP_FILE_ERROR not in line for k in r}
        assert named and not keys & set(named), (named, keys)
        assert not out.exists()
        return
    assert res.exit_code == 0, res.output[-2000:]
    m = assert_conserved(out)
    assert m["rows_in"] == len(records)
    rejected = rows(out, D.REJECTED)
    for r in rejected:
        assert REASON.match(r["reject_reason"]), r["reject_reason"]
        assert r["reject_detail"], r["reject_reason"]
    for r in rows(out):
        texts = r["responses"] if kind == "candidates" else [r["chosen"], r["rejected"]]
        assert all(isinstance(t, str) and not is_blank(t) for t in texts)
        texts += [m["content"] for m in r["prompt"]] + [r["source_id"], r["meta"] or ""]
        assert not any(lone_surrogate(t) for t in texts)
        assert any(m["role"] == "user" and not is_blank(m["content"]) for m in r["prompt"])


def _fuzz_body(run_cli, tmp_path_factory, kind: str, data: st.DataObject) -> None:
    config = data.draw(st.sampled_from(CONFIGS.get(kind, [None])), label="config")
    records = data.draw(st.lists(_record, min_size=1, max_size=8), label="records")
    as_json = data.draw(st.booleans(), label="as_json")
    check_ingest(run_cli, tmp_path_factory.mktemp("fuzz"), kind, config, records, as_json)


_SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                       HealthCheck.too_slow,
                                                       HealthCheck.data_too_large])


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=4, **_SETTINGS)
@given(data=st.data())
def test_ingest_survives_hostile_records(run_cli, tmp_path_factory, kind: str, data) -> None:
    _fuzz_body(run_cli, tmp_path_factory, kind, data)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=80, **_SETTINGS)
@given(data=st.data())
def test_ingest_survives_hostile_records_many(run_cli, tmp_path_factory, kind: str,
                                              data) -> None:
    _fuzz_body(run_cli, tmp_path_factory, kind, data)


def test_the_fuzz_covers_every_registered_kind() -> None:
    from curate.sources import kinds_help

    HELP_KINDS = kinds_help()
    assert set(ADAPTERS) <= set(KINDS)
    for kind in KINDS:
        assert kind in HELP_KINDS
