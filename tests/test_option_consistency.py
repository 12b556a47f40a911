"""One meaning per option: an option name has one type, help text and default on every
command that takes it (issue 22 item 7), train takes its data like every other stage,
every command that runs a model takes --device and passes it on, and no help shows a
flag as `<bool>`."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from typing import Any

import pytest
import typer
import typer.core
from typer.testing import CliRunner

from curate.cli import app
from curate.commands.options import MODEL_ALIASES, MODEL_BATCH
from tests.rm_helpers import one_torch_thread, synthetic_pairs  # noqa: F401

# Names whose meaning differs per command, so their type, help or default may differ
# too. Each is a different thing under the same (long established) name; renaming one
# would break every script that uses it.
DIFFERENT_MEANING = {
    "--out": "what a command writes differs: a dataset folder (the stages), a checkpoint "
             "(train), a JSON report (eval), an HTML file (report), a run folder (demo), a "
             "result file (check)",
    "--model": "the model a command runs differs: an embedder (similar, decontam), a "
               "reward-model checkpoint (reward, pairs, eval), a base model (train, reward "
               "--kfold), a policy (generate), a training output folder (report); the "
               "aliases they accept share one description (test below)",
    "--config": "ingest: a hub dataset's config name; train: a training config file",
    "--eval": "train: held-out pairs; report: eval reports to show",
    "--format": "shard: training-framework exports; check: the result's format",
    "--k": "similar: neighbours searched; pairs: responses on each side",
    "--cache": "similar, decontam: embeddings (or 'none'); generate: finished samples",
}
MODEL_COMMANDS = ("similar", "decontam", "reward", "pairs", "generate", "train", "eval")


def _commands() -> dict[str, Any]:
    return typer.main.get_command(app).commands  # type: ignore[attr-defined]


def _options_by_name() -> dict[str, dict[str, Any]]:
    """{--name: {command: option}} over the options a user sees (hidden ones left out)."""
    by_name: dict[str, dict[str, Any]] = defaultdict(dict)
    for cmd_name, cmd in _commands().items():
        for p in cmd.params:
            if isinstance(p, typer.core.TyperOption) and not p.hidden:
                long = max((o for o in p.opts if o.startswith("--")), key=len)
                by_name[long][cmd_name] = p
    return by_name


def _signature(p: Any) -> tuple[Any, ...]:
    return (p.type_descriptor.annotation, p.help, p.default, tuple(p.secondary_opts),
            p.is_flag)


def test_a_shared_option_means_one_thing() -> None:
    shared = {n: cmds for n, cmds in _options_by_name().items() if len(cmds) > 1}
    assert len(shared) > 15  # the walk found the options at all
    for name, cmds in sorted(shared.items()):
        if name in DIFFERENT_MEANING:
            continue
        variants: dict[tuple[Any, ...], list[str]] = defaultdict(list)
        for cmd_name, p in cmds.items():
            variants[_signature(p)].append(cmd_name)
        assert len(variants) == 1, f"{name} differs between commands: {dict(variants)}"


def test_the_different_meaning_list_stays_minimal() -> None:
    """Every name excused above is on several commands and really differs there."""
    by_name = _options_by_name()
    for name in DIFFERENT_MEANING:
        cmds = by_name.get(name, {})
        assert len(cmds) > 1, f"{name}: on {sorted(cmds)} only; drop it from the list"
        assert len({_signature(p) for p in cmds.values()}) > 1, \
            f"{name} now means the same everywhere; drop it from the list"


def test_model_aliases_have_one_description() -> None:
    for cmd_name, p in _options_by_name()["--model"].items():
        for alias, description in MODEL_ALIASES.items():
            if f"'{alias}'" in (p.help or ""):
                assert description in p.help, (cmd_name, alias, p.help)
    base = {c for c, p in _options_by_name()["--model"].items()
            if all(d in (p.help or "") for d in MODEL_ALIASES.values())}
    assert {"train", "reward"} <= base


def test_every_model_command_takes_device() -> None:
    by_name = _options_by_name()
    assert set(MODEL_COMMANDS) <= set(by_name["--device"]), sorted(by_name["--device"])


def test_train_takes_positional_data_like_the_other_stages() -> None:
    train = _commands()["train"]
    args = [p for p in train.params if isinstance(p, typer.core.TyperArgument)]
    assert [a.name for a in args] == ["data"] and args[0].nargs == -1
    data_opt = [p for p in train.params if "--data" in getattr(p, "opts", [])]
    assert data_opt and data_opt[0].hidden  # the deprecated spelling: works, not shown
    shown = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output
    assert "--data" not in shown and "curate train work/shards --model" in shown


@pytest.mark.parametrize("command", [None, *sorted(_commands())])
def test_help_shows_no_bool_type(command: str | None) -> None:
    args = ["--help"] if command is None else [command, "--help"]
    res = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "<bool>" not in res.output


# -- the options reach the code they name -------------------------------------------------
def _recorder(seen: dict[str, Any]) -> Any:
    def record(*args: Any, **kwargs: Any) -> Any:
        seen.update(kwargs, args=args)
        raise typer.Exit(7)  # stop the command there: nothing is loaded or written
    return record


def _settings_recorder(seen: dict[str, Any]) -> Any:
    """Records the embedding settings of the config the command hands the stage's `run`."""
    def record(inputs: Any, out: Any, cfg: Any, **kwargs: Any) -> Any:
        seen.update(device=cfg.embed.device, batch_size=cfg.embed.batch_size)
        raise typer.Exit(7)
    return record


CASES = {
    # command: (the function the command hands the device to, a recorder, arguments)
    "similar": ("curate.commands.similar.run", _settings_recorder, []),
    "decontam": ("curate.commands.decontam.run", _settings_recorder,
                 ["--against", "{tmp}/eval"]),
    "reward": ("curate.stages.reward.make_scorer", _recorder, ["--model", "{tmp}/ckpt"]),
    "pairs": ("curate.stages.pairs.make_scorer", _recorder, ["--model", "{tmp}/ckpt"]),
    "generate": ("curate.generation.hf.TransformersBackend", _recorder,
                 ["--model", "tiny-qwen2.5-vl"]),
    "train": ("curate.train.trainer.train_reward_model", _recorder, ["--model", "minilm"]),
    "eval": ("curate.models.reward_model.load_reward_model", _recorder,
             ["--model", "{tmp}/ckpt"]),
}


@pytest.mark.parametrize("command", MODEL_COMMANDS)
@pytest.mark.parametrize("device", [None, "meta"])
def test_device_and_batch_size_reach_the_model(command: str, device: str | None,
                                                tmp_path: Any, monkeypatch: Any) -> None:
    target, make_recorder, extra = CASES[command]
    module, name = target.rsplit(".", 1)
    seen: dict[str, Any] = {}
    monkeypatch.setattr(__import__(module, fromlist=[name]), name, make_recorder(seen))
    args = [command, str(tmp_path / "in"), "--out", str(tmp_path / "out"),
            *[a.format(tmp=tmp_path) for a in extra]]
    if command == "eval":
        args.remove("--out")
        args.remove(str(tmp_path / "out"))
    if device:
        args += ["--device", device]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 7, res.output
    if device:
        assert seen["device"] == device
    elif command in ("similar", "decontam"):
        assert seen["device"] == "cpu"  # the embedding stages' default, as it always was
    elif command != "eval":  # eval resolves its default itself: a GPU where there is one
        assert seen["device"] is None
    if command in ("reward", "pairs", "generate"):
        batch = seen.get("batch_size", seen["args"][1] if len(seen["args"]) > 1 else None)
        assert batch == MODEL_BATCH


# -- train through the CLI, the new form and the old ----------------------------------------
@pytest.fixture(scope="module")
def shards(tmp_path_factory: Any) -> Any:
    import pyarrow.parquet as pq

    folder = tmp_path_factory.mktemp("shards")
    pq.write_table(synthetic_pairs(n_image=4, n_text=4), folder / "part-00000.parquet")
    config = folder.parent / "one-epoch.json"
    config.write_text(json.dumps({"stages": [{"name": "all", "data": "all", "lr": 1e-3,
                                              "epochs": 1}],
                                  "batch_size": 4, "max_length": 96, "warmup_ratio": 0.0,
                                  "bf16": False}))
    return folder, config


def test_train_takes_data_as_arguments(run_cli: Any, shards: Any, tmp_path: Any) -> None:
    from curate.models.tiny import TINY_NAME

    data, config = shards
    res = run_cli("train", data, "--model", TINY_NAME, "--out", tmp_path / "rm",
                  "--config", config, "--device", "cpu", "--quiet")
    m = json.loads((tmp_path / "rm" / "metrics.json").read_text())
    assert m["train_pairs"] == 8 and m["device"] == "cpu" and m["bf16"] is False
    assert "deprecated" not in res.output


def test_train_data_option_still_works_with_a_warning(shards: Any, tmp_path: Any) -> None:
    from curate.models.tiny import TINY_NAME

    data, config = shards
    res = CliRunner().invoke(app, ["train", "--data", str(data), "--model", TINY_NAME,
                                   "--out", str(tmp_path / "rm"), "--config", str(config),
                                   "--quiet"])
    assert res.exit_code == 0, res.output
    assert "--data is deprecated" in res.stderr
    assert json.loads((tmp_path / "rm" / "metrics.json").read_text())["train_pairs"] == 8


@pytest.mark.parametrize("args, message", [
    ([], "name the training data"),
    (["--bf16", "true"], "--bf16 takes no value now"),
])
def test_train_usage_errors(args: list[str], message: str, tmp_path: Any) -> None:
    res = CliRunner().invoke(app, ["train", *args, "--model", "minilm",
                                   "--out", str(tmp_path / "rm")])
    assert res.exit_code == 2, res.output
    assert message in re.sub(r"\s+", " ", res.stderr)
