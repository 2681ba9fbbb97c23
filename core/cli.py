"""The ``taktline`` command line. Each part registers its commands from its own module.

Every command prints rich tables for people and takes ``--json`` for machines.
"""

from __future__ import annotations

import importlib
import sys

import typer

app = typer.Typer(
    name="taktline",
    help="Digital twins of production lines: simulate, schedule, train, evaluate and serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Command modules, each with ``register(app)``; listed here so the CLI has one place to look.
_COMMAND_MODULES = (
    "taktline.cli_line",
    "taktline.cli_jobshop",
    "taktline.cli_envs",
    "taktline.cli_train",
    "taktline.cli_serve",
    "taktline.cli_tune",
    "taktline.cli_demo",
)

for _name in _COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def main() -> None:
    """Console entry point: run the app and turn taktline errors into one clear line."""
    from taktline.errors import TaktlineError

    try:
        app()
    except TaktlineError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
