"""Hugging Face inputs: local `datasets` formats, and the hub code path on local copies.

Sources: the `datasets` library's own writers (`Dataset.save_to_disk` folders:
state.json + dataset_info.json + data-*.arrow, `DatasetDict.save_to_disk`: dataset_dict.json
+ a folder per split; `.arrow` files as Arrow IPC streams) and features (`Image`,
`Sequence(Image)` / `List(Image)`, as TRL's examples/datasets/rlaif-v.py casts `images`).
`load_dataset("ORG/NAME")` reads a local folder of that relative path before asking the
hub (datasets/load.py `dataset_module_factory`), so the tests run the real `hf://` reading
code offline, on a copy laid out as a hub repository (data files, `--data-dir` subsets as
hh-rlhf has them).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from curate.dataset import read_manifest
from tests.helpers import assert_conserved, jpeg_bytes, rows, write_jsonl

PAIRS = [{"prompt": f"Q{i}?", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(3)]


def _dataset(rows_: list[dict]):
    import datasets

    return datasets.Dataset.from_list(rows_)


def test_save_to_disk_folder_and_dataset_dict(tmp_path: Path, run_cli) -> None:
    import datasets

    saved = tmp_path / "saved"
    _dataset(PAIRS).save_to_disk(str(saved))
    out = tmp_path / "out"
    run_cli("ingest", "generic", saved, "--out", out, "--quiet")
    assert_conserved(out)
    assert [r["chosen"] for r in rows(out)] == ["good 0", "good 1", "good 2"]

    dd = tmp_path / "dd"
    datasets.DatasetDict({"train": _dataset(PAIRS[:2]), "test": _dataset(PAIRS[2:])}
                         ).save_to_disk(str(dd))
    run_cli("ingest", "generic", dd, "--split", "test", "--out", tmp_path / "t", "--quiet")
    assert [r["chosen"] for r in rows(tmp_path / "t")] == ["good 2"]
    res = run_cli("ingest", "generic", dd, "--split", "dev", "--out", tmp_path / "d", expect=2)
    assert "no split 'dev'" in res.output and "train" in res.output


def test_arrow_ipc_stream_and_file(tmp_path: Path, run_cli) -> None:
    import pyarrow as pa

    table = pa.Table.from_pylist(PAIRS)
    stream = tmp_path / "pairs.arrow"
    with pa.OSFile(str(stream), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    run_cli("ingest", "generic", stream, "--out", tmp_path / "s", "--quiet")
    assert len(rows(tmp_path / "s")) == 3
    ipc_file = tmp_path / "file.arrow"
    with pa.OSFile(str(ipc_file), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    run_cli("ingest", "generic", ipc_file, "--out", tmp_path / "f", "--quiet")
    assert len(rows(tmp_path / "f")) == 3


def test_unrecognised_inputs_exit_2_never_an_empty_success(tmp_path: Path, run_cli) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("hello")
    res = run_cli("ingest", "generic", tmp_path / "notes", "--out", tmp_path / "o", expect=2)
    assert "save_to_disk" in res.output
    (tmp_path / "data.xyz").write_text("{}")
    res = run_cli("ingest", "generic", tmp_path / "data.xyz", "--out", tmp_path / "o", expect=2)
    assert "unknown file type" in res.output
    (tmp_path / "broken.arrow").write_bytes(b"not arrow at all")
    res = run_cli("ingest", "generic", tmp_path / "broken.arrow", "--out", tmp_path / "o",
                  expect=2)
    assert "broken.arrow" in res.output and "Arrow" in res.output


@pytest.fixture
def hub_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder laid out as hub repo `org/vision-prefs`, the working directory beside it."""
    import datasets

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo = tmp_path / "org" / "vision-prefs" / "data"
    repo.mkdir(parents=True)
    img = jpeg_bytes()
    ds = datasets.Dataset.from_list([
        {"prompt": "What is shown?", "chosen": "A red square.", "rejected": "A cat.",
         "images": [{"bytes": img, "path": None}]},
        {"prompt": "Text only?", "chosen": "Yes.", "rejected": "No.", "images": []},
    ])
    features = ds.features.copy()
    features["images"] = datasets.Sequence(datasets.Image())
    ds.cast(features).to_parquet(str(repo / "train-00000-of-00001.parquet"))
    return tmp_path


def test_hub_list_of_images_and_the_revision_in_the_manifest(hub_copy: Path, run_cli) -> None:
    out = hub_copy / "out"
    run_cli("ingest", "generic", "hf://org/vision-prefs", "--map", "image=images", "--out", out,
            "--quiet")
    m = assert_conserved(out)
    kept = rows(out)
    assert m["rows_kept"] == 2  # no "image is a JpegImageFile": nested images stay bytes
    assert kept[0]["images"][0]["format"] == "JPEG" and kept[1]["images"] == []
    [inp] = m["inputs"]
    assert inp["path"] == "hf://org/vision-prefs" and inp["revision"].startswith("local:")
    # the dataset changes: the rerun is not "up to date"; it reads the new rows
    again = run_cli("ingest", "generic", "hf://org/vision-prefs", "--map", "image=images",
                    "--out", out)
    assert "skipped" in again.output.lower() or "up to date" in again.output.lower()
    import pyarrow as pa
    import pyarrow.parquet as pq

    f = hub_copy / "org" / "vision-prefs" / "data" / "train-00000-of-00001.parquet"
    t = pq.read_table(f)
    pq.write_table(pa.concat_tables([t, t.slice(1, 1)]).replace_schema_metadata(
        t.schema.metadata), f)
    rerun = run_cli("ingest", "generic", "hf://org/vision-prefs", "--map", "image=images",
                    "--out", out)
    assert "up to date" not in rerun.output.lower()
    m2 = read_manifest(out)
    assert m2["rows_in"] == 3 and m2["inputs"][0]["revision"] != inp["revision"]


def test_hub_data_dir_selects_a_subset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       run_cli) -> None:
    """hh-rlhf keeps its subsets in folders (harmless-base/, helpful-base/), read with
    data_dir, not a config."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for sub, n in (("harmless-base", 2), ("helpful-base", 3)):
        (tmp_path / "org" / "hh" / sub).mkdir(parents=True)
        write_jsonl(tmp_path / "org" / "hh" / sub / "train.jsonl", [
            {"chosen": f"\n\nHuman: {sub} {i}?\n\nAssistant: Yes.",
             "rejected": f"\n\nHuman: {sub} {i}?\n\nAssistant: No."} for i in range(n)])
    out = tmp_path / "out"
    run_cli("ingest", "hh-rlhf", "hf://org/hh", "--data-dir", "harmless-base", "--out", out,
            "--quiet")
    kept = rows(out)
    assert len(kept) == 2 and all("harmless-base" in r["prompt"][0]["content"] for r in kept)
    m = read_manifest(out)
    assert m["config"]["data_dir"] == "harmless-base"


def test_unresolvable_hub_dataset_is_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           run_cli) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = run_cli("ingest", "generic", "hf://no-such-org/no-such-data", "--revision", "v1",
                  "--out", tmp_path / "o", expect=2)
    assert "hf://no-such-org/no-such-data" in res.output and "Traceback" not in res.output
