"""The report's model and training-mix sections, checked against the files they come from.

Most checks use the full demo run (it writes `07-rm/metrics.json` and `08-eval.json`),
built once per session and shared with the browser tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from curate import dataset as D
from curate.report import build_report
from curate.report.collect import collect
from curate.report.composition import collect_composition
from curate.report.model import FILTER_FACT_KEYS, collect_model, filter_facts
from curate.report.model_html import pooled_oof
from curate.report.pipeline import load_run
from curate.report.svg import KEPT_COLOR, REASON_HUES, Series, histogram, reason_fill
from tests.report_support import copy_run, demo_run, shared


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared(tmp_path_factory, "demo-run", demo_run)


@pytest.fixture(scope="module")
def run(demo_root: Path):
    return load_run([demo_root])


def test_benchmarks_equal_the_eval_report(demo_root: Path, run) -> None:
    report = json.loads((demo_root / "08-eval.json").read_text())
    model = collect_model(run, [demo_root])
    got = {b.name: b for b in model.benchmarks}
    assert set(got) == set(report)
    for name, rep in report.items():
        rows = {(r.kind, r.name): r for r in got[name].rows}
        overall = rows[("overall", "overall")]
        assert overall.accuracy == rep["overall"]["accuracy"]
        assert overall.pairs == rep["overall"]["pairs"]
        assert overall.ci95 == tuple(rep["overall"]["accuracy_ci95"])
        for kind, key in (("section", "sections"), ("group", "groups"),
                          ("category", "categories"), ("subset", "subsets")):
            for sub, rec in (rep.get(key) or {}).items():
                acc = rec["accuracy"] if isinstance(rec, dict) else rec
                assert rows[(kind, sub)].accuracy == acc
        if "macro_average" in rep:
            assert rows[("macro average", "macro average")].accuracy == rep["macro_average"]


def test_training_curves_and_per_source_accuracy(demo_root: Path, run) -> None:
    metrics = json.loads((demo_root / "07-rm" / "metrics.json").read_text())
    (t,) = collect_model(run, [demo_root]).trainings
    assert [p.step for p in t.curve] == [h["step"] for h in metrics["history"]]
    assert [p.eval_loss for p in t.curve] == [h["eval"]["loss"] for h in metrics["history"]]
    assert [p.train_loss for p in t.curve] == [h["train_loss"] for h in metrics["history"]]
    assert {p.stage for p in t.curve} == {s["name"] for s in metrics["stages"]}
    assert t.by_source == metrics["eval"]["by_source"]
    assert t.final["accuracy"] == metrics["eval"]["accuracy"]


def test_filter_facts_read_defensively(demo_root: Path, tmp_path: Path) -> None:
    copy = copy_run(demo_root, tmp_path / "run")
    reward = next(p for p in copy.iterdir() if p.name.endswith("-reward"))
    manifest = json.loads((reward / "manifest.json").read_text())
    folds = manifest["facts"]["reward"]["kfold"]
    n = sum(f["scored_pairs"] for f in folds)
    assert pooled_oof(folds) == (n, pytest.approx(
        sum(f["scored_pairs"] * f["oof_accuracy"] for f in folds) / n))
    # the filter's quality record (curate.scoring.gate) is shown fact by fact, with its key
    quality = manifest["facts"]["reward"]["quality"]
    f = next(x for x in filter_facts(load_run([copy])) if x.folder == reward.name)
    facts = {label: (key, value) for label, key, value in f.facts}
    labels = {label: keys[0] for label, keys in FILTER_FACT_KEYS}
    for label, key in labels.items():
        if quality.get(key) is not None:
            assert facts[label] == (key, quality[key])
    assert facts["abstained (too unreliable to filter)"][1] is quality["abstained"]
    quality["estimated_noise_rate"] = 0.125
    (reward / "manifest.json").write_text(json.dumps(manifest))
    html = build_report([copy], tmp_path / "r.html").read_text()
    assert "12.5%" in html and "estimated_noise_rate" in html


def test_composition_equals_the_shard_manifest(demo_root: Path, run) -> None:
    shard = D.Dataset.open(demo_root / "06-shard")
    m = shard.manifest
    c = collect_composition(run)
    assert c.folders == ["06-shard"] and c.rows == m["rows_kept"]
    for split, facts in m["splits"].items():
        assert sum(n for k, n in c.mix.items() if k[0] == split) == facts["rows"]
        assert sum(n for k, n in c.mix.items()
                   if k[0] == split and k[1] == "multimodal") == facts["multimodal_rows"]
        for src, n in facts["by_source"].items():
            assert sum(v for k, v in c.mix.items() if k[0] == split and k[2] == src) == n
    tokens = {t.split: t for t in c.shard_tokens}
    for split in m["splits"]:
        est = [s["est_tokens"] for s in m["shards"] if s["split"] == split]
        assert (tokens[split].tokens_min, tokens[split].tokens_max) == (min(est), max(est))
        assert tokens[split].shards == len(est)
    rows = shard.read(D.KEPT, columns=["chosen", "rejected", "images", "stage"]).to_pylist()
    assert sorted(c.chosen_len.tolist()) == sorted(float(len(r["chosen"])) for r in rows)
    longer = np.mean([len(r["chosen"]) > len(r["rejected"]) for r in rows])
    assert c.chosen_longer == pytest.approx(longer)
    assert sorted(c.image_sides.tolist()) == sorted(
        float(max(i["width"], i["height"])) for r in rows for i in r["images"])
    assert sum(c.stages.values()) == len(rows)
    assert {k[1] for k in c.stages} == {r["stage"] for r in rows}


def test_model_files_named_on_the_command_line(demo_root: Path, tmp_path: Path,
                                               run_cli) -> None:
    """Dataset folders named one by one: the model files come from --eval / --model."""
    folders = [demo_root / n for n in ("05-reward", "06-shard")]
    out = tmp_path / "r.html"
    run_cli("report", *folders, "--out", out, "--eval", demo_root / "08-eval.json",
            "--model", demo_root / "07-rm")
    html = out.read_text()
    assert 'data-benchmark="vl-rewardbench"' in html and 'data-training="07-rm"' in html
    bad = run_cli("report", *folders, "--out", tmp_path / "x.html", "--model", tmp_path,
                  expect=2)
    assert "metrics.json" in bad.output and not (tmp_path / "x.html").exists()


def test_a_run_without_model_files_says_so(demo_root: Path, tmp_path: Path) -> None:
    data = collect(load_run([demo_root / "01-ingest-rlaif-v"]))
    # found beside the folder: the demo's model files are in its parent
    assert data.model.benchmarks
    copy = tmp_path / "alone" / "01-ingest-rlaif-v"
    copy.parent.mkdir()
    import shutil

    shutil.copytree(demo_root / "01-ingest-rlaif-v", copy)
    html = build_report([copy], tmp_path / "r.html").read_text()
    assert "No model files beside these folders" in html


# -- layout pieces ---------------------------------------------------------------------------------
def test_reason_fills_are_distinct_and_not_the_kept_green() -> None:
    fills = [reason_fill(i) for i in range(30)]
    assert len(set(fills[:2 * len(REASON_HUES) + len(REASON_HUES)])) == 3 * len(REASON_HUES)
    assert KEPT_COLOR not in fills
    hues = [tuple(int(h[i:i + 2], 16) for i in (1, 3, 5)) for h in REASON_HUES]
    closest = min(sum((a - b) ** 2 for a, b in zip(x, y, strict=True)) ** 0.5
                  for i, x in enumerate(hues) for y in hues[i + 1:])
    assert closest > 60  # no two nearly-equal teals


def test_a_constant_histogram_says_so() -> None:
    svg = histogram([Series("hits", np.zeros(40), "#000")], title="t", xlabel="x")
    assert "all 40 values are 0" in svg and 'class="bin"' not in svg
