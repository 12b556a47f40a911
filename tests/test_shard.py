"""`curate shard`: determinism, conservation, stratification, balance, readers, exports."""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curate import dataset as D
from curate.engine import get_engine
from curate.export.base import place_image_tags
from curate.stages.ingest import ingest
from curate.stages.shard import estimate_tokens, shard, snake_assign
from tests.helpers import assert_conserved, jpeg_bytes, rows, write_parquet

ONE = get_engine("local", workers=1)


def _source_a() -> list[dict]:
    """60 pairs of very different lengths; every third has images, some with <image> tags,
    some multi-turn with a system message."""
    out = []
    for i in range(60):
        text = f"question {i} " + "word " * (i * 9 % 200)
        if i % 9 == 0:
            text = "<image> what is this? <image> and this?"
        r: dict = {"id": f"a{i}", "chosen": "good " * (1 + i % 7), "rejected": "bad",
                   "prompt": [{"role": "user", "content": text}], "image": []}
        if i % 3 == 0:
            r["image"] = [jpeg_bytes(seed=i)] if i % 6 else [jpeg_bytes(seed=i),
                                                           jpeg_bytes(seed=100 + i)]
        if i % 10 == 5:
            r["prompt"] = [{"role": "system", "content": "be brief"},
                           {"role": "user", "content": "hi"},
                           {"role": "assistant", "content": "hello"},
                           {"role": "user", "content": f"question {i}"}]
        out.append(r)
    return out


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    tmp = tmp_path_factory.mktemp("shard_in")
    a = write_parquet(tmp / "a.parquet", _source_a())
    b = write_parquet(tmp / "b.parquet", [
        {"id": f"b{i}", "prompt": f"other {i}", "chosen": "c" * (1 + 37 * i % 500),
         "rejected": "r"} for i in range(40)])
    ingest("generic", [str(a)], tmp / "a", source="a", engine=ONE)
    ingest("generic", [str(b)], tmp / "b", source="b", engine=ONE)
    return [tmp / "a", tmp / "b"]


@pytest.fixture(scope="module")
def sharded(inputs: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shard_out") / "out"
    shard(inputs, out, shards=4, eval_fraction=0.1, seed=3, formats=["trl", "llamafactory"])
    return out


def _kept_ids(folders: list[Path]) -> list[str]:
    return [r["pair_id"] for f in folders for r in rows(f)]


def test_conservation_rows_in_all_shards_plus_eval_equal_rows_in(inputs, sharded) -> None:
    m = assert_conserved(sharded)
    ids_in = _kept_ids(inputs)
    assert m["rows_in"] == len(ids_in) == 100 and m["rows_rejected"] == 0
    assert sum(s["rows"] for s in m["shards"]) == 100
    assert Counter(s["split"] for s in m["shards"]) == {"train": 4, "eval": 1}
    per_file = Counter()
    for s in m["shards"]:
        t = pa.parquet.read_table(sharded / s["file"])
        assert t.num_rows == s["rows"] and set(t["split"].to_pylist()) == {s["split"]}
        assert D.sha256_file(sharded / s["file"]) == s["sha256"]
        per_file.update(t["pair_id"].to_pylist())
    assert per_file == Counter(ids_in)  # every input row exactly once
    assert sorted(p.name for p in (sharded / "kept").iterdir()) == [
        "eval-00000-of-00001.parquet", *(f"train-{i:05d}-of-00004.parquet" for i in range(4))]
    assert sorted(_kept_ids([sharded])) == sorted(ids_in)  # Dataset.open(out) reads it all


def test_deterministic_and_independent_of_input_order(inputs, sharded, tmp_path: Path) -> None:
    again = tmp_path / "again"
    shard(inputs, again, shards=4, eval_fraction=0.1, seed=3, formats=["trl", "llamafactory"])
    assert D.Dataset.open(again).manifest["files"] == D.Dataset.open(sharded).manifest["files"]
    swapped = tmp_path / "swapped"
    shard(list(reversed(inputs)), swapped, shards=4, eval_fraction=0.1, seed=3)
    for s in D.Dataset.open(sharded).manifest["shards"]:
        want = pa.parquet.read_table(sharded / s["file"])["pair_id"].to_pylist()
        assert pa.parquet.read_table(swapped / s["file"])["pair_id"].to_pylist() == want
    other = tmp_path / "seed4"
    shard(inputs, other, shards=4, eval_fraction=0.1, seed=4)
    first = D.Dataset.open(other).files()[0]
    assert (pa.parquet.read_table(first)["pair_id"].to_pylist()
            != pa.parquet.read_table(sharded / "kept" / first.name)["pair_id"].to_pylist())


def test_rerun_with_same_input_and_config_is_skipped(inputs, sharded) -> None:
    before = (sharded / "manifest.json").read_text()
    m = shard(inputs, sharded, shards=4, eval_fraction=0.1, seed=3,
              formats=["llamafactory", "trl"])
    assert (sharded / "manifest.json").read_text() == before and m["rows_in"] == 100


def test_eval_split_is_stratified_by_source(sharded) -> None:
    m = D.Dataset.open(sharded).manifest
    assert m["splits"]["eval"]["by_source"] == {"a": 6, "b": 4}  # round(0.1 x 60), (0.1 x 40)
    assert m["splits"]["train"]["by_source"] == {"a": 54, "b": 36}
    t = D.Dataset.open(sharded).read()
    got = Counter(zip(t["source"].to_pylist(), t["split"].to_pylist(), strict=True))
    assert got == {("a", "eval"): 6, ("b", "eval"): 4, ("a", "train"): 54, ("b", "train"): 36}


def test_stage_column_says_whether_the_pair_has_images(sharded) -> None:
    for r in rows(sharded):
        assert r["stage"] == ("multimodal" if r["images"] else "text")
    assert D.Dataset.open(sharded).manifest["splits"]["train"]["multimodal_rows"] + \
        D.Dataset.open(sharded).manifest["splits"]["eval"]["multimodal_rows"] == 20


def test_shards_are_balanced_by_length(sharded) -> None:
    train = [s for s in D.Dataset.open(sharded).manifest["shards"] if s["split"] == "train"]
    counts = [s["rows"] for s in train]
    tokens = [s["est_tokens"] for s in train]
    assert max(counts) - min(counts) <= 1
    assert max(tokens) / min(tokens) < 1.05
    # a plain shuffle into 4 equal slices is far less even on these lengths
    est = np.concatenate([pa.parquet.read_table(sharded / s["file"])["est_tokens"].to_numpy()
                          for s in train])
    spread = []
    for seed in range(20):
        perm = np.random.default_rng(seed).permutation(est)
        sums = [c.sum() for c in np.array_split(perm, 4)]
        spread.append(max(sums) / min(sums))
    assert max(tokens) / min(tokens) < np.median(spread)


def test_snake_assignment_deals_longest_first() -> None:
    est = np.array([10, 9, 8, 7, 6, 5, 4, 3])
    assert snake_assign(est, np.arange(8), 3).tolist() == [0, 1, 2, 2, 1, 0, 0, 1]


def test_estimate_tokens_counts_both_sequences_and_image_tokens() -> None:
    img = {"bytes": b"", "sha256": "", "pixel_hash": "", "width": 280, "height": 56,
           "format": "JPEG"}
    batch = pa.RecordBatch.from_pylist([
        {"prompt": [{"role": "user", "content": "abcd" * 5}], "chosen": "x" * 8,
         "rejected": "y" * 3, "images": []},
        {"prompt": [{"role": "user", "content": "ab"}], "chosen": "c", "rejected": "d",
         "images": [img, img]},
    ])
    # (2 x 20 + 8 + 3) / 4 -> 13; (2 x 2 + 1 + 1) / 4 -> 2, + 2 sequences x 2 images x 20
    assert estimate_tokens(batch).tolist() == [13, 2 + 80]


def test_rows_per_shard_caps_every_shard(inputs, tmp_path: Path) -> None:
    m = shard(inputs, tmp_path / "o", rows_per_shard=30, eval_fraction=0.25)
    train = [s["rows"] for s in m["shards"] if s["split"] == "train"]
    evals = [s["rows"] for s in m["shards"] if s["split"] == "eval"]
    assert sum(train) == 75 and len(train) == math.ceil(75 / 30) and max(train) <= 30
    assert evals == [25]


def test_datasets_round_trip(sharded, tmp_path: Path) -> None:
    import datasets

    m = D.Dataset.open(sharded).manifest
    files = {k: str(sharded / v) for k, v in m["data_files"].items()}
    ds = datasets.load_dataset("parquet", data_files=files, cache_dir=str(tmp_path / "hf"))
    assert ds["train"].num_rows == 90 and ds["eval"].num_rows == 10
    want = {r["pair_id"]: r for r in rows(sharded)}
    for r in ds["train"]:
        assert r == want[r["pair_id"]]


def test_curate_train_reads_the_split_and_stage_columns(sharded) -> None:
    from curate.train.data import load_pairs, split_pairs, stage_indices

    train, ev = split_pairs(load_pairs(sharded), eval_fraction=0.0)
    assert (train.num_rows, ev.num_rows) == (90, 10)
    assert set(ev["split"].to_pylist()) == {"eval"}
    mm = stage_indices(train, "multimodal")
    assert all(train["images"][int(i)].as_py() for i in mm) and len(mm) == \
        D.Dataset.open(sharded).manifest["splits"]["train"]["multimodal_rows"]


def test_place_image_tags_keeps_adds_and_drops_tags() -> None:
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "<image> a <image>b"}]
    assert place_image_tags(msgs, 2)[1]["content"] == "<image> a <image>b"
    assert place_image_tags(msgs, 1)[1]["content"] == "<image> a b"
    assert place_image_tags(msgs, 3)[1]["content"] == "<image><image> a <image>b"
    assert place_image_tags([{"role": "user", "content": "q"}], 0) == [
        {"role": "user", "content": "q"}]


def test_trl_export_reads_back_with_images_as_pil(sharded, tmp_path: Path) -> None:
    """Mixed data: pairs with images in trl/vision (typed parts + PIL images), text-only
    pairs in trl/text (string contents); every kept row in exactly one of them."""
    import datasets

    subsets = D.Dataset.open(sharded).manifest["exports"]["trl"]["subsets"]
    assert subsets["vision"]["data_files"] == {"eval": "trl/vision/eval-*.parquet",
                                               "train": "trl/vision/train-*.parquet"}
    want = {r["pair_id"]: r for r in rows(sharded)}
    ds = datasets.load_dataset(
        "parquet", data_files={k: str(sharded / v) for k, v in
                               subsets["vision"]["data_files"].items()},
        cache_dir=str(tmp_path / "hf"))
    text = datasets.load_dataset(
        "parquet", data_files={k: str(sharded / v) for k, v in
                               subsets["text"]["data_files"].items()},
        cache_dir=str(tmp_path / "hf"))
    n_vision = sum(1 for r in want.values() if r["images"])
    assert ds["train"].num_rows + ds["eval"].num_rows == n_vision == subsets["vision"]["rows"]
    assert text["train"].num_rows + text["eval"].num_rows == 100 - n_vision
    for r in [*ds["train"], *ds["eval"]]:
        src = want[r["pair_id"]]
        assert src["stage"] == "multimodal" and src["split"] in ("train", "eval")
        assert [p["role"] for p in r["prompt"]] == [p["role"] for p in src["prompt"]]
        assert r["chosen"] == [{"role": "assistant",
                                "content": [{"type": "text", "text": src["chosen"]}]}]
        assert r["rejected"][0]["content"][0]["text"] == src["rejected"]
        n_tags = sum(p["type"] == "image" for m_ in r["prompt"] for p in m_["content"])
        assert n_tags == len(r["images"]) == len(src["images"]) > 0
        for pil, im in zip(r["images"], src["images"], strict=True):
            assert pil.size == (im["width"], im["height"])
    assert "images" not in text["train"].column_names
    for r in [*text["train"], *text["eval"]]:
        src = want[r["pair_id"]]
        assert src["stage"] == "text" and r["prompt"] == src["prompt"]
        assert r["chosen"] == [{"role": "assistant", "content": src["chosen"]}]


def test_trl_export_of_text_only_data_uses_string_contents(inputs, tmp_path: Path) -> None:
    import datasets

    out = tmp_path / "t"
    shard([inputs[1]], out, shards=2, formats=["trl"])
    assert not (out / "trl" / "vision").exists()
    ds = datasets.load_dataset("parquet", data_files=str(out / "trl" / "text" / "*.parquet"),
                               cache_dir=str(tmp_path / "hf"))["train"]
    assert "images" not in ds.column_names and ds.num_rows == 40
    want = {r["pair_id"]: r for r in rows(inputs[1])}
    for r in ds:
        assert r["prompt"] == want[r["pair_id"]]["prompt"]
        assert r["chosen"] == [{"role": "assistant", "content": want[r["pair_id"]]["chosen"]}]


def test_llamafactory_export_reads_back(sharded) -> None:
    folder = sharded / "llamafactory"
    info = json.loads((folder / "dataset_info.json").read_text())
    assert set(info) == {"train", "eval"}
    assert info["train"]["formatting"] == "sharegpt" and info["train"]["ranking"] is True
    assert info["train"]["columns"] == {"messages": "conversations", "chosen": "chosen",
                                        "rejected": "rejected", "system": "system",
                                        "images": "images"}
    want = {r["pair_id"]: r for r in rows(sharded)}
    seen = 0
    for split, n in (("train", 90), ("eval", 10)):
        records = json.loads((folder / info[split]["file_name"]).read_text())
        assert len(records) == n
        for rec in records:
            src = want[rec["pair_id"]]
            assert src["split"] == split
            turns = rec["conversations"]
            # LLaMA-Factory's sharegpt checks: human/gpt alternate, the prompt ends with human
            assert len(turns) % 2 == 1
            assert all(t["from"] == ("human" if i % 2 == 0 else "gpt")
                       for i, t in enumerate(turns))
            assert rec["chosen"] == {"from": "gpt", "value": src["chosen"]}
            assert rec["rejected"] == {"from": "gpt", "value": src["rejected"]}
            paths = rec.get("images", [])
            assert sum(t["value"].count("<image>") for t in turns) == len(paths)
            for p, im in zip(paths, src["images"], strict=True):
                data = (folder / p).read_bytes()
                assert hashlib.sha256(data).hexdigest() == im["sha256"] == Path(p).stem
            if src["prompt"][0]["role"] == "system":
                assert rec["system"] == src["prompt"][0]["content"]
                seen += 1
    assert seen == 6


def test_cli_shard(inputs, tmp_path: Path, run_cli) -> None:
    out = tmp_path / "cli"
    res = run_cli("shard", *inputs, "--out", out, "--shards", "3", "--eval-fraction", "0.2",
                  "--seed", "1", "--format", "llamafactory", "--workers", "1")
    assert "train-00002-of-00003.parquet" in res.output
    m = assert_conserved(out)
    assert m["config"] == {"rows_per_shard": None, "shards": 3, "eval_fraction": 0.2,
                           "seed": 1, "formats": ["llamafactory"], "only": None,
                           "absolute_paths": False}  # only mpo writes paths
    assert (out / "llamafactory" / "train.json").is_file()
    assert not (out / "trl").exists()
    bad = run_cli("shard", *inputs, "--out", tmp_path / "x", "--shards", "2",
                  "--rows-per-shard", "5", expect=2)
    assert "not both" in bad.output
    assert "unknown format" in run_cli("shard", *inputs, "--out", tmp_path / "y", "--format",
                                       "nope", expect=2).output
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_a_dataset_with_no_kept_rows_gives_one_empty_train_shard(tmp_path: Path) -> None:
    src = write_parquet(tmp_path / "x.parquet", [{"prompt": "q", "chosen": "", "rejected": "r"}])
    ingest("generic", [str(src)], tmp_path / "in", engine=ONE)
    m = shard([tmp_path / "in"], tmp_path / "out", shards=3, eval_fraction=0.5,
              formats=["trl", "llamafactory"])
    assert [(s["file"], s["rows"]) for s in m["shards"]] == [
        ("kept/train-00000-of-00001.parquet", 0)]
    assert D.Dataset.open(tmp_path / "out").count() == 0


@given(sizes=st.lists(st.integers(0, 40), min_size=1, max_size=4),
       fraction=st.sampled_from([0.0, 0.05, 0.3, 0.5]), shards=st.integers(1, 7),
       seed=st.integers(0, 3))
@settings(max_examples=60, deadline=None)
def test_plan_property(sizes: list[int], fraction: float, shards: int, seed: int) -> None:
    from curate.stages.shard import ShardConfig, plan_shards

    src = [f"s{i}" for i, n in enumerate(sizes) for _ in range(n)]
    n = len(src)
    rng = np.random.default_rng(seed)
    keys = pa.table({"pair_id": [f"{i:04x}" for i in rng.permutation(n)], "source": src,
                     "est_tokens": rng.integers(1, 1000, n), "multimodal": rng.random(n) < .3},
                    schema=pa.schema([("pair_id", pa.string()), ("source", pa.string()),
                                      ("est_tokens", pa.int64()), ("multimodal", pa.bool_())]))
    plan = plan_shards(keys, ShardConfig(shards=shards, eval_fraction=fraction, seed=seed))
    # every row in exactly one shard, positions 0..len-1 in each
    for s, split in enumerate(plan.splits):
        idx = plan.rows(s)
        assert sorted(plan.position[idx].tolist()) == list(range(len(idx)))
        assert set(plan.is_eval[idx].tolist()) <= {split == "eval"}
    assert sum(len(plan.rows(s)) for s in range(len(plan.names))) == n
    for i, size in enumerate(sizes):  # stratified: round half up per source
        got = int(plan.is_eval[np.asarray(src) == f"s{i}"].sum()) if n else 0
        assert got == math.floor(fraction * size + 0.5)
    train = [len(plan.rows(s)) for s, sp in enumerate(plan.splits) if sp == "train"]
    assert len(train) == max(1, min(shards, sum(train))) and max(train) - min(train) <= 1
