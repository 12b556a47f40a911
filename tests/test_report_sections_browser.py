"""The training-mix and model sections and the layout, as Chromium renders the demo's report.

The numbers read back from the rendered page are compared with the files they
come from: the shard manifest, `07-rm/metrics.json` and `08-eval.json`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from curate.dataset import read_manifest
from tests.test_report_browser import Chromium, require_chromium


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from curate.report import build_report
    from tests.report_support import demo_run, shared

    root = shared(tmp_path_factory, "demo-run", demo_run)
    return root, build_report([root], tmp_path_factory.mktemp("sections") / "report.html")


@pytest.fixture(scope="module")
def page(request: pytest.FixtureRequest):
    binary = require_chromium()
    _, report = request.getfixturevalue("demo")
    browser = Chromium(binary, width=1400, height=1000)
    try:
        browser.load(report.resolve().as_uri())
        yield browser
    finally:
        browser.close()


def rows(page: Chromium, selector: str) -> list[list[str]]:
    """The body cells of the table matched by `selector`, as text."""
    return json.loads(page.evaluate(
        f"JSON.stringify(Array.from(document.querySelectorAll({json.dumps(selector)} + "
        "' tbody tr')).map(r => Array.from(r.cells).map(c => c.textContent.trim())))"))


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def test_new_sections_render_without_errors(page: Chromium) -> None:
    assert page.evaluate("document.body.getAttribute('data-ready')") == "yes"
    assert page.problems() == []
    info: dict[str, Any] = json.loads(page.evaluate("""JSON.stringify(Object.fromEntries(
        ['mix', 'model'].map(id => { const s = document.getElementById(id);
            return [id, {svgs: s.querySelectorAll('svg').length, text: s.textContent.length,
                         height: s.getBoundingClientRect().height}]; })))"""))
    assert info["mix"]["svgs"] >= 1 and info["mix"]["text"] > 300
    assert info["model"]["svgs"] >= 2 and info["model"]["text"] > 300  # loss and accuracy


def test_benchmark_tables_equal_the_eval_report(page: Chromium, demo) -> None:
    report = json.loads((demo[0] / "08-eval.json").read_text())
    for name, rep in report.items():
        shown = {(r[0], r[1]): r for r in rows(page, f'[data-benchmark="{name}"] table')}
        overall = shown[("overall", "overall")]
        lo, hi = rep["overall"]["accuracy_ci95"]
        assert overall[2:6] == [pct(rep["overall"]["accuracy"]),
                                f"{100 * lo:.1f}–{100 * hi:.1f}%",
                                str(rep["overall"]["correct"]), str(rep["overall"]["pairs"])]
        for kind, key in (("group", "groups"), ("category", "categories"),
                          ("section", "sections")):
            for sub, rec in (rep.get(key) or {}).items():
                acc = rec["accuracy"] if isinstance(rec, dict) else rec
                assert shown[(kind, sub)][2] == pct(acc)


def test_training_numbers_equal_the_metrics(page: Chromium, demo) -> None:
    metrics = json.loads((demo[0] / "07-rm" / "metrics.json").read_text())
    by_source = {r[0]: r[1:] for r in rows(page, "table.by-source")}
    assert by_source == {s: [str(v["pairs"]), pct(v["accuracy"])]
                         for s, v in metrics["eval"]["by_source"].items()}
    (final,) = rows(page, "table.final-eval")
    assert final[:2] == [str(metrics["eval"]["pairs"]), pct(metrics["eval"]["accuracy"])]
    dots = page.evaluate("document.querySelectorAll('[data-curve=\"loss\"] circle').length")
    assert dots == 2 * len(metrics["history"])  # a train and an eval point per eval step
    stages = [r[0] for r in rows(page, "table.stages")]
    assert stages == [s["name"] for s in metrics["stages"]]
    facts = page.evaluate("document.querySelector('table.filter-facts').textContent")
    assert "agreement with the labels (out of fold)" in facts and "oof_accuracy" in facts


def test_training_mix_equals_the_shard_manifest(page: Chromium, demo) -> None:
    m = read_manifest(demo[0] / "06-shard")
    heads = json.loads(page.evaluate("JSON.stringify(Array.from(document.querySelectorAll("
                                     "'table.mix thead th')).map(h => h.textContent))"))
    mix = [dict(zip(heads, r, strict=True)) for r in rows(page, "table.mix")]
    assert sum(int(r["rows"]) for r in mix) == m["rows_kept"]
    for split, facts in m["splits"].items():
        cols = [h for h in heads if h.startswith(f"{split} ")]
        assert sum(int(r[h]) for r in mix for h in cols) == facts["rows"]
        assert sum(int(r.get(f"{split} multimodal", 0)) for r in mix) == facts["multimodal_rows"]
        for src, n in facts["by_source"].items():
            assert sum(int(r[h]) for r in mix if r["source"] == src for h in cols) == n
    split_rows = {(r[0], r[1]): int(r[2]) for r in rows(page, "table.split-modality")}
    assert sum(split_rows.values()) == m["rows_kept"]
    tokens = {r[0]: r for r in rows(page, "table.shard-tokens")}
    for split in m["splits"]:
        est = [s["est_tokens"] for s in m["shards"] if s["split"] == split]
        assert tokens[split][1] == str(len(est))
        assert (tokens[split][3], tokens[split][5]) == (str(min(est)), str(max(est)))
    assert page.evaluate("document.querySelector('.length-bias') !== null")


def test_layout_fills_the_width_and_packs_clusters(page: Chromium) -> None:
    geo = json.loads(page.evaluate("""JSON.stringify((() => {
        const grid = document.querySelector('#histograms .charts');
        const boxes = Array.from(grid.children).map(b => b.getBoundingClientRect());
        const top = boxes[0].top;
        const first = boxes.filter(b => Math.abs(b.top - top) < 2);
        const clusters = Array.from(document.querySelectorAll('#duplicates .cluster'))
            .map(c => Math.round(c.getBoundingClientRect().top));
        return {grid: grid.getBoundingClientRect().width,
                used: first[first.length - 1].right - first[0].left, perRow: first.length,
                clusters: clusters.length, clusterRows: new Set(clusters).size,
                scroll: document.documentElement.scrollWidth, view: window.innerWidth,
                headerWidth: document.querySelector('header .sub').scrollWidth};})())"""))
    assert geo["perRow"] >= 3, geo  # 1400 px: three charts side by side, not two
    assert geo["used"] >= 0.9 * geo["grid"], geo
    assert geo["clusterRows"] < geo["clusters"], geo  # several clusters share a row
    assert geo["scroll"] <= geo["view"] and geo["headerWidth"] <= geo["view"], geo


def test_an_image_never_read_is_not_called_undecodable(page: Chromium) -> None:
    text = page.evaluate("""(() => { const g = document.querySelector(
        '.reason-group[data-reason="ingest/image_path_escape"]');
        return g ? g.querySelector('.thumbs').textContent : null; })()""")
    assert text is not None and "image never read" in text and "undecodable" not in text
    corrupt = page.evaluate("""(() => { const g = document.querySelector(
        '.reason-group[data-reason="ingest/corrupt_image"]');
        return g ? g.textContent : ''; })()""")
    assert "image never read" not in corrupt
