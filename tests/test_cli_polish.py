"""What a user expects of the CLI: shell completion, every --format in `shard --help`,
flags shown as flags (no `<bool>` after `--force`)."""

from __future__ import annotations

import re

import pytest


def _invoke(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
    from typer.testing import CliRunner

    from curate.cli import app

    res = CliRunner().invoke(app, args, prog_name="curate", env=env or {})
    return res.exit_code, res.output


def test_shell_completion_completes_commands_and_options(monkeypatch) -> None:
    import typer.completion

    # --show-completion is a flag that names the shell it runs under; the tests may run
    # under sh (make's recipe shell), which typer cannot complete for
    monkeypatch.setattr(typer.completion, "_get_shell_name", lambda: "bash")
    code, out = _invoke([], {"_CURATE_COMPLETE": "complete_bash", "COMP_WORDS": "curate sh",
                             "COMP_CWORD": "1"})
    assert code == 0 and out.split() == ["shard"]
    code, out = _invoke([], {"_CURATE_COMPLETE": "complete_bash",
                             "COMP_WORDS": "curate shard x --ab", "COMP_CWORD": "3"})
    assert code == 0 and out.split() == ["--absolute-paths"]
    code, out = _invoke(["--show-completion"])
    assert code == 0 and "complete -o default -F _curate_completion curate" in out
    assert "--install-completion" in _invoke(["--help"])[1]


def test_shard_help_lists_every_registered_format() -> None:
    from curate.export import EXPORTERS as FORMAT_DESCRIPTIONS
    from curate.export import formats

    assert sorted(FORMAT_DESCRIPTIONS) == formats() == ["dpo", "llamafactory", "mpo", "trl"]
    code, out = _invoke(["shard", "--help"], {"COLUMNS": "200"})
    text = " ".join(out.split())
    assert code == 0
    for name in formats():
        assert re.search(rf"\b{name} \(", text), name


def _commands() -> list[str]:
    from curate.cli import app

    return sorted(c.name or c.callback.__name__ for c in app.registered_commands)


@pytest.mark.parametrize("command", _commands())
def test_flags_are_shown_without_a_type(command: str) -> None:
    code, out = _invoke([command, "--help"], {"COLUMNS": "200"})
    assert code == 0
    assert "<bool>" not in out
    assert re.search(r"--help\s+Show this message", out)
