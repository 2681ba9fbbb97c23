"""The ``taktline`` command line. Each part registers its commands from its own module.

Every command prints rich tables for people and takes ``--json`` for machines.
"""

from __future__ import annotations

import importlib
from typing import Any

import typer
from typer.core import TyperGroup


class _Group(TyperGroup):
    """The command group: bad input that a command rejects ends as one ``error:`` line, exit 2.

    The handling sits here rather than around ``app()`` so that ``CliRunner.invoke(app, ...)``
    (the tests) exercises exactly what the console entry point runs.
    """

    def invoke(self, ctx: Any) -> Any:  # typer's (vendored) click Context
        from taktline.errors import TaktlineError

        try:
            return super().invoke(ctx)
        except TaktlineError as exc:
            _fail(str(exc))
        except OSError as exc:  # last resort: a file the command did not check up front
            where = f"{exc.filename}: " if exc.filename else ""
            _fail(f"{where}{exc.strerror or exc}")


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


app = typer.Typer(
    cls=_Group,
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
    "taktline.cli_compare",
    "taktline.cli_optimize",
    "taktline.cli_fit",
    "taktline.cli_view",
    "taktline.cli_imitate",
    "taktline.cli_train_jobshop",
)

for _name in _COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def main() -> None:
    """Console entry point; taktline errors become one clear line and exit code 2 (``_Group``)."""
    app()


if __name__ == "__main__":
    main()
