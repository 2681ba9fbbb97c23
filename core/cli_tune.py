"""The ``tune`` command: a Ray Tune sweep over a training config.

``taktline tune SWEEP.yaml [--set key=value ...] [--address HOST:PORT] [--json]`` runs the sweep
(see :mod:`taktline.training.tune`) on a local Ray started on demand, or on the cluster at
``--address`` / ``RAY_ADDRESS``; Tune prints the trial table while it runs, and the command ends
with the trials and the best one.
"""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table


def tune(
    sweep: Annotated[str, typer.Argument(help="sweep YAML (or a bundled example's name)")],
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="override a field of the base config: key.path=value"),
    ] = None,
    address: Annotated[
        str | None, typer.Option("--address", help="Ray cluster (default: RAY_ADDRESS, or local)")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="no trial table while running")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Sweep hyperparameters and env kwargs with Ray Tune (ASHA); register the best policy."""
    from taktline.training.tune import load_sweep
    from taktline.training.tune import sweep as run_sweep

    cfg, base = load_sweep(sweep, list(set_ or []))
    console = Console(stderr=True)
    with contextlib.redirect_stdout(sys.stderr):  # Tune's trial table: stdout stays the result
        best = run_sweep(cfg, base, address=address, console=console, verbose=0 if quiet else 1)
    if json_out:
        typer.echo(json.dumps(best, indent=2, default=str))
        return
    table = Table(title=f"sweep {cfg.name}: {best['metric']} ({len(best['trials'])} trials)")
    for col in ("trial", "params", best["metric"], "steps", "run"):
        table.add_column(col)
    for row in best["trials"]:
        mark = " *" if row["trial_id"] == best["trial_id"] else ""
        params = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row["params"].items()
        )
        score = "—" if row["score"] is None else f"{row['score']:.4g}"
        table.add_row(
            f"{row['trial_id']}{mark}", params, score, str(row["steps"]), str(row["run_id"] or "—")
        )
    Console().print(table)
    if best.get("model_version"):
        Console().print(f"best: registered {cfg.name} version {best['model_version']}")


def register(app: typer.Typer) -> None:
    """Add ``tune`` to the ``taktline`` app."""
    app.command("tune")(tune)


def main() -> None:
    """``python -m taktline.cli_tune SWEEP.yaml``: the command alone (for tests and jobs)."""
    from taktline.errors import TaktlineError

    try:
        typer.run(tune)
    except TaktlineError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
