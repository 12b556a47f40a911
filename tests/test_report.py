"""`curate report` without a browser: what each section is built from, and the page itself."""

from __future__ import annotations

import base64
import io
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from curate import dataset as D
from curate.report import build_report
from curate.report.collect import collect, detail_note, hamming
from curate.report.pipeline import expand, load_run
from curate.report.svg import Series, histogram, nice_ticks
from curate.report.thumbs import Thumbnails
from tests.report_support import eval_set, one_worker, shared, small_run, stage_folders

SECTIONS = ["funnel", "mix", "model", "duplicates", "histograms", "examples", "run-facts"]


@pytest.fixture(scope="module")
def run_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared(tmp_path_factory, "small-run", small_run)


@pytest.fixture(scope="module")
def data(run_root: Path):
    return collect(load_run([run_root]))


def manifests(root: Path) -> dict[str, dict]:
    return {p.name: D.Dataset.open(p).manifest for p in expand([root])}


# -- the run -------------------------------------------------------------------------------------
def test_folders_are_linked_by_fingerprint_not_path(run_root: Path, tmp_path: Path) -> None:
    from tests.report_support import copy_run

    copy = copy_run(run_root, tmp_path / "moved")  # manifests still hold the old paths
    run = load_run([copy])
    assert [s.stage for s in run.steps] == ["ingest"] * 4 + ["dedup"]
    assert [s.name for s in run.finals] == ["02-dedup"]
    assert run.steps[-1].parents == [0, 1, 2, 3]
    assert run.others == []


def test_eval_folder_beside_the_run_is_kept_out_of_the_funnel(run_root: Path,
                                                              tmp_path: Path) -> None:
    ev = eval_set(tmp_path / "eval-rb", ["What is 2 + 2?"])
    run = load_run([run_root, ev])
    assert [s.name for s in run.others] == ["eval-rb"]
    d = collect(run)
    assert [f.stage for f in d.funnel] == ["ingest", "dedup"]
    assert "rewardbench" not in d.per_source


def test_no_dataset_folder_is_an_error(tmp_path: Path, run_cli) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(D.DatasetError):
        expand([tmp_path / "empty"])
    assert "no manifest.json" in run_cli("report", tmp_path / "empty", "-o",
                                         tmp_path / "r.html", expect=2).output
    assert not (tmp_path / "r.html").exists()


# -- sections' data ------------------------------------------------------------------------------
def test_funnel_adds_up_to_the_manifests(data, run_root: Path) -> None:
    ms = manifests(run_root)
    ingest = [m for m in ms.values() if m["stage"] == "ingest"]
    dedup = ms["02-dedup"]
    first, second = data.funnel
    assert (first.stage, first.rows_in, first.kept) == (
        "ingest", sum(m["rows_in"] for m in ingest), sum(m["rows_kept"] for m in ingest))
    assert first.by_reason == dict(sum((Counter(m["rejected_by_reason"]) for m in ingest),
                                       Counter()))
    assert (second.rows_in, second.kept, second.by_reason) == (
        dedup["rows_in"], dedup["rows_kept"], dedup["rejected_by_reason"])
    assert second.rows_in == first.kept


def test_per_source_accounts_for_every_ingested_row(data, run_root: Path) -> None:
    for folder in stage_folders(run_root)["ingest"]:
        m = D.Dataset.open(folder).manifest
        source = m["config"]["source"]
        assert sum(data.per_source[source].values()) == m["rows_in"], source
    total_kept = sum(c.get("kept", 0) for c in data.per_source.values())
    assert total_kept == manifests(run_root)["02-dedup"]["rows_kept"]


def test_duplicate_clusters_show_the_survivor_and_distances(data, run_root: Path) -> None:
    rej = D.Dataset.open(run_root / "02-dedup").read(D.REJECTED).to_pylist()
    by_reason = Counter(r["reject_reason"] for r in rej)
    survivors = {(r["reject_reason"], r["reject_detail"].split()[0]) for r in rej}
    assert data.cluster_counts == {("dedup", k): len({s for r, s in survivors if r == k})
                                   for k in by_reason}
    details = {r["pair_id"]: r["reject_detail"] for r in rej}
    kept = D.Dataset.open(run_root / "02-dedup").read(D.KEPT).to_pylist()
    rows = {r["pair_id"]: r for r in rej + kept}
    for cl in data.clusters:
        assert cl.survivor is not None and cl.survivor.pair_id == cl.survivor_id
        for m in cl.members:
            assert details[m.pair_id].startswith(cl.survivor_id)
            if cl.reason == "near_duplicate_image":
                # recomputed from the image_phash column; dedup wrote the same distance
                assert hamming(rows[m.pair_id], rows[cl.survivor_id]) == m.distance
                assert f"distance={m.distance}" in details[m.pair_id]
            elif m.images:
                assert m.distance == 0
            else:
                assert m.distance is None  # text pairs have no image distance
            assert all(im["uri"].startswith("data:image/jpeg;base64,") for im in m.images)


def test_examples_cover_every_reject_reason(data, run_root: Path) -> None:
    expected = Counter()
    for m in manifests(run_root).values():
        expected.update({(m["stage"], r): n for r, n in m["rejected_by_reason"].items()})
    got = {(g.stage, g.reason): g for g in data.examples}
    assert set(got) == set(expected)
    for key, g in got.items():
        assert g.count == expected[key]
        assert len(g.cards) == min(3, g.count)
        assert all(c.reason == key[1] and c.detail for c in g.cards)
    # a row rejected before its image was read shows the image from its path
    ambiguous = got[("ingest", "ambiguous")].cards[0]
    assert ambiguous.images[0]["uri"] and "path" in ambiguous.images[0]["size"]
    # one that escapes the image root does not
    escape = got[("ingest", "image_path_escape")].cards[0]
    assert escape.images[0]["uri"] is None


def test_histograms_of_lengths_sizes_and_dedup_distances(data, run_root: Path) -> None:
    hists = {h.key: h for h in data.histograms}
    assert {"response-length", "image-size", "02-dedup-distance_histogram"} <= set(hists)
    kept = D.Dataset.open(run_root / "02-dedup").read(D.KEPT).to_pylist()
    lengths = hists["response-length"].series[0].values
    assert sorted(lengths.tolist()) == sorted(float(len(r["chosen"])) for r in kept)
    sizes = hists["image-size"].series[0].values
    assert sorted(sizes.tolist()) == sorted(float(max(im["width"], im["height"]))
                                            for r in kept for im in r["images"])
    m = manifests(run_root)["02-dedup"]["dedup"]
    dist = hists["02-dedup-distance_histogram"].series[0].values
    assert Counter(str(int(v)) for v in dist) == Counter(
        {k: v for k, v in m["distance_histogram"].items()})


def test_a_stage_added_column_gets_a_histogram(run_root: Path, tmp_path: Path) -> None:
    """shard adds est_tokens: the report plots it at the stage that added it."""
    from curate.stages.shard import shard

    out = tmp_path / "03-shard"
    shard([run_root / "02-dedup"], out, shards=2, eval_fraction=0.2, engine=one_worker())
    d = collect(load_run([run_root, out]))
    assert [f.stage for f in d.funnel] == ["ingest", "dedup", "shard"]
    hists = {h.key: h for h in d.histograms}
    est = hists["est_tokens"]
    kept = D.Dataset.open(out).read(D.KEPT, columns=["est_tokens"])["est_tokens"]
    assert est.series[0].label == "kept" and est.series[0].values.size == len(kept)
    assert "03-shard" in est.note


def test_a_run_without_dedup_degrades_gracefully(run_root: Path, tmp_path: Path,
                                                 run_cli) -> None:
    ingest = stage_folders(run_root)["ingest"]
    out = tmp_path / "r.html"
    run_cli("report", *ingest, "--out", out)
    html = out.read_text()
    assert "No duplicate rejections in these folders" in html
    assert all(f'<section id="{s}">' in html for s in SECTIONS)


# -- the page ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def page(run_root: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    from typer.testing import CliRunner

    from curate.cli import app

    out = tmp_path_factory.mktemp("page") / "report.html"
    result = CliRunner().invoke(app, ["report", str(run_root), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in " ".join(result.output.split())
    return out.read_text()


def test_page_is_self_contained(page: str) -> None:
    urls = re.findall(r"(?:src|href)=\"(?!data:|#)([^\"]*)\"", page)
    assert urls == []
    assert re.findall(r"https?://[^\s\"'<]+", page) == ["http://www.w3.org/2000/svg"] * len(
        re.findall("http://www.w3.org/2000/svg", page))
    assert "Content-Security-Policy" in page
    assert page.count("<script>") == 1
    assert page.count("data:image/jpeg;base64,") >= 10


def test_page_has_every_section_and_the_run_facts(page: str, run_root: Path) -> None:
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in page
    for name, m in manifests(run_root).items():
        assert f'data-folder="{name}"' in page
        assert m["fingerprint"] in page
        for i in m["inputs"]:
            assert i["fingerprint"] in page
    assert "max_distance" in page  # dedup's config
    assert page.count("<svg") >= 5


def test_report_is_deterministic(run_root: Path, tmp_path: Path) -> None:
    a = build_report([run_root], tmp_path / "a.html").read_bytes()
    b = build_report([run_root], tmp_path / "b.html").read_bytes()
    assert a == b


def test_text_from_the_data_is_escaped(tmp_path: Path) -> None:
    from curate.stages.ingest import ingest

    hostile = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    raw = tmp_path / "hh.jsonl"
    rows = [{"chosen": f"\n\nHuman: {hostile}\n\nAssistant: fine {i}",
             "rejected": f"\n\nHuman: {hostile}\n\nAssistant: {'' if i == 0 else 'bad'}"}
            for i in range(3)]
    raw.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ingest("hh-rlhf", [str(raw)], tmp_path / "ing", engine=one_worker())
    html = build_report([tmp_path / "ing"], tmp_path / "r.html").read_text()
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert html.count("<script>") == 1 and "<img src=x" not in html


# -- pieces --------------------------------------------------------------------------------------
def test_thumbnails(tmp_path: Path) -> None:
    from PIL import Image

    from tests.helpers import jpeg_bytes

    t = Thumbnails()
    uri = t.uri(jpeg_bytes(size=(640, 320)))
    im = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert im.format == "JPEG" and max(im.size) == 160
    assert t.uri(b"not an image") is None and t.uri(None) is None
    assert t.uri(jpeg_bytes(size=(640, 320))) is uri  # cached by content


def test_svg_pieces() -> None:
    assert nice_ticks(0, 100, 5) == [0, 20, 40, 60, 80, 100]
    assert nice_ticks(0.0, 0.9, 4) == [0.0, 0.25, 0.5, 0.75]
    empty = histogram([Series("a", np.array([]), "#000")], title="t", xlabel="x")
    assert "no values" in empty
    ints = histogram([Series("d", np.array([0, 0, 2, 5]), "#000")], title="t", xlabel="x")
    assert ints.count('class="bin"') == 3  # one bar per occupied integer value
    assert detail_note("0123456789abcdef0123456789abcdef distance=3") == "distance=3"
    assert detail_note("0123456789abcdef0123456789abcdef (prompt cosine 0.9712)") == \
        "prompt cosine 0.9712"


@pytest.mark.slow
def test_similar_stage_in_report_and_explain(run_root: Path, tmp_path: Path) -> None:
    """With `curate similar` after dedup: its clusters, its score columns, and explain (~30 s:
    the text embedder)."""
    similar_mod = pytest.importorskip("curate.stages.similar")
    from curate.inspect.explain import explain

    out = tmp_path / "03-similar"
    similar_mod.similar([run_root / "02-dedup"], out,
                        config=similar_mod.SimilarConfig(threshold=0.9), engine=one_worker())
    rej = D.Dataset.open(out).read(D.REJECTED).to_pylist()
    assert rej, "the sample has prompts that differ only by an <image> token"
    d = collect(load_run([run_root, out]))
    assert [f.stage for f in d.funnel] == ["ingest", "dedup", "similar"]
    sims = [c for c in d.clusters if c.stage == "similar"]
    assert {m.pair_id for c in sims for m in c.members} == {r["pair_id"] for r in rej}
    assert all("cosine" in m.note for c in sims for m in c.members)
    assert {"similar_prompt_sim", "similar_response_sim"} <= {h.key for h in d.histograms}
    e = explain(rej[0]["pair_id"], [run_root, out])
    assert [v.stage for v in e.visits] == ["ingest", "dedup", "similar"]
    assert e.final.related[0].pair_id == rej[0]["reject_detail"].split()[0]
    assert e.final.related[0].outcome == "kept"
