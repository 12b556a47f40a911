"""Every export read by its consumer's own loading path, on mixed data (pairs with and
without images, a multi-turn pair with a system message).

Sources the tests follow:
- TRL's dataset formats (huggingface/trl, docs/source/dataset_formats.md): a
  conversational preference row is `prompt` / `chosen` / `rejected` message lists with
  string contents ("Textual dataset"); "Vision datasets" hold typed content parts
  (`{"type": "image"}`, `{"type": "text", "text": ...}`) and an `images` column. Its
  note on mixing the two in one dataset (typed parts on text rows too) only holds for
  a multimodal processor's template; text templates break on it (the control below).
  `RewardTrainer` and `DPOTrainer` render a row with `trl.data_utils.apply_chat_template`
  (called here, from the installed `trl`, under `-m slow`: importing it takes ~10 s of
  CPU), which applies the tokenizer's chat template to prompt (with the generation
  prompt), prompt + chosen and prompt + rejected; the default run does those three
  calls on the tokenizer.
- The chat templates are TRL's copies of the models' originals, read from the
  installed package (trl/chat_templates/qwen2_5.jinja, qwen3.jinja, llama3_1.jinja,
  qwen2_5_vl.jinja), set on the tiny offline tokenizer of `curate.models.tiny`.
- InternVL's MPO loader (OpenGVLab/InternVL,
  internvl_chat/internvl/train/internvl_chat_mpo.py): `build_datasets` reads
  `--meta_path`; `LazySupervisedDataset` opens `meta["annotation"]` as given and joins
  each `image` onto `meta["root"]` with `os.path.join`; a row without `image` goes to
  `pure_text_get_item`.
- LLaMA-Factory's dataset_info.json (hiyouga/LLaMA-Factory, data/README.md): sharegpt
  `ranking: true` rows with `conversations`, `chosen`, `rejected`, `images`; its
  converter (src/llamafactory/data/converter.py, `DatasetConverter._find_medias`) turns
  a row's missing / None `images` into no media, so text and image rows share a file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from curate.engine import get_engine
from curate.stages.ingest import ingest
from curate.stages.shard import shard
from tests.helpers import jpeg_bytes, rows, write_parquet

ONE = get_engine("local", workers=1)
TEXT_TEMPLATES = ("qwen2_5", "qwen3", "llama3_1")
VIA = ["tokenizer", pytest.param("trl", marks=pytest.mark.slow)]


def _pairs() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(12):
        r: dict[str, Any] = {"id": f"p{i}", "prompt": [{"role": "user",
                                                          "content": f"Question {i}?"}],
                             "chosen": f"Good answer {i}.", "rejected": f"Bad answer {i}.",
                             "image": []}
        if i % 2 == 0:
            r["image"] = [jpeg_bytes(seed=i)]
            r["prompt"][0]["content"] = f"<image> What is in picture {i}?"
        if i == 3:
            r["prompt"] = [{"role": "system", "content": "Answer briefly."},
                           {"role": "user", "content": "Hi"},
                           {"role": "assistant", "content": "Hello!"},
                           {"role": "user", "content": "Question 3?"}]
        out.append(r)
    return out


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A shard folder of 6 image pairs and 6 text pairs, with every export."""
    tmp = tmp_path_factory.mktemp("consumers")
    src = write_parquet(tmp / "pairs.parquet", _pairs())
    ingest("generic", [str(src)], tmp / "in", source="mix", engine=ONE)
    out = tmp / "shards"
    shard([tmp / "in"], out, shards=2, eval_fraction=0.25, seed=1,
          formats=["trl", "dpo", "llamafactory", "mpo"], engine=ONE)
    return out


def _template(name: str) -> str:
    """A chat template as the installed `trl` ships it (found without importing trl)."""
    import importlib.util

    spec = importlib.util.find_spec("trl")
    assert spec is not None and spec.submodule_search_locations, "trl is a dev dependency"
    folder = Path(next(iter(spec.submodule_search_locations))) / "chat_templates"
    return (folder / f"{name}.jinja").read_text()


def _tokenizer(template: str) -> Any:
    from curate.models.tiny import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    tok.chat_template = _template(template)
    return tok


def _load(folder: Path, config: str, tmp: Path) -> list[dict[str, Any]]:
    """All rows of one config of the folder's dataset card, as `datasets` gives them."""
    import datasets

    ds = datasets.load_dataset(str(folder), config, cache_dir=str(tmp / "hf"))
    return [r for split in ds.values() for r in split]


def _render(row: dict[str, Any], template: str, via: str = "tokenizer") -> dict[str, str]:
    """prompt / chosen / rejected as the trainer renders them (see the module docstring)."""
    example = {k: row[k] for k in ("prompt", "chosen", "rejected")}
    tok = _tokenizer(template)
    if via == "trl":
        from trl.data_utils import apply_chat_template

        return apply_chat_template(example, tok)
    prompt = tok.apply_chat_template(example["prompt"], tokenize=False,
                                     add_generation_prompt=True)
    out = {"prompt": prompt}
    for k in ("chosen", "rejected"):
        full = tok.apply_chat_template(example["prompt"] + example[k], tokenize=False)
        out[k] = full[len(os.path.commonprefix([prompt, full])):]
    return out


@pytest.mark.parametrize("via", VIA)
@pytest.mark.parametrize("fmt", ["trl", "dpo"])
@pytest.mark.parametrize("template", TEXT_TEMPLATES)
def test_text_rows_render_their_text_with_real_chat_templates(
        mixed: Path, tmp_path: Path, fmt: str, template: str, via: str) -> None:
    """A text-only pair in `FMT/text` renders with Qwen2.5's, Qwen3's and Llama 3.1's
    templates through TRL's own `apply_chat_template`: its prompt, chosen and rejected
    texts appear, and no Python repr of content parts."""
    src = {r["pair_id"]: r for r in rows(mixed)}
    got = _load(mixed, f"{fmt}_text", tmp_path)
    assert sorted(r["pair_id"] for r in got) == sorted(k for k, r in src.items()
                                                       if not r["images"])
    for row in got:
        want = src[row["pair_id"]]
        out = _render(row, template, via)
        assert want["chosen"] in out["chosen"] and want["rejected"] in out["rejected"]
        assert want["rejected"] not in out["chosen"]
        for m in want["prompt"]:
            assert m["content"] in out["prompt"]
        assert "'type'" not in out["prompt"] + out["chosen"]  # no repr of typed parts
        if fmt == "dpo":
            assert (row["chosen_score"], row["rejected_score"]) == (want["chosen_score"],
                                                                    want["rejected_score"])


@pytest.mark.parametrize("via", VIA)
@pytest.mark.parametrize("template", TEXT_TEMPLATES)
def test_typed_parts_on_a_text_row_break_those_templates(template: str, via: str) -> None:
    """The control: the layout the exports wrote before (typed parts on every row once
    any pair had an image) fails or misrenders with the same templates, so the test
    above can tell the two apart."""
    row = {"prompt": [{"role": "user", "content": [{"type": "text", "text": "Question?"}]}],
           "chosen": [{"role": "assistant", "content": [{"type": "text", "text": "Yes."}]}],
           "rejected": [{"role": "assistant", "content": [{"type": "text", "text": "No."}]}]}
    try:
        out = _render(row, template, via)
    except TypeError as exc:  # Qwen2.5: '<|im_start|>' + role + '\n' + content
        assert "list" in str(exc)
        return
    rendered = out["prompt"] + out["chosen"]
    assert "Question?" not in rendered or "'type'" in rendered


@pytest.mark.parametrize("via", VIA)
@pytest.mark.parametrize("fmt", ["trl", "dpo"])
def test_vision_rows_render_with_qwen2_5_vl_template(mixed: Path, tmp_path: Path,
                                                     fmt: str, via: str) -> None:
    """A pair with images in `FMT/vision`: typed parts with one image placeholder per
    image (Qwen2.5-VL's template turns each into its vision tokens) and the images as
    PIL images of the source's size."""
    src = {r["pair_id"]: r for r in rows(mixed)}
    got = _load(mixed, f"{fmt}_vision", tmp_path)
    assert sorted(r["pair_id"] for r in got) == sorted(k for k, r in src.items() if r["images"])
    for row in got:
        want = src[row["pair_id"]]
        out = _render(row, "qwen2_5_vl", via)
        n = len(want["images"])
        assert out["prompt"].count("<|vision_start|><|image_pad|><|vision_end|>") == n == len(
            row["images"])
        assert "What is in picture" in out["prompt"] and want["chosen"] in out["chosen"]
        assert [im.size for im in row["images"]] == [(im["width"], im["height"])
                                                     for im in want["images"]]


def test_only_writes_one_kind_in_every_export(mixed: Path, tmp_path: Path, run_cli) -> None:
    """`--only vision` / `--only text`: each export holds just that kind; the kept shards
    are the same as without it."""
    src_in = mixed.parent / "in"
    src = {r["pair_id"]: r for r in rows(mixed)}
    for kind in ("vision", "text"):
        out = tmp_path / kind
        run_cli("shard", src_in, "--out", out, "--shards", "2", "--eval-fraction", "0.25",
                "--seed", "1", "--format", "trl", "--format", "dpo", "--format",
                "llamafactory", "--format", "mpo", "--only", kind, "--workers", "1")
        assert sorted(p.name for p in (out / "trl").iterdir()) == [kind]
        assert sorted(p.name for p in (out / "dpo").iterdir()) == [kind]
        assert {p.name: p.read_bytes() for p in (out / "kept").iterdir()} == {
            p.name: p.read_bytes() for p in (mixed / "kept").iterdir()}
        lf = [r for s in ("train", "eval")
              for r in json.loads((out / "llamafactory" / f"{s}.json").read_text())]
        mpo = [json.loads(line) for s in ("train", "eval")
               for line in (out / "mpo" / f"{s}.jsonl").read_text().splitlines()]
        for records in (lf, mpo):
            ids = sorted(r["pair_id"] for r in records)
            assert ids == sorted(k for k, r in src.items() if bool(r["images"]) == (kind ==
                                                                                    "vision"))
        info = json.loads((out / "llamafactory" / "dataset_info.json").read_text())
        assert ("images" in info["train"]["columns"]) == (kind == "vision")
    bad = run_cli("shard", src_in, "--out", tmp_path / "bad", "--format", "trl", "--only",
                  "audio", expect=2)
    assert "--only must be one of text, vision" in bad.output
    bad = run_cli("shard", src_in, "--out", tmp_path / "bad", "--only", "text", expect=2)
    assert "give a --format" in bad.output
    assert not (tmp_path / "bad").exists()


def test_llamafactory_rows_per_kind(mixed: Path, tmp_path: Path) -> None:
    """LLaMA-Factory loads each dataset_info.json entry (a sharegpt ranking file) with
    `datasets`' json loader, one entry at a time: mixed rows share a file, image rows
    name files that exist, text rows have no `images` (None once loaded), so
    LLaMA-Factory treats them as text."""
    import datasets

    folder = mixed / "llamafactory"
    info = json.loads((folder / "dataset_info.json").read_text())
    src = {r["pair_id"]: r for r in rows(mixed)}
    loaded = [r for e in info.values() for r in datasets.load_dataset(
        "json", data_files=str(folder / e["file_name"]), cache_dir=str(tmp_path / "h"))["train"]]
    seen = 0
    for row in loaded:
        want = src[row["pair_id"]]
        paths = row[info["train"]["columns"]["images"]]
        if want["images"]:
            assert [os.path.isfile(folder / p) for p in paths] == [True] * len(want["images"])
        else:
            assert paths is None
        seen += 1
    assert seen == 12


def _internvl_rows(meta_path: str) -> list[tuple[dict[str, Any], list[str]]]:
    """What InternVL's `build_datasets` + `LazySupervisedDataset` do with a meta file:
    `json.loads(open(meta_path).read())`, `open(meta['annotation'])`, and for each row
    `os.path.join(meta['root'], image)` for one image or each image of a list."""
    out = []
    for meta in json.loads(open(meta_path).read()).values():  # noqa: SIM115 - as InternVL
        with open(meta["annotation"]) as f:
            for line in f.readlines():
                item = json.loads(line)
                images = item.get("image") or []
                images = images if isinstance(images, list) else [images]
                out.append((item, [os.path.join(meta["root"], p) for p in images]))
    return out


def test_mpo_meta_loads_from_another_working_directory(mixed: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """With absolute paths (the default for a local OUT), InternVL's loader finds the
    annotation and every image when run from its own folder, not OUT/mpo."""
    elsewhere = tmp_path / "internvl_chat"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    src = {r["pair_id"]: r for r in rows(mixed)}
    meta = json.loads((mixed / "mpo" / "meta.json").read_text())["curate-train"]
    assert os.path.isabs(meta["root"]) and os.path.isabs(meta["annotation"])
    got = _internvl_rows(str(mixed / "mpo" / "meta.json"))
    got += _internvl_rows(str(mixed / "mpo" / "meta_eval.json"))
    assert sorted(item["pair_id"] for item, _ in got) == sorted(src)
    for item, paths in got:
        want = src[item["pair_id"]]
        assert [Path(p).read_bytes() for p in paths] == [im["bytes"] for im in want["images"]]
        assert ("image" in item) == bool(want["images"])  # text rows: pure_text_get_item


def test_mpo_relative_paths_on_request(mixed: Path, tmp_path: Path, run_cli,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """`--no-absolute-paths`: root "." and relative paths, which work from OUT/mpo and
    fail from anywhere else (the bug `--absolute-paths` fixes)."""
    out = tmp_path / "rel"
    run_cli("shard", mixed.parent / "in", "--out", out, "--shards", "2", "--format", "mpo",
            "--no-absolute-paths", "--workers", "1")
    meta = json.loads((out / "mpo" / "meta.json").read_text())["curate-train"]
    assert (meta["root"], meta["annotation"]) == (".", "train.jsonl")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError):
        _internvl_rows(str(out / "mpo" / "meta.json"))
    monkeypatch.chdir(out / "mpo")
    got = _internvl_rows("meta.json")
    assert len(got) == 12 and all(os.path.isfile(p) for _, ps in got for p in ps)
    bad = run_cli("shard", mixed.parent / "in", "--out", f"file://{tmp_path}/uri",
                  "--format", "mpo", "--absolute-paths", expect=2)
    assert "not a local folder" in bad.output
