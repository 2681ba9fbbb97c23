"""``taktline compare LINE``: the optimizer portfolio against the best single rule, honestly.

``taktline compare LINE [-p REF ...] [--lookahead REF|none] [--episodes N] [--minutes M]
[--seed S] [--workers W] [--chart verdict.png] [--json] [--no-mlflow]``
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from taktline.errors import PolicyError

err_console = Console(stderr=True)


def compare(
    line: Annotated[str, typer.Argument(help="a bundled line name or a spec file")],
    policy: Annotated[
        list[str] | None,
        typer.Option(
            "--policy",
            "-p",
            help="more policies: a tuned rule ATC(k=2.3), models:/NAME@ALIAS, a bundle "
            "(repeatable)",
        ),
    ] = None,
    lookahead: Annotated[
        str,
        typer.Option(
            help="'auto' (base = the best rule on pilot seeds), a LOOKAHEAD(...) reference, "
            "or 'none'"
        ),
    ] = "auto",
    rules: Annotated[
        str | None,
        typer.Option(help="baseline rules, comma-separated (default: every built-in rule)"),
    ] = None,
    episodes: Annotated[int, typer.Option(help="held-out seeds (paired episodes), at most")] = 10,
    minutes: Annotated[
        float | None, typer.Option(help="wall-time budget: start no round after it (>= 2 run)")
    ] = None,
    seed: Annotated[int, typer.Option(help="the first held-out seed")] = 0,
    workers: Annotated[int, typer.Option(help="rounds at once as Ray tasks (1: here)")] = 1,
    chart: Annotated[Path | None, typer.Option(help="bar chart of the verdict (png/svg)")] = Path(
        "compare.png"
    ),
    mlflow_log: Annotated[
        bool, typer.Option("--mlflow/--no-mlflow", help="log the comparison to MLflow")
    ] = True,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Best rule, lookahead and any other policy on the same held-out seeds: objective with
    95% CI, paired Δ to the best rule with CI and p, decision latency p50/p99, a bar chart."""
    from rich.progress import Progress

    from taktline.envs.files import check_output_file
    from taktline.training.compare import bar_chart, compare, log_comparison

    if seed < 0:
        raise PolicyError(f"--seed: must be >= 0, got {seed}")
    if episodes < 2:
        raise PolicyError(f"--episodes: must be >= 2 for a paired CI, got {episodes}")
    if minutes is not None and not (minutes > 0 and math.isfinite(minutes)):
        raise PolicyError(f"--minutes: must be a positive number, got {minutes}")
    if workers < 1:
        raise PolicyError(f"--workers: must be >= 1, got {workers}")
    if chart is not None:
        check_output_file(chart, "--chart", (".png", ".svg", ".pdf"))
    names = [r.strip() for r in rules.split(",") if r.strip()] if rules is not None else None
    if names is not None and not names:
        raise PolicyError(f"--rules: no rule named in {rules!r}; e.g. --rules FIFO,SPT,SAME")
    look = None if lookahead.strip().lower() == "none" else lookahead.strip()
    with Progress(console=err_console, transient=True, disable=json_out) as progress:
        task = progress.add_task("comparing (rounds of paired episodes)", total=episodes)
        result = compare(
            line,
            list(policy or []),
            rules=names,
            lookahead=look,
            episodes=episodes,
            minutes=minutes,
            seed=seed,
            workers=workers,
            on_round=lambda done, _total: progress.update(task, completed=done),
        )
    path = bar_chart(result, chart) if chart is not None else None
    run_id = log_comparison(result, path) if mlflow_log else None
    if json_out:
        from taktline.jsonout import to_json

        data = result.as_dict()
        data["chart"] = str(path) if path else None
        data["mlflow_run_id"] = run_id
        typer.echo(to_json(data))
        return
    _print(result, path, run_id)


def _print(result: object, chart: Path | None, run_id: str | None) -> None:
    from taktline.tables import compact, estimate_cell, fitting_table, terminal_console
    from taktline.training.compare import Comparison, _short

    assert isinstance(result, Comparison)
    console = terminal_console()
    ev = result.evaluation
    t = fitting_table(
        f"{result.line}: {ev.metric} per episode, {len(ev.cases)} paired seeds; "
        f"Δ = policy - best rule ({result.reference})"
    )
    for col in ("policy", "mean ±CI", "Δ ±CI", "p", "verdict", "p50 ms", "p99 ms"):
        t.add_column(col, justify="left" if col in ("policy", "verdict") else "right")
    short = {"better": "better", "worse": "worse", "no significant difference": "n.s."}
    for r in result.rows():
        is_ref = r["verdict"] == "reference"
        half_diff = (r["diff_ci_high"] - r["diff_ci_low"]) / 2
        t.add_row(
            _short(r["policy"]),
            estimate_cell(r["mean"], (r["ci_high"] - r["ci_low"]) / 2),
            "—" if is_ref else estimate_cell(r["diff_mean"], half_diff),
            "" if is_ref else f"{r['p_ttest']:.2g}",
            "best rule" if is_ref else short.get(r["verdict"], r["verdict"]),
            compact(r["latency_p50_ms"]),
            compact(r["latency_p99_ms"]),
        )
    console.print(t)
    winner = result.winner()
    verdict = (
        f"winner: {_short(winner)} (beats the best rule {result.reference} on held-out seeds)"
        if winner != result.reference
        else f"winner: {result.reference} — nothing beat the best rule significantly"
    )
    console.print(verdict, highlight=False)
    if chart is not None:
        console.print(f"chart: {chart}", highlight=False)
    if run_id is not None:
        console.print(f"MLflow run: {run_id}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``compare`` to the ``taktline`` app."""
    app.command("compare")(compare)
