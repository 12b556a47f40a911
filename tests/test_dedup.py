"""`curate dedup`: exact duplicates, label conflicts, near duplicates, and the stage contracts."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate import dataset as D
from curate.dataset import read_manifest
from curate.engine import get_engine
from curate.stages import dedup as dedup_mod
from curate.stages.dedup import DEFAULT_MAX_DISTANCE, dedup
from curate.text import normalise_text
from tests.dedup_support import (
    encode,
    make_source,
    outcome,
    pair_ids,
    row,
    unchecked_folder,
    variants,
)
from tests.helpers import assert_conserved, jpeg_bytes

ONE = get_engine("local", workers=1)


def _photo(name: str):
    import skimage.data
    from PIL import Image

    return Image.fromarray(getattr(skimage.data, name)())


def test_normalise_text() -> None:
    assert normalise_text("  Ｗｈａｔ\tIS\u00a0this?\n") == "what is this?"
    assert normalise_text("STRASSE") == normalise_text("straße")
    assert normalise_text("ﬁne") == "fine"  # NFKC ligature
    assert normalise_text("a  b") != normalise_text("ab")


def test_normalise_prompt_keeps_roles_and_drops_image_placeholders() -> None:
    from curate.stages.dedup import normalise_prompt

    llava = [{"role": "system", "content": "Be brief."},
             {"role": "user", "content": "<image>\nWhat  is THIS?"}]
    plain = [{"role": "system", "content": "be brief."},
             {"role": "user", "content": "what is this?"}]
    assert normalise_prompt(llava) == normalise_prompt(plain) == [
        ["system", "be brief."], ["user", "what is this?"]]
    assert normalise_prompt([{"role": "assistant", "content": "what is this?"}]) != \
        normalise_prompt(plain[1:])


@pytest.fixture
def three_sources(tmp_path: Path) -> list[Path]:
    """Sources a, b, c: one pair in all three (the prompt written three ways, the image once
    as JPEG and once as a PNG of the same pixels), one in a and b, and controls."""
    from PIL import Image

    img = jpeg_bytes(seed=1)
    same_pixels_png = encode(Image.open(io.BytesIO(img)), "PNG")
    other = jpeg_bytes(color=(20, 200, 40), seed=2)
    a = [row("p1", "What colour is the square?", image=img),
         row("p2", "Describe it.", "Red.", "Blue.", image=other),
         row("t1", "Say hello.", "Hello!", "Go away.", image=None)]
    b = [row("p1", "  what COLOUR is the  square? ", image=same_pixels_png),
         row("p2", "describe it.", "Red.", "Blue.", image=other),
         row("p3", "What shape is it?", "A square.", "A circle.", image=img)]
    c = [row("p1", "Ｗhat colour is the square?", image=img),
         row("t1", "Say hello.", "Hello there!", "Go away.", image=None)]
    return [make_source(tmp_path, n, rows) for n, rows in (("a", a), ("b", b), ("c", c))]


def test_exact_duplicates_across_three_sources_with_prefer(
        three_sources: list[Path], tmp_path: Path, run_cli) -> None:
    out = tmp_path / "dedup"
    res = run_cli("dedup", *three_sources, "--out", out, "--prefer", "c,a", "--workers", "1")
    assert "exact_duplicate: 3" in res.output
    got, ids = outcome(out), pair_ids(out)
    assert got["c/p1"] == (None, None)  # c is preferred over a, and b is not listed
    assert got["a/p1"] == ("exact_duplicate", ids["c/p1"])
    assert got["b/p1"] == ("exact_duplicate", ids["c/p1"])  # PNG of the same pixels
    assert got["a/p2"] == (None, None)  # listed a beats unlisted b
    assert got["b/p2"] == ("exact_duplicate", ids["a/p2"])
    for key in ("b/p3", "a/t1", "c/t1"):  # other question; other response
        assert got[key] == (None, None), key
    m = assert_conserved(out)
    assert m["rows_in"] == 8 and m["rejected_by_reason"] == {"exact_duplicate": 3}


def test_without_prefer_the_larger_file_then_the_smallest_pair_id_survives(
        three_sources: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "dedup"
    dedup(three_sources, out, engine=ONE)
    got, ids = outcome(out), pair_ids(out)
    assert got["b/p1"] == (None, None)  # same pixels, and the PNG is the larger file
    assert got["a/p1"] == got["c/p1"] == ("exact_duplicate", ids["b/p1"])
    winner = min(["a/p2", "b/p2"], key=ids.__getitem__)  # the very same bytes: pair_id
    loser = ({"a/p2", "b/p2"} - {winner}).pop()
    assert got[winner] == (None, None) and got[loser] == ("exact_duplicate", ids[winner])


@pytest.fixture
def conflicts(tmp_path: Path) -> list[Path]:
    """q1: two sources disagree (1:1). q2: three votes, two say A > B, one says B > A."""
    img = jpeg_bytes(seed=3)
    a = [row("q1", "Which is right?", "Yes.", "No.", image=img),
         row("q2", "Count the dots.", "Three.", "Seven.", image=img)]
    b = [row("q1", "Which is right?", "No.", "Yes.", image=img),
         row("q2", "Count the dots.", "Three.", "Seven.", image=img)]
    c = [row("q2", "count the dots.", "Seven.", "Three.", image=img)]
    return [make_source(tmp_path, n, rows) for n, rows in (("a", a), ("b", b), ("c", c))]


def test_label_conflicts_are_all_rejected_by_default(
        conflicts: list[Path], tmp_path: Path, run_cli) -> None:
    out = tmp_path / "dedup"
    res = run_cli("dedup", *conflicts, "--out", out, "--workers", "1", "--quiet")
    assert res.output == ""
    got, ids = outcome(out), pair_ids(out)
    assert {k: v[0] for k, v in got.items()} == {
        "a/q1": "label_conflict", "b/q1": "label_conflict", "a/q2": "label_conflict",
        "b/q2": "label_conflict", "c/q2": "label_conflict"}
    assert got["a/q1"][1] == f"{ids['b/q1']} (votes 1:1)"
    assert got["c/q2"][1] == f"{min(ids['a/q2'], ids['b/q2'])} (votes 1:2)"
    assert read_manifest(out)["dedup"]["label_conflict_groups"] == 2


def test_label_conflicts_keep_majority(conflicts: list[Path], tmp_path: Path, run_cli) -> None:
    out = tmp_path / "dedup"
    run_cli("dedup", *conflicts, "--out", out, "--conflicts", "keep-majority", "--prefer", "b",
            "--workers", "1", "--quiet")
    got, ids = outcome(out), pair_ids(out)
    assert got["b/q2"] == (None, None)  # the majority label survives, b's copy preferred
    assert got["a/q2"] == ("exact_duplicate", ids["b/q2"])
    assert got["c/q2"] == ("label_conflict", f"{ids['b/q2']} (outvoted 2:1)")
    assert got["a/q1"][0] == got["b/q1"][0] == "label_conflict"  # two votes: no majority
    assert_conserved(out)


@pytest.fixture
def near(tmp_path: Path) -> Path:
    """One photo and its re-encoded / resized / cropped copies, all with the same question."""
    astronaut, coffee = _photo("astronaut"), _photo("coffee")
    rows = [row("orig", image=encode(astronaut, quality=90))]
    rows.append({**rows[0], "id": "orig-copy"})  # exact copy of a row that loses to a copy
    rows += [row(name, image=data) for name, data in variants(astronaut).items()]
    rows += [row("other-question", "How many people are there?", image=rows[0]["image"]),
             row("other-photo", image=encode(coffee)),
             row("other-answers", chosen="An astronaut.", rejected="A cat.",
                 image=encode(astronaut, quality=80))]
    return make_source(tmp_path, "s", rows)


def test_near_duplicate_images_are_found(near: Path, tmp_path: Path) -> None:
    out = tmp_path / "dedup"
    m = dedup([near], out, engine=ONE)
    got, ids = outcome(out), pair_ids(out)
    family = ["orig", "orig-copy", "q30", "q50", "q95", "png", "resize0.5", "resize2.0",
              "crop0.01", "crop0.02", "other-answers"]
    assert got["s/resize2.0"] == (None, None)  # the largest copy survives
    for name in set(family) - {"resize2.0"}:
        reason, detail = got[f"s/{name}"]
        assert reason == "near_duplicate_image", name
        survivor, dist = detail.split(" distance=")
        assert survivor == ids["s/resize2.0"] and int(dist) <= DEFAULT_MAX_DISTANCE["phash"]
    assert got["s/other-question"] == got["s/other-photo"] == (None, None)
    d = m["dedup"]
    assert d["near_duplicate_groups"] == 1
    assert sum(d["near_duplicate_distance_histogram"].values()) == len(family) - 1
    assert d["clusters"] >= 1 and sum(d["cluster_size_histogram"].values()) == d["clusters"]
    assert_conserved(out)


def test_rows_with_several_images_match_image_by_image(tmp_path: Path) -> None:
    from PIL import Image

    a, c, r = _photo("astronaut"), _photo("coffee"), _photo("rocket")
    half = a.resize((a.width // 2, a.height // 2), Image.Resampling.LANCZOS)
    src = make_source(tmp_path, "m", [
        row("ac", image=[encode(a), encode(c)]),
        row("ac-copies", image=[encode(half), encode(c, quality=40)]),
        row("ar", image=[encode(a), encode(r)]),  # the second image differs
        row("ca", image=[encode(c), encode(a)]),  # same images, other order
        row("a", image=[encode(a)]),  # fewer images
    ])
    out = tmp_path / "dedup"
    m = dedup([src], out, engine=ONE)
    got, ids = outcome(out), pair_ids(out)
    assert got["m/ac-copies"][0] == "near_duplicate_image"
    assert got["m/ac-copies"][1].startswith(ids["m/ac"] + " distance=")
    assert {k: v for k, v in got.items() if k != "m/ac-copies"} == {
        k: (None, None) for k in ("m/ac", "m/ar", "m/ca", "m/a")}
    # the four two-image rows share their prompt and image count; "a" has one image, so
    # no row can be a copy of it and its image is not compared
    assert m["dedup"]["images_compared"] == 8


def test_near_match_pair_keeps_other_response_pairs(near: Path, tmp_path: Path) -> None:
    out = tmp_path / "dedup"
    dedup([near], out, near_match="pair", engine=ONE)
    got = outcome(out)
    assert got["s/other-answers"] == (None, None)
    assert got["s/q30"][0] == "near_duplicate_image"


def test_max_distance_zero_finds_only_identical_hashes(near: Path, tmp_path: Path) -> None:
    out = tmp_path / "dedup"
    m = dedup([near], out, max_distance=0, engine=ONE)
    dists = m["dedup"]["near_duplicate_distance_histogram"]
    assert dists and set(dists) == {"0"}
    assert outcome(out)["s/crop0.02"] == (None, None)  # 4 bits away: not at distance 0


def test_a_corrupt_image_that_reaches_dedup_is_a_rejected_row(tmp_path: Path) -> None:
    out = tmp_path / "dedup"
    folder = unchecked_folder(tmp_path / "raw", [jpeg_bytes(seed=5), b"\xff\xd8\xff not a jpeg"])
    dedup([folder], out, engine=ONE)
    got = outcome(out)
    assert got["x/0"] == (None, None)
    reason, detail = got["x/1"]
    assert reason == "corrupt_image" and detail.startswith("image 0: ")
    assert_conserved(out)


def test_conservation_and_files_agree_with_manifest(
        three_sources: list[Path], near: Path, tmp_path: Path) -> None:
    out = tmp_path / "dedup"
    m = dedup([*three_sources, near], out, engine=ONE)
    assert_conserved(out)
    ds = D.Dataset.open(out)
    rows_in = sum(D.Dataset.open(p).count() for p in [*three_sources, near])
    assert m["rows_in"] == rows_in == m["rows_kept"] + m["rows_rejected"]
    rej = ds.read(D.REJECTED)
    assert Counter(rej["reject_reason"].to_pylist()) == m["rejected_by_reason"]
    assert set(rej["reject_stage"].to_pylist()) == {"dedup"}
    for part in (D.KEPT, D.REJECTED):
        for r in ds.read(part, columns=["images", "image_phash"]).to_pylist():
            assert len(r["image_phash"]) == len(r["images"])
    for name, n in m["file_rows"].items():
        assert pq.ParquetFile(out / name).metadata.num_rows == n, name
    assert sum(m["file_rows"].values()) == rows_in
    # every duplicate names a row that was kept
    kept_ids = set(ds.read(D.KEPT, columns=["pair_id"])["pair_id"].to_pylist())
    for reason, detail in zip(rej["reject_reason"].to_pylist(), rej["reject_detail"].to_pylist(),
                              strict=True):
        if reason in ("exact_duplicate", "near_duplicate_image"):
            assert detail.split()[0] in kept_ids


def test_deterministic_whatever_the_worker_count(
        three_sources: list[Path], tmp_path: Path, run_cli) -> None:
    outs = [tmp_path / "w1", tmp_path / "w2"]
    run_cli("dedup", *three_sources, "--out", outs[0], "--workers", "1", "--quiet")
    run_cli("dedup", *three_sources, "--out", outs[1], "--workers", "2", "--quiet")
    m1, m2 = (read_manifest(o) for o in outs)
    assert m1["files"] == m2["files"] and m1["files"]
    # one file per input fragment (the fragment write path's names)
    assert sorted(p.name for p in (outs[0] / "kept").iterdir()) == [
        "part-00000-00000.parquet", "part-00001-00000.parquet", "part-00002-00000.parquet"]
    assert m1["fingerprint"] == m2["fingerprint"]


def test_rerun_is_skipped_unless_forced_or_changed(
        three_sources: list[Path], tmp_path: Path, run_cli) -> None:
    out = tmp_path / "dedup"
    args = ["dedup", *three_sources, "--out", out, "--workers", "1"]
    run_cli(*args)
    first = (out / "manifest.json").read_text()
    res = run_cli(*args)
    assert "up to date" in res.output
    assert (out / "manifest.json").read_text() == first
    run_cli(*args, "--force", "--quiet")
    forced = read_manifest(out)
    assert forced["files"] == json.loads(first)["files"]
    run_cli(*args, "--max-distance", "4", "--quiet")
    changed = read_manifest(out)
    assert changed["fingerprint"] != forced["fingerprint"]
    assert changed["config"]["max_distance"] == 4


def test_hashes_are_stored_and_reused_never_recomputed(
        near: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = dedup_mod.perceptual_hash

    def counting(data: bytes, method: str = "phash") -> int:
        calls.append(len(data))
        return real(data, method)

    monkeypatch.setattr(dedup_mod, "perceptual_hash", counting)
    monkeypatch.setattr(dedup_mod, "_MEMO", {})
    first = tmp_path / "first"
    m1 = dedup([near], first, engine=ONE)
    images = D.Dataset.open(near).read(columns=["images"])["images"].to_pylist()
    distinct_bytes = {im["sha256"] for ims in images for im in ims}
    assert len(calls) == m1["dedup"]["images_decoded"] == len(distinct_bytes) < len(images)

    def refuse(data: bytes, method: str = "phash") -> int:
        raise AssertionError("a stored hash was recomputed")

    monkeypatch.setattr(dedup_mod, "perceptual_hash", refuse)
    monkeypatch.setattr(dedup_mod, "_MEMO", {})
    second = tmp_path / "second"
    m2 = dedup([first], second, max_distance=12, engine=ONE)
    assert m2["dedup"]["images_decoded"] == 0
    assert m2["dedup"]["images_reused"] == m1["rows_kept"]  # one image a row
    stored = D.Dataset.open(first).read(columns=["pair_id", "image_phash"]).to_pylist()
    again = {r["pair_id"]: r["image_phash"] for r in D.Dataset.open(second).read().to_pylist()}
    assert all(again[r["pair_id"]] == r["image_phash"] for r in stored)


def test_inputs_with_and_without_stored_hashes_mix(
        near: Path, three_sources: list[Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    first = tmp_path / "first"
    m1 = dedup([near], first, engine=ONE)
    monkeypatch.setattr(dedup_mod, "_MEMO", {})
    m2 = dedup([first, three_sources[1]], tmp_path / "mixed", engine=ONE)
    fresh = D.Dataset.open(three_sources[1]).read(columns=["images"])["images"].to_pylist()
    assert m2["dedup"]["images_reused"] == m1["rows_kept"]
    assert m2["dedup"]["images_decoded"] == len({im["sha256"] for ims in fresh for im in ims})


@pytest.mark.parametrize("method", ["dhash", "ahash", "whash"])
def test_other_hash_methods_find_the_copies_in_their_own_column(
        method: str, near: Path, tmp_path: Path) -> None:
    out = tmp_path / "dedup"
    m = dedup([near], out, image_hash=method, engine=ONE)
    assert m["config"]["max_distance"] == DEFAULT_MAX_DISTANCE[method]
    names = D.Dataset.open(out).schema().names
    assert f"image_{method}" in names and "image_phash" not in names
    assert m["rejected_by_reason"] == {"near_duplicate_image": 10}  # the family of 11, less one
    assert outcome(out)["s/other-photo"] == (None, None)


@pytest.mark.parametrize("bad", [["--image-hash", "md5"], ["--conflicts", "vote"],
                                 ["--near-match", "image"], ["--max-distance", "40"]])
def test_bad_options_exit_2(bad: list[str], three_sources: list[Path], tmp_path: Path,
                            run_cli) -> None:
    res = run_cli("dedup", three_sources[0], "--out", tmp_path / "o", *bad, expect=2)
    assert "error" in res.output
    assert not (tmp_path / "o").exists()


def test_missing_input_exits_2(tmp_path: Path, run_cli) -> None:
    res = run_cli("dedup", tmp_path / "nope", "--out", tmp_path / "o", expect=2)
    assert "no such dataset folder" in res.output


def test_text_only_rows_have_empty_hash_lists(three_sources: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "dedup"
    dedup(three_sources, out, engine=ONE)
    t = D.Dataset.open(out).read(columns=["source_id", "image_phash"]).to_pylist()
    by_id = {r["source_id"]: r["image_phash"] for r in t}
    assert by_id["t1"] == []
    assert all(isinstance(v, int) and 0 <= v < 2**64 for v in by_id["p3"])
    assert np.asarray(by_id["p3"], dtype=np.uint64).size == 1


@pytest.mark.parametrize(("values", "type_"), [
    ([True, False, True] * 5, pa.bool_()),
    ([0, 7, -3, 2**40], pa.int64()),
    ([1, 0, 5], pa.int32()),
    ([[1, 2**64 - 1], [], [None, 3], [0]], pa.list_(pa.uint64())),
    ([b"a" * 16, b"b" * 16], pa.binary(16)),
    ([None, None], pa.string()),
    ([None, "image 0: OSError: broken"], pa.string()),
])
def test_key_columns_built_from_buffers_equal_pyarrows_own(values: list, type_) -> None:
    got = dedup_mod._to_arrow(values, type_)
    got.validate(full=True)
    assert got.equals(pa.array(values, type=type_))


def test_workers_do_not_import_pandas(tmp_path: Path) -> None:
    """pyarrow's pa.array imports pandas: half a second more start-up in each worker."""
    import pickle
    import subprocess
    import sys

    folder = unchecked_folder(tmp_path / "raw", [jpeg_bytes(seed=7)])
    batch = next(D.Dataset.open(folder).iter_batches())
    (tmp_path / "batch.pkl").write_bytes(pickle.dumps(batch))
    code = ("import pickle, sys; from curate.stages.dedup import annotate; "
            f"b = pickle.loads(open({str(tmp_path / 'batch.pkl')!r}, 'rb').read()); "
            "annotate(b).validate(full=True); print('pandas' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_photos_are_hashed_on_threads_and_thumbnails_in_processes(tmp_path: Path) -> None:
    """From the parquet footers alone: the mean encoded image bytes per row."""
    photos = unchecked_folder(tmp_path / "photos", [jpeg_bytes(size=(900, 700), seed=i)
                                                    for i in range(3)])
    thumbs = unchecked_folder(tmp_path / "thumbs", [jpeg_bytes(seed=i) for i in range(3)])
    assert D.bytes_per_row([D.Dataset.open(photos)]) > 100_000
    assert dedup_mod.hash_on_threads([photos])
    assert not dedup_mod.hash_on_threads([thumbs])
    assert D.bytes_per_row([D.Dataset.open(thumbs)]) > 0
