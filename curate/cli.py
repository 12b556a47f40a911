"""The typer app: parses options and calls stages, nothing else.

Each command lives in `curate/commands/<name>.py` with a `register(app)`; heavy
libraries are imported inside the commands so `curate --help` stays instant. Every module
of `curate.commands` with a `register` is a command module: `COMMAND_MODULES` only sets
the order help lists them in, a new command not named there comes after them.
"""

from __future__ import annotations

import importlib

import typer

from curate import __version__
from curate.commands.help_style import show_flags_as_flags
from curate.registry import import_submodules

show_flags_as_flags()
app = typer.Typer(
    name="curate",
    help="Turn raw preference datasets into clean reward-model training data, and train on it.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for the user's shell
    pretty_exceptions_enable=False,
)

COMMAND_MODULES = [
    "curate.commands.ingest",
    "curate.commands.dedup",
    "curate.commands.similar",
    "curate.commands.decontam",
    "curate.commands.reward",
    "curate.commands.shard",
    "curate.commands.pairs",
    "curate.commands.generate",
    "curate.commands.train",
    "curate.commands.eval",
    "curate.commands.demo",
    "curate.commands.report",
    "curate.commands.check",
    "curate.commands.explain",
    "curate.commands.push",
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"curate {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback of an error "
                               "(same as CURATE_DEBUG=1); errors are one line otherwise."),
) -> None:
    """curate: ingest -> dedup -> similar -> decontam -> reward -> shard -> train -> eval."""
    if debug:
        import os

        os.environ["CURATE_DEBUG"] = "1"


for _name in [*COMMAND_MODULES, *(m for m in import_submodules("curate.commands")
                                 if m not in COMMAND_MODULES)]:
    _module = importlib.import_module(_name)
    if hasattr(_module, "register"):
        _module.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
