"""``taktline demo``: the main job of ``make demo``.

It runs the whole journey on embedded defaults, step by step, each step visible:
simulate the body-shop line under the classic rules and print the KPI comparison.
(Later steps — train, evaluate, register, serve — are added by their parts as they land.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

console = Console()

DEMO_RULES = ("FIFO", "SPT", "EDD", "ATC", "SAME")


def simulate_rules(
    line: str, replications: int, seed: int, out: Path
) -> dict[str, dict[str, float]]:
    """Step 1: the line under each classic rule, on common random numbers."""
    from rich.progress import Progress

    from taktline.agents.rules import get_rule
    from taktline.envs.eventlog import gantt_bars
    from taktline.envs.jobshop.gantt import plot_gantt
    from taktline.envs.kpis import summarize
    from taktline.envs.spec import load_spec
    from taktline.envs.twin import Twin

    spec = load_spec(line)
    results: dict[str, dict[str, float]] = {}
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"simulating {line}", total=len(DEMO_RULES) * replications)
        for name in DEMO_RULES:
            runs = []
            for i in range(replications):
                twin = Twin(spec, seed + i, get_rule(name), log_events=(i == 0))
                twin.run()
                if i == 0 and name == "SAME":
                    bars = [b for b in gantt_bars(twin) if b["start"] < 240.0]
                    plot_gantt(bars, out / f"{line}_gantt.png", title=f"{line} under SAME")
                runs.append(twin.kpis())
                progress.advance(task)
            results[name] = {k: e.mean for k, e in summarize(runs).items()}
    table = Table(title=f"{line}: classic rules, {replications} replications (means)")
    for col in ("rule", "throughput/min", "WIP", "flow time", "late share", "setups", "profit"):
        table.add_column(col, justify="right")
    for name, k in results.items():
        table.add_row(
            name,
            f"{k['throughput']:.3f}",
            f"{k['wip']:.1f}",
            f"{k['flow_time']:.1f}",
            f"{k['share_late']:.0%}",
            f"{k['setups']:.0f}",
            f"{k['profit']:,.0f}",
        )
    console.print(table)
    return results


def demo(
    line: Annotated[str, typer.Option(help="the line to run")] = "bodyshop",
    replications: Annotated[int, typer.Option(min=2)] = 5,
    seed: Annotated[int, typer.Option()] = 0,
    out: Annotated[Path, typer.Option(help="folder for pictures and reports")] = Path("out"),
) -> None:
    """Run the main job: simulate the body shop under the classic rules and compare them."""
    out.mkdir(parents=True, exist_ok=True)
    console.print(Panel.fit("taktline demo — step 1: simulate the line under classic rules"))
    simulate_rules(line, replications, seed, out)
    console.print(f"pictures in {out.resolve()}")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
