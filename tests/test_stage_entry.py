"""Every stage has one entry point of one shape, and its options are declared once
(issue 15 item 3; `curate.pipeline.entry`).

- Every registered stage has `run(inputs, out, cfg, *, engine=None, force=False)`,
  returning a Manifest, and a config dataclass; a filter stage's config builds with no
  argument (the demo runs a stage it has no step for with its defaults).
- Each command's option that is a field of its stage's config has the config's default
  (the commands read it from the dataclass), or None (the command then leaves the field
  to the config), or none at all (a required option).
- A RUN_ONLY field (batch sizes) is not recorded, so changing it does not redo an output;
  a recorded field does.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any

import pytest

from curate.manifest import Manifest
from curate.pipeline.entry import RUN_ONLY, configured, defaults, recorded
from curate.pipeline.runner import all_stages
from tests.helpers import write_jsonl

STAGES = list(all_stages().values())


@pytest.mark.parametrize("spec", STAGES, ids=[s.name for s in STAGES])
def test_every_stage_has_one_entry_point_of_one_shape(spec: Any) -> None:
    assert spec.run is not None and spec.config is not None, spec.name
    assert dataclasses.is_dataclass(spec.config)
    sig = inspect.signature(spec.run)
    shape = [(p.name, p.kind, p.default) for p in sig.parameters.values()]
    P = inspect.Parameter
    assert shape == [("inputs", P.POSITIONAL_OR_KEYWORD, P.empty),
                     ("out", P.POSITIONAL_OR_KEYWORD, P.empty),
                     ("cfg", P.POSITIONAL_OR_KEYWORD, P.empty),
                     ("engine", P.KEYWORD_ONLY, None),
                     ("force", P.KEYWORD_ONLY, False)], spec.name
    assert sig.return_annotation in (Manifest, "Manifest")
    assert spec.run.__module__ == f"curate.stages.{spec.name}"
    if spec.filter:
        spec.config()  # every option has a default


def _command(name: str) -> Any:
    import importlib

    return getattr(importlib.import_module(f"curate.commands.{name}"), name)


def _config_classes() -> dict[str, list[type]]:
    """The dataclasses each stage command's options fill."""
    from curate.generation.requests import SamplingParams, Selection
    from curate.models.embedder import EmbedSettings
    from curate.scoring.rules import RewardRules

    out: dict[str, list[type]] = {s.name: [s.config] for s in STAGES if s.config}
    out["similar"].append(EmbedSettings)
    out["decontam"].append(EmbedSettings)
    out["reward"].append(RewardRules)
    out["generate"] += [SamplingParams, Selection]
    return out


# config fields that are no option of the same name: the collaborators the command builds
# from its options (generate's --backend names the kind of backend), and --batch-size,
# which on the model commands is the model's (ModelBatchOpt), not the stage's
NOT_OPTIONS = ("backend", "scorer", "embed", "rules", "sampling", "selection", "batch_size")


def test_each_option_default_is_the_configs_own() -> None:
    checked = 0
    for stage, classes in _config_classes().items():
        params = inspect.signature(_command(stage)).parameters
        for cls in classes:
            for name, default in defaults(cls).items():
                if name not in params or name in NOT_OPTIONS:
                    continue
                option = params[name].default
                if option is inspect.Parameter.empty:
                    continue  # required on the command line (decontam's --against)
                assert option is None or option == default, (
                    f"curate {stage} --{name.replace('_', '-')} defaults to {option!r}, "
                    f"{cls.__name__}.{name} to {default!r}")
                checked += 1
    assert checked >= 30  # the test compared the options, not nothing


def test_the_commands_run_the_stage_entry_point(tmp_path: Path, run_cli, monkeypatch) -> None:
    """`curate dedup` goes through `run` with the config its options name."""
    from curate.commands import dedup as command

    seen: list[Any] = []
    real = command.run

    def spy(inputs: Any, out: Any, cfg: Any, **kw: Any) -> Any:
        seen.append(cfg)
        return real(inputs, out, cfg, **kw)

    monkeypatch.setattr(command, "run", spy)
    src = write_jsonl(tmp_path / "x.jsonl", [{"prompt": "a", "chosen": "b", "rejected": "c"}])
    run_cli("ingest", "generic", str(src), "--out", str(tmp_path / "in"), "--quiet")
    run_cli("dedup", str(tmp_path / "in"), "--out", str(tmp_path / "d"), "--prefer", "x,y",
            "--conflicts", "keep-majority", "--quiet")
    from curate.stages.dedup import DedupConfig

    assert seen == [DedupConfig(prefer=("x", "y"), conflicts="keep-majority")]


def test_configured_replaces_fields_and_recorded_leaves_run_only_ones_out() -> None:
    @dataclasses.dataclass(frozen=True)
    class Cfg:
        a: int = 1
        names: tuple[str, ...] = ()
        batch: int = dataclasses.field(default=8, metadata=RUN_ONLY)

    assert configured(Cfg, None, {"a": 2}) == Cfg(a=2)
    assert configured(Cfg, Cfg(a=3, batch=4), {"names": ("x",)}) == Cfg(3, ("x",), 4)
    assert recorded(Cfg(a=5, names=("p", "q"), batch=99)) == {"a": 5, "names": ["p", "q"]}


def test_a_run_only_option_does_not_redo_an_output_a_recorded_one_does(tmp_path: Path) -> None:
    from curate.engine import get_engine
    from curate.stages.dedup import DedupConfig, run
    from curate.stages.ingest import ingest

    src = write_jsonl(tmp_path / "x.jsonl", [
        {"prompt": f"q{i % 3}", "chosen": "b", "rejected": "c"} for i in range(6)])
    engine = get_engine("local", workers=1)
    ingest("generic", [str(src)], tmp_path / "in", engine=engine)
    out = tmp_path / "d"
    first = run([tmp_path / "in"], out, DedupConfig(), engine=engine)
    stamp = (out / "manifest.json").stat().st_mtime_ns
    again = run([tmp_path / "in"], out, DedupConfig(batch_size=2), engine=engine)
    assert (out / "manifest.json").stat().st_mtime_ns == stamp  # up to date: not redone
    assert again["rows_kept"] == first["rows_kept"] == 3
    run([tmp_path / "in"], out, DedupConfig(conflicts="keep-majority"), engine=engine)
    assert (out / "manifest.json").stat().st_mtime_ns != stamp  # another decision: redone
