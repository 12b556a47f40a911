"""The registries are the only lists: a throwaway source adapter and a throwaway filter
stage, registered for the length of a test and nothing else edited, reach every place
that lists adapters or stages (issue 15 item 6).

The adapter (`test-lines`: records of `q`, `good`, `bad`) shows in `curate ingest --help`
and ingests through the CLI with its rows conserved. The stage (`wordfilter`: rejects a
pair whose prompt holds a word, reason `has_word`) runs through `run_filter_stage` under
the strict reason check, is in the demo's plan, and its reason shows in `curate report`,
`curate explain`, `curate check` and the README's reason table.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from curate import dataset as D
from curate.pipeline.runner import STAGES, Decisions, all_stages, run_filter_stage, temporary_stage
from curate.reasons import REASONS, Reason, markdown_table
from curate.registry import Registry
from curate.sources import ADAPTERS, all_kinds
from curate.sources.base import Adapter, RawPair, record_id, user
from curate.sources.readers import Record
from tests.helpers import assert_conserved, rows, write_jsonl

WORD = "banana"


class Lines(Adapter):
    """A made-up source format: {"q": prompt, "good": chosen, "bad": rejected}."""

    kind = "test-lines"
    default_source = "test-lines"

    def convert(self, record: Record) -> RawPair:
        d = record.data
        return RawPair(source_id=record_id(record, "id"), prompt=user(d.get("q")),
                       chosen=d.get("good"), rejected=d.get("bad"))


@dataclass(frozen=True)
class WordConfig:
    word: str = WORD


def wordfilter(inputs: list[Any], out: Any, cfg: WordConfig, *, engine: Any = None,
               force: bool = False) -> dict[str, Any]:
    """Reject the pairs whose prompt holds cfg.word (has_word)."""
    from curate.engine import get_engine
    from curate.report.pipeline import user_text

    def decide(keys: pa.Table) -> Decisions:
        hits = [cfg.word in user_text(p).lower() for p in keys["prompt"].to_pylist()]
        return Decisions(pa.table({
            "pair_id": keys["pair_id"],
            "reject_reason": pa.array(["has_word" if h else None for h in hits], pa.string()),
            "reject_detail": pa.array([f"the prompt says {WORD}" if h else None for h in hits],
                                      pa.string()),
        }))

    return run_filter_stage("wordfilter", inputs, out, {"word": cfg.word}, annotate=None,
                            annotate_columns=["prompt"], decide=decide,
                            engine=engine or get_engine("local", workers=1), force=force)


@pytest.fixture
def registered() -> Iterator[None]:
    """The throwaway adapter and stage, registered for one test only."""
    reason = Reason(("wordfilter",), f"the prompt mentions {WORD}", "the word")
    with ADAPTERS.temporarily(Lines.kind, Lines), \
            temporary_stage("wordfilter", 45, filter=True, run=wordfilter, config=WordConfig,
                            reasons={"has_word": reason}):
        yield
    assert Lines.kind not in ADAPTERS and "wordfilter" not in STAGES
    assert "has_word" not in REASONS


def test_a_registry_is_ordered_refuses_a_second_entry_and_undoes_a_temporary_one() -> None:
    r: Registry[int] = Registry("number")
    r.add("b", 2, order=20)
    r.add("a", 1, order=10)
    r.add("c", 3, order=20)
    assert list(r) == ["a", "b", "c"] and r["c"] == 3 and len(r) == 3
    with pytest.raises(ValueError, match="number 'a' is registered twice"):
        r.add("a", 5)
    with r.temporarily("z", 26, order=15):
        assert list(r) == ["a", "z", "b", "c"]
    assert "z" not in r


def test_the_builtin_registries_list_what_they_did() -> None:
    assert all_kinds() == ["rlaif-v", "llava-critic", "skywork-pref", "hh-rlhf", "sharegpt",
                           "trl", "rewardbench", "vl-rewardbench", "generic", "candidates"]
    assert list(all_stages()) == ["ingest", "dedup", "similar", "decontam", "reward",
                                  "generate", "pairs", "shard"]
    from curate.recipes.demo import main_line

    assert main_line() == [("dedup", "02-dedup"), ("similar", "03-similar"),
                           ("decontam", "04-decontam"), ("reward", "05-reward")]


def test_a_new_adapter_and_stage_reach_every_list(registered: None, tmp_path: Path,
                                                  run_cli) -> None:
    # the adapter: in --help and in the error for an unknown KIND, and it ingests
    assert Lines.kind in " ".join(run_cli("ingest", "--help").output.split())
    assert Lines.kind in run_cli("ingest", "nosuch", tmp_path / "x", "--out", tmp_path / "o",
                                 expect=2).output
    src = write_jsonl(tmp_path / "raw.jsonl", [
        {"id": i, "q": q, "good": f"A careful answer {i}.", "bad": f"No idea {i}."}
        for i, q in enumerate(["Is a banana a berry?", "How tall is Everest?",
                               "Why do bananas curve?", "What is a prime number?"])])
    ingested = tmp_path / "01-ingest"
    run_cli("ingest", Lines.kind, src, "--out", ingested, "--workers", "1", "--quiet")
    m = assert_conserved(ingested)
    assert (m["rows_in"], m["rows_kept"]) == (4, 4)
    assert {r["source"] for r in rows(ingested)} == {Lines.kind}

    # the stage: in the demo's plan after decontam, and it runs under the strict reason check
    from curate.recipes.demo import main_line

    assert [f for _, f in main_line()] == ["02-dedup", "03-similar", "04-decontam",
                                           "04x1-wordfilter", "05-reward"]
    filtered = tmp_path / "02-wordfilter"
    run = STAGES["wordfilter"].run
    assert run is not None
    m = run([ingested], filtered, WordConfig())
    assert_conserved(filtered)
    assert m["rejected_by_reason"] == {"has_word": 2}
    assert STAGES["wordfilter"].reasons == ["has_word"]
    assert "| `has_word` | wordfilter |" in markdown_table()

    # report, explain and check show it with no edit to them
    html = tmp_path / "report.html"
    run_cli("report", tmp_path, "--out", html)
    assert "has_word" in html.read_text() and "wordfilter" in html.read_text()
    pid = D.Dataset.open(filtered).read(D.REJECTED, columns=["pair_id"])["pair_id"][0].as_py()
    out = run_cli("explain", pid, tmp_path).output
    assert "wordfilter" in out and "has_word" in out and "rejected" in out
    explained = json.loads(run_cli("explain", pid, tmp_path, "--json").output)
    assert explained["visits"][-1]["reason"] == "has_word"
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - conservation\n  - rule: max_reject_fraction\n    max: 0.25\n")
    res = run_cli("check", tmp_path, "--rules", rules, "--format", "json", expect=1)
    results = {r["name"]: r for r in json.loads(res.output)["results"]}
    assert results["conservation"]["passed"]
    assert results["max_reject_fraction"]["offending"] == [
        "02-wordfilter: has_word rejected 2/4 = 50.0%"]
