"""Environment commands: ``envs`` lists the registered Gymnasium environments."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from taktline.jsonout import echo_json

console = Console()


def envs(json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """List taktline's Gymnasium environments with their default kwargs and spaces."""
    import taktline.envs  # noqa: F401  (registers the ids)
    from taktline.envs.encoding import ENV_IDS
    from taktline.envs.registration import env_info

    rows = [env_info(env_id) for env_id in ENV_IDS]
    if json_out:
        echo_json(rows)
        return
    table = Table(title="Gymnasium environments (gymnasium.make(id, **kwargs))")
    table.add_column("id", no_wrap=True)
    for col in ("default kwargs", "observation space", "action space", "parameters"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            r["id"],
            json.dumps(r["kwargs"]),
            r["observation_space"],
            r["action_space"],
            ", ".join(r["parameters"]),
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("envs")(envs)
