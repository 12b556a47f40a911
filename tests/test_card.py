"""The dataset card every stage writes: `datasets.load_dataset(FOLDER)` works on a stage
folder and on a shard folder, as the Hub's manual configuration documents it
(huggingface.co/docs/hub/datasets-manual-configuration: a README.md whose YAML
`configs:` entries give `config_name`, `data_files` as split/path pairs and
`default: true`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from curate import dataset as D
from curate.engine import get_engine
from curate.pipeline import card
from curate.stages.ingest import ingest
from curate.stages.shard import shard
from tests.helpers import jpeg_bytes, write_parquet

ONE = get_engine("local", workers=1)


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 pairs: 7 kept (3 with an image), 3 rejected for two reasons."""
    tmp = tmp_path_factory.mktemp("card")
    rows_ = [{"id": f"r{i}", "prompt": f"Question {i}?", "chosen": f"yes {i}",
              "rejected": f"no {i}", "image": [jpeg_bytes(seed=i)] if i < 3 else []}
             for i in range(7)]
    rows_ += [{"id": "e1", "prompt": "q", "chosen": "", "rejected": "r", "image": []},
              {"id": "e2", "prompt": "q2", "chosen": "   ", "rejected": "r", "image": []},
              {"id": "s1", "prompt": "q3", "chosen": "same", "rejected": "same", "image": []}]
    src = write_parquet(tmp / "src.parquet", rows_)
    ingest("generic", [str(src)], tmp / "in", engine=ONE)
    return tmp / "in"


def _load(folder: Path, tmp: Path, config: str | None = None) -> Any:
    import datasets

    return datasets.load_dataset(str(folder), config, cache_dir=str(tmp / "hf"))


def test_a_stage_folder_loads_with_load_dataset(ingested: Path, tmp_path: Path) -> None:
    m = D.Dataset.open(ingested).manifest
    assert (m["rows_kept"], m["rows_rejected"]) == (7, 3)
    kept = _load(ingested, tmp_path)  # the default config
    assert list(kept) == ["train"] and kept["train"].num_rows == 7
    assert "reject_reason" not in kept["train"].column_names
    rejected = _load(ingested, tmp_path, "rejected")["train"]
    assert rejected.num_rows == 3
    assert sorted(rejected["reject_reason"]) == sorted(
        r for r, n in m["rejected_by_reason"].items() for _ in range(n))


def test_the_card_is_not_in_the_checksums_and_says_what_the_manifest_says(
        ingested: Path) -> None:
    """README.md is written after the checksums: `files` lists the data files only, so
    the folder's fingerprint does not depend on the card's wording."""
    m = D.Dataset.open(ingested).manifest
    assert "README.md" not in m["files"] and (ingested / "README.md").is_file()
    assert set(m["files"]) == {p.relative_to(ingested).as_posix()
                               for p in ingested.rglob("*") if p.is_file()
                               and p.name not in ("manifest.json", "README.md")}
    text = (ingested / "README.md").read_text()
    assert text == card.render(m, card.lineage(m))
    assert f"curate {m['version']}, stage `ingest`" in text
    for reason, n in m["rejected_by_reason"].items():
        assert f"| `{reason}` | {n:,} |" in text
    assert m["inputs"][0]["path"] in text


def test_a_shard_folder_loads_its_splits_and_export_subsets(ingested: Path,
                                                            tmp_path: Path) -> None:
    """A shard folder: the kept config has the train and eval splits; a folder with no
    rejected rows has no `rejected` config (datasets refuses a split without rows);
    each TRL subset is a config of its own."""
    out = tmp_path / "shards"
    m = shard([ingested], out, shards=2, eval_fraction=0.3, seed=0, formats=["trl", "mpo"])
    ds = _load(out, tmp_path)
    assert {k: v.num_rows for k, v in ds.items()} == {
        "train": m["splits"]["train"]["rows"], "eval": m["splits"]["eval"]["rows"]}
    assert set(ds["train"].column_names) >= {"split", "stage", "est_tokens"}
    assert all(r["split"] == "train" for r in ds["train"])
    names = [c["config_name"] for c in card.configs(m)]
    assert names == ["kept", "trl_text", "trl_vision"]  # no rows rejected; mpo is JSON
    vision = _load(out, tmp_path, "trl_vision")
    assert sum(s.num_rows for s in vision.values()) == 3
    assert "No rows were rejected" in (out / "README.md").read_text()


def _fake_folder(path: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    path.mkdir(parents=True)
    (path / "manifest.json").write_text(json.dumps(manifest))
    return {"path": str(path), "fingerprint": D.json_fingerprint(manifest["files"]),
            "stage": manifest["stage"]}


def test_eval_sets_come_from_the_decontam_stage_upstream(tmp_path: Path) -> None:
    """The card names the eval sets a decontam stage upstream used; a folder whose files
    changed since (its fingerprint no longer matches) is not trusted."""
    dec = _fake_folder(tmp_path / "dec", {
        "stage": "decontam", "files": {"kept/part-00000.parquet": "a" * 64},
        "config": {"against": [{"path": "/evals/rewardbench", "fingerprint": "x"},
                               {"path": "/evals/vl-rewardbench", "fingerprint": "y"}]},
        "inputs": []})
    rew = _fake_folder(tmp_path / "rew", {"stage": "reward", "files": {"k": "b" * 64},
                                          "inputs": [dec]})
    manifest = {"stage": "shard", "version": "9", "files": {}, "inputs": [rew], "config": {}}
    text = card.render(manifest, card.lineage(manifest))
    assert "- `/evals/rewardbench`\n- `/evals/vl-rewardbench`" in text
    stale = {**manifest, "inputs": [{**rew, "fingerprint": "0" * 64}]}
    assert card.lineage(stale) == []
    assert "No eval set" in card.render(stale, card.lineage(stale))


def test_credentials_in_input_uris_never_reach_the_card(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = {"stage": "dedup", "files": {}, "config": {},
                "inputs": [{"path": "s3://KEY:SECRET@bucket/in", "fingerprint": "f"}]}
    monkeypatch.setattr(card, "lineage", lambda m: [])  # no S3 server to ask
    text = card.write_card(tmp_path, manifest).read_text()
    assert "SECRET" not in text and "s3://***@bucket/in" in text


def test_configs_skip_patterns_without_rows() -> None:
    m = {"files": {"kept/part-00000.parquet": "a", "rejected/part-00000.parquet": "b"},
         "file_rows": {"kept/part-00000.parquet": 0, "rejected/part-00000.parquet": 2}}
    assert card.configs(m) == [{"config_name": "rejected",
                                "data_files": [{"split": "train",
                                                "path": "rejected/*.parquet"}]}]
