"""A text-only k-fold surrogate does not hold image bytes (bench_recipe measured 6.2 GB on
the driver at 25,000 pairs with photos for about 1 GB of data): the rows keep their
images' sha256 (the feature cache's keys) and the rewards are the same as with the bytes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from curate.engine import get_engine
from curate.scoring import kfold
from curate.scoring.kfold import KFoldScorer, drop_image_bytes, reads_images
from curate.stages.ingest import ingest
from curate.train.config import load_config
from tests.helpers import jpeg_bytes, write_parquet


def _images(rows: list[list[dict] | None]) -> pa.Table:
    t = pa.struct([("bytes", pa.binary()), ("sha256", pa.string()), ("width", pa.int32())])
    return pa.table({"pair_id": [str(i) for i in range(len(rows))],
                     "images": pa.array(rows, pa.list_(t))})


def test_drop_image_bytes_keeps_everything_but_the_bytes_it_can_name() -> None:
    table = _images([
        [{"bytes": b"a", "sha256": "sa", "width": 1}, {"bytes": b"b", "sha256": None,
                                                       "width": 2}],
        None, [], [{"bytes": b"c", "sha256": "sc", "width": 3}]])
    for t in (table, pa.concat_tables([table.slice(0, 1), table.slice(1)])):  # chunks too
        out = drop_image_bytes(t)
        assert out.schema == t.schema and out["pair_id"].equals(t["pair_id"])
        assert out["images"].to_pylist() == [
            [{"bytes": None, "sha256": "sa", "width": 1},
             {"bytes": b"b", "sha256": None, "width": 2}],  # no sha256: the bytes stay
            None, [], [{"bytes": None, "sha256": "sc", "width": 3}]]
    assert drop_image_bytes(pa.table({"x": [1]})).column_names == ["x"]


def test_reading_without_the_bytes_reads_every_row_batch_by_batch(tmp_path: Path) -> None:
    src = write_parquet(tmp_path / "p.parquet", [
        {"id": str(i), "prompt": f"q{i}", "chosen": "a", "rejected": "b",
         "image": jpeg_bytes(color=(i % 250, 0, 0)) if i % 3 else None} for i in range(2500)])
    ingest("generic", [str(src)], tmp_path / "ds", engine=get_engine("local", workers=1))
    (empty_src := tmp_path / "e.jsonl").write_text("")
    ingest("generic", [str(empty_src)], tmp_path / "empty",
           engine=get_engine("local", workers=1))
    ds = kfold.D.Dataset.open(tmp_path / "ds")
    assert len(list(ds.iter_batches())) > 1  # more than one batch is joined
    got = kfold.read_pairs([str(tmp_path / "ds"), str(tmp_path / "empty")], image_bytes=False)
    assert got.num_rows == 2500
    assert got.equals(drop_image_bytes(ds.read()))
    images = got["images"].combine_chunks().values
    assert len(images) == 1666 and images.field("bytes").null_count == len(images)
    whole = kfold.read_pairs([str(tmp_path / "ds")])
    assert whole.drop_columns("images").equals(got.drop_columns("images"))


def test_only_a_text_only_local_backbone_drops_them() -> None:
    assert not reads_images("minilm")
    assert reads_images("tiny-qwen2.5-vl")  # built in memory: no config on disk
    assert reads_images("no-such-org/no-such-model")  # never fetched: keep the bytes


@pytest.mark.slow
def test_kfold_rewards_are_the_same_without_the_bytes(tmp_path: Path, monkeypatch) -> None:
    src = write_parquet(tmp_path / "p.parquet", [
        {"id": str(i), "prompt": f"What colour is picture {i}?",
         "chosen": f"It is {'red' if i % 2 else 'blue'}.", "rejected": "I cannot see it.",
         "image": jpeg_bytes(color=(200, 30, 30) if i % 2 else (30, 30, 200))}
        for i in range(16)])
    ingest("generic", [str(src)], tmp_path / "ds", engine=get_engine("local", workers=1))
    seen: list[bool] = []
    real = kfold._read_all

    def spy(datasets, image_bytes):
        seen.append(image_bytes)
        return real(datasets, image_bytes)

    monkeypatch.setattr(kfold, "_read_all", spy)
    scores = {}
    for keep in (True, False):  # each computes its own features (its own cache)
        monkeypatch.setattr(kfold, "reads_images", lambda model, keep=keep: keep)
        cfg_path = tmp_path / f"rm-{keep}.json"
        cfg_path.write_text(json.dumps({
            "freeze": "backbone", "max_length": 48, "head_epochs": 5,
            "feature_cache": str(tmp_path / f"features-{keep}"),
            "stages": [{"name": "all", "data": "all"}]}))
        s = KFoldScorer([tmp_path / "ds"], "minilm", 2, load_config(cfg_path), seed=0,
                        quiet=True)
        s.fit()
        scores[keep] = s._scores
    assert seen == [True, False]
    assert scores[True].keys() == scores[False].keys() and len(scores[True]) == 16
    a = np.array([scores[True][p] for p in sorted(scores[True])])
    b = np.array([scores[False][p] for p in sorted(scores[True])])
    assert np.array_equal(a, b)
