"""The ``optimize`` command: tune a rule family's parameters on a line's twin.

``taktline optimize LINE --family ATC --trials N --replications R [--minutes M] [--json]``
searches with Ray Tune (Optuna's TPE, ASHA over replications, common random numbers), judges
the best tuned rule against the best untuned rule on held-out seeds, logs both to MLflow and
registers the winner only when it wins (see :mod:`taktline.training.tune_rules`).
"""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table


def optimize(
    line: Annotated[str, typer.Argument(help="a bundled line name or a spec file")],
    family: Annotated[
        str, typer.Option("--family", help="ATC, SAME, SLACKHYB (dispatching) or CONWIP (release)")
    ] = "ATC",
    trials: Annotated[int, typer.Option("--trials", help="parameter sets to try")] = 20,
    replications: Annotated[
        int, typer.Option("--replications", "-n", help="seeds per trial (ASHA's iterations)")
    ] = 8,
    holdout: Annotated[int, typer.Option("--holdout", help="held-out seeds for the verdict")] = 20,
    minutes: Annotated[
        float | None, typer.Option("--minutes", help="wall-clock limit of the search")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="first search seed")] = 0,
    dispatch: Annotated[
        str, typer.Option("--dispatch", help="dispatching rule used with --family CONWIP")
    ] = "FIFO",
    model_name: Annotated[
        str | None, typer.Option("--model-name", help="registered model (default LINE-FAMILY)")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Tune a rule family on the twin; keep it only if it beats the best untuned rule."""
    from taktline.errors import check_number
    from taktline.training.tune_rules import optimize as run_optimize

    check_number("--seed", seed, minimum=0, hint="seeds are non-negative integers")
    console = Console(stderr=True)
    with contextlib.redirect_stdout(sys.stderr):  # Ray's chatter: stdout stays the result
        result = run_optimize(
            line,
            family,
            trials=trials,
            replications=replications,
            holdout=holdout,
            minutes=minutes,
            seed=seed,
            dispatch=dispatch,
            model_name=model_name,
            console=console,
        )
    if json_out:
        typer.echo(json.dumps(result, indent=2, default=str))
        return
    v = result["verdict"]
    lo, hi = v["ci95"]
    table = Table(
        title=f"optimize {result['line']} {result['family']}: {result['trials_run']} trials, "
        f"{v['n']} held-out seeds (profit, paired 95% CI)"
    )
    for col in ("", "rule", "release", "held-out profit"):
        table.add_column(col)
    table.add_row(
        "tuned", result["tuned"]["rule"], result["tuned"]["release"], f"{v['policy_mean']:,.1f}"
    )
    table.add_row(
        "best untuned",
        result["untuned"]["rule"],
        result["untuned"]["release"],
        f"{v['baseline_mean']:,.1f}",
    )
    Console().print(table)
    Console().print(
        f"Δ tuned − untuned {v['delta']:+,.1f} (95% CI {lo:+,.1f} .. {hi:+,.1f}), p {v['p']:.3g}; "
        f"chosen: {result['chosen']['rule']} + {result['chosen']['release']}"
        + (
            f"; registered {result['model_name']} version {result['model_version']}"
            if result["model_version"]
            else "; not registered (no significant win)"
        ),
        markup=False,
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add ``optimize`` to the ``taktline`` app."""
    app.command("optimize")(optimize)
