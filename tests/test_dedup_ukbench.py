"""Real photos (../shared/data/ukbench) against a peer's expectations (imagededup's suite).

The peer: imagededup's PHash of ukbench00120.jpg is 9fee256239984d71 (its own
preprocessing); at threshold 10 its only duplicate among the mixed images is the
resize, 2 bits away; hflip, rotation and ukbench09268 are 34, 32 and 30 bits away;
the corrupt file yields no hash.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from PIL import Image

from curate.engine import get_engine
from curate.hashing import METHODS, hamming, perceptual_hash
from curate.stages.dedup import DEFAULT_MAX_DISTANCE, dedup
from tests.conftest import shared_data
from tests.dedup_support import make_source, outcome, pair_ids, row, unchecked_folder, variants
from tests.helpers import assert_conserved, rows

PEER_PHASH_00120 = 0x9FEE256239984D71
ONE = get_engine("local", workers=1)


@pytest.fixture(scope="module")
def ukbench() -> dict[str, bytes]:
    folder = shared_data("ukbench")
    return {p.stem.removeprefix("ukbench"): p.read_bytes() for p in sorted(folder.glob("*.jpg"))}


def _distinct(photos: dict[str, bytes]) -> list[str]:
    return [k for k in photos if "_" not in k]


def test_phash_agrees_with_the_peer(ukbench: dict[str, bytes]) -> None:
    h = {k: perceptual_hash(v) for k, v in ukbench.items() if k != "09268_corrupt"}
    assert hamming(h["00120"], PEER_PHASH_00120) <= 2  # other preprocessing, same picture
    assert hamming(h["00120"], h["00120_resize"]) <= 2  # peer: 2
    limit = DEFAULT_MAX_DISTANCE["phash"]
    for other in ("00120_hflip", "00120_rotation", "09268"):  # peer: 34, 32, 30
        assert hamming(h["00120"], h[other]) >= 2 * limit, other
    with pytest.raises(OSError):
        perceptual_hash(ukbench["09268_corrupt"])


@pytest.mark.parametrize("method", METHODS)
def test_every_method_matches_the_resize_and_separates_distinct_photos(
        ukbench: dict[str, bytes], method: str) -> None:
    h = {k: perceptual_hash(ukbench[k], method) for k in [*_distinct(ukbench), "00120_resize"]}
    assert hamming(h["00120"], h["00120_resize"]) < 3  # the peer's bound for every method
    closest = min(hamming(h[a], h[b]) for a, b in itertools.combinations(_distinct(ukbench), 2))
    assert closest > DEFAULT_MAX_DISTANCE[method]


def test_ukbench_through_ingest_and_the_cli(
        ukbench: dict[str, bytes], tmp_path: Path, run_cli) -> None:
    src = make_source(tmp_path, "uk", [row(k, image=v) for k, v in ukbench.items()])
    assert [r["source_id"] for r in rows(src, "rejected")] == ["09268_corrupt"]
    assert rows(src, "rejected")[0]["reject_reason"] == "corrupt_image"

    out = tmp_path / "dedup"
    res = run_cli("dedup", src, "--out", out, "--workers", "1")
    assert "near_duplicate_image: 2" in res.output
    got, ids = outcome(out), pair_ids(out)
    # the resize and the grayscale copy (a luminance hash cannot see colour) join 00120
    family = ["uk/00120", "uk/00120_gray", "uk/00120_resize"]
    survivor = "uk/00120"  # more pixels than the resize, a larger file than the gray copy
    assert got[survivor] == (None, None)
    for k in set(family) - {survivor}:
        reason, detail = got[k]
        assert reason == "near_duplicate_image"
        assert detail.split(" distance=")[0] == ids[survivor]
        assert int(detail.split(" distance=")[1]) <= 2
    for k in ["00120_hflip", "00120_rotation", *_distinct(ukbench)]:
        if f"uk/{k}" not in family:
            assert got[f"uk/{k}"] == (None, None), k
    assert_conserved(out)


def test_the_corrupt_file_is_a_rejected_row_if_it_reaches_dedup(
        ukbench: dict[str, bytes], tmp_path: Path) -> None:
    folder = unchecked_folder(tmp_path / "raw", [ukbench["09268"], ukbench["09268_corrupt"]])
    out = tmp_path / "dedup"
    dedup([folder], out, engine=ONE)
    got = outcome(out)
    assert got["x/0"] == (None, None)
    assert got["x/1"][0] == "corrupt_image"
    assert_conserved(out)


def test_reencoded_resized_and_cropped_copies_are_all_found(
        ukbench: dict[str, bytes], tmp_path: Path) -> None:
    import io

    raw = []
    for k in _distinct(ukbench):
        raw.append(row(k, image=ukbench[k]))
        im = Image.open(io.BytesIO(ukbench[k]))
        raw += [row(f"{k}-{name}", image=data) for name, data in variants(im).items()]
    src = make_source(tmp_path, "uk", raw)
    out = tmp_path / "dedup"
    m = dedup([src], out, engine=ONE)
    got = outcome(out)
    copies = len(raw) // len(_distinct(ukbench)) - 1
    n = len(_distinct(ukbench))
    assert m["rows_kept"] == n  # one survivor per photo: its 200% copy, the largest
    assert m["rejected_by_reason"] == {"near_duplicate_image": copies * n}
    assert all(got[f"uk/{k}-resize2.0"] == (None, None) for k in _distinct(ukbench))
    ids = pair_ids(out)
    for k in _distinct(ukbench):  # each copy names a survivor of its own photo
        family = {ids[f"uk/{x['id']}"] for x in raw if x["id"].split("-")[0] == k}
        for x in raw:
            if x["id"].split("-")[0] == k and got[f"uk/{x['id']}"][0]:
                assert got[f"uk/{x['id']}"][1].split()[0] in family
    assert m["dedup"]["clusters"] == n
    # sizes count distinct images: the PNG holds the very pixels of the JPEG it came from
    assert m["dedup"]["cluster_size_histogram"] == {str(copies): n}


SKIMAGE_PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "camera", "coins",
                  "hubble_deep_field", "immunohistochemistry", "colorwheel", "clock", "moon",
                  "brick", "grass", "logo", "page", "text", "retina", "horse"]


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_the_default_distance_sits_between_copies_and_distinct_photos(
        ukbench: dict[str, bytes], method: str) -> None:
    """The evidence behind DEFAULT_MAX_DISTANCE, on 28 photos (ukbench + scikit-image):
    every re-encoded or resized copy within it, every distinct pair well beyond it."""
    import io

    import numpy as np
    import skimage.data

    from tests.dedup_support import encode

    photos = {k: Image.open(io.BytesIO(ukbench[k])).convert("RGB") for k in _distinct(ukbench)}
    for name in SKIMAGE_PHOTOS:
        arr = getattr(skimage.data, name)()
        photos[name] = Image.fromarray(
            (arr.astype(np.uint8) * 255) if arr.dtype == bool else arr).convert("RGB")
    codes, worst_copy = {}, 0
    for name, im in photos.items():
        codes[name] = perceptual_hash(encode(im, quality=90), method)
        copies = {k: v for k, v in variants(im).items() if not k.startswith("crop")}
        worst_copy = max(worst_copy, *(hamming(codes[name], perceptual_hash(v, method))
                                       for v in copies.values()))
    closest = min(hamming(codes[a], codes[b]) for a, b in itertools.combinations(codes, 2))
    assert worst_copy <= DEFAULT_MAX_DISTANCE[method], worst_copy
    assert closest > DEFAULT_MAX_DISTANCE[method] + 3, closest
