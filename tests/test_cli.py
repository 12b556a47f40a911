"""The CLI as a user meets it: help text, info, demo, version."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from curate.cli import app
from curate.stages.ingest import ingest
from tests.helpers import assert_conserved, write_jsonl


def _commands() -> list[str]:
    import typer.main

    return sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def test_every_command_has_help_with_an_example(run_cli) -> None:
    names = _commands()
    assert {"ingest", "info", "demo"} <= set(names)
    for name in names:
        res = run_cli(name, "--help")
        assert "Example" in res.output, f"curate {name} --help shows no example"


def test_help_imports_no_model_library() -> None:
    """`curate --help` stays instant because no model library is imported to build it."""
    code = ("import sys; from curate.cli import app; "
            "print([m for m in ('torch','transformers','sentence_transformers','faiss','datasets',"
            "'ray') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_version(run_cli) -> None:
    assert run_cli("--version").output.startswith("curate ")


def test_info_json_counts_by_source_and_reason(tmp_path: Path, run_cli) -> None:
    src = write_jsonl(tmp_path / "x.jsonl", [
        {"prompt": "a", "chosen": "b", "rejected": "c"},
        {"prompt": "a", "chosen": "", "rejected": "c"},
        {"prompt": "", "chosen": "b", "rejected": "c"},
    ])
    ingest("generic", [str(src)], tmp_path / "d", source="mine")
    res = run_cli("info", tmp_path / "d", "--json")
    info = json.loads(res.output)
    assert info["kept_by_source"] == {"mine": 1}
    assert info["rejected_by_source_and_reason"] == {"mine/empty_response": 1, "mine/no_prompt": 1}
    table = run_cli("info", tmp_path / "d").output
    assert "empty_response: 1" in table and "mine" in table


def test_demo_runs_end_to_end(tmp_path: Path, run_cli) -> None:
    out = tmp_path / "demo"
    res = run_cli("demo", "--out", out)
    assert "Results are in" in res.output
    folders = [p for p in sorted(out.glob("[0-9][0-9]-*")) if (p / "manifest.json").is_file()]
    assert len(folders) == 9  # four ingests, dedup, similar, decontam, reward, shard
    for folder in folders:
        assert_conserved(folder)
    ingested = {p.name for p in out.glob("01-ingest-*")}
    assert ingested == {"01-ingest-rlaif-v", "01-ingest-sharegpt", "01-ingest-hh-rlhf",
                        "01-ingest-llava-critic"}
    reasons = {p.name: json.loads((p / "manifest.json").read_text())["rejected_by_reason"]
               for p in folders if not p.name.startswith("01-")}
    # the planted problems, each caught by its stage
    assert reasons["02-dedup"]["exact_duplicate"] == 2
    assert reasons["02-dedup"]["near_duplicate_image"] >= 5  # 3 re-encoded + 2 resized copies
    assert reasons["03-similar"] == {"similar_prompt": 1}
    assert reasons["04-decontam"] == {"contaminated": 1}
    assert {"05-reward", "06-shard"} <= set(reasons)
    assert (out / "07-rm" / "metrics.json").is_file()
    evaluation = json.loads((out / "08-eval.json").read_text())
    assert evaluation["rewardbench"]["overall"]["pairs"] == 4
    assert "<html" in (out / "report.html").read_text()[:500].lower()
    again = run_cli("demo", "--out", out)
    assert "up to date" in again.output
