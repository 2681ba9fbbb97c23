"""Line commands: ``lines``, ``validate``, ``simulate``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from taktline.errors import PolicyError, SpecError, check_number
from taktline.jsonout import echo_json as _print_json

if TYPE_CHECKING:
    from taktline.envs.spec import LineSpec
    from taktline.envs.twin import Twin

console = Console()
err_console = Console(stderr=True)  # progress and notes: keeps --json stdout clean


def lines(json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """List the bundled example lines."""
    from taktline.envs.spec import bundled_lines, load_spec

    rows = []
    for name in bundled_lines():
        spec = load_spec(name)
        utils = spec.utilizations()
        rows.append(
            {
                "name": name,
                "stations": len(spec.stations),
                "machines": sum(s.machines for s in spec.stations),
                "products": len(spec.products),
                "arrivals": spec.arrivals.kind,
                "max_utilization": round(max(utils), 3) if utils else None,
                "description": " ".join(spec.description.split()),
            }
        )
    if json_out:
        _print_json(rows)
        return
    table = Table(title="bundled lines")
    for col in ("name", "stations", "machines", "products", "arrivals", "max util", "about"):
        table.add_column(col, overflow="fold")
    for r in rows:
        mu = r["max_utilization"]
        table.add_row(
            str(r["name"]),
            str(r["stations"]),
            str(r["machines"]),
            str(r["products"]),
            str(r["arrivals"]),
            "-" if mu is None else f"{mu:.2f}",
            str(r["description"])[:70],
        )
    console.print(table)


def validate(
    line: Annotated[str, typer.Argument(help="a bundled line name or a YAML/JSON spec file")],
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Check a line spec and print its problems (exit code 1 when it cannot run)."""
    from taktline.envs.spec import load_spec

    try:
        spec = load_spec(line)
    except SpecError as exc:
        if json_out:
            _print_json({"ok": False, "problems": exc.problems, "warnings": []})
        else:
            console.print(f"[red]✗ {exc.source or line}[/red]")
            for p in exc.problems:
                console.print(f"  [red]-[/red] {p}")
        raise typer.Exit(1) from None
    warnings = spec.warnings()
    if json_out:
        _print_json(
            {
                "ok": True,
                "problems": [],
                "warnings": warnings,
                "spec_hash": spec.spec_hash(),
                "utilization": spec.utilizations(),
            }
        )
        return
    console.print(
        f"[green]✓ {line}[/green]: {len(spec.stations)} stations, "
        f"{len(spec.products)} products, spec hash {spec.spec_hash()}"
    )
    for w in warnings:
        console.print(f"  [yellow]warning:[/yellow] {w}")


def simulate(
    line: Annotated[str, typer.Argument(help="a bundled line name or a spec file")],
    policy: Annotated[
        list[str] | None,
        typer.Option("--policy", "-p", help="dispatching rule (repeat to compare), e.g. SPT"),
    ] = None,
    release: Annotated[
        str, typer.Option(help="release rule: IMMEDIATE, CONWIP(w) or KANBAN(cards)")
    ] = "IMMEDIATE",
    horizon: Annotated[float | None, typer.Option(help="simulated time (spec default)")] = None,
    warmup: Annotated[float | None, typer.Option(help="warm-up deleted (spec default)")] = None,
    replications: Annotated[int, typer.Option("--replications", "-n", min=1)] = 5,
    seed: Annotated[int, typer.Option()] = 0,
    events: Annotated[
        Path | None, typer.Option(help="write the first replication's event log (.csv/.parquet)")
    ] = None,
    gantt: Annotated[
        Path | None, typer.Option(help="write a Gantt chart of the first replication (png/svg)")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Simulate a line under one or more rules on common random numbers; print KPIs ± 95% CI."""
    from taktline.agents.rules import get_release_rule, get_rule
    from taktline.envs.kpis import HEADLINE, summarize
    from taktline.envs.spec import load_spec
    from taktline.envs.twin import Twin

    spec = load_spec(line)
    until, warm = _window(spec, horizon, warmup)
    check_number("--seed", seed, minimum=0, hint="seeds are non-negative integers")
    from taktline.agents.lookahead import LookaheadPolicy

    rules: list[Any] = []
    for p in policy or ["FIFO"]:
        try:
            lookahead = p.strip().upper().startswith("LOOKAHEAD")
            rules.append(LookaheadPolicy.parse(p, spec) if lookahead else get_rule(p))
        except PolicyError as exc:
            raise PolicyError(f"--policy: {exc}") from None
    try:
        rel = get_release_rule(release)
    except PolicyError as exc:
        raise PolicyError(f"--release: {exc}") from None
    # outputs are checked before the simulation, so that no run is lost to a bad path
    from taktline.envs.eventlog import EVENT_LOG_SUFFIXES, GANTT_SUFFIXES, watch_families
    from taktline.envs.files import check_output_file

    if events is not None:
        check_output_file(events, "--events", EVENT_LOG_SUFFIXES)
    if gantt is not None:
        check_output_file(gantt, "--gantt", GANTT_SUFFIXES)
    results = {}
    from rich.progress import Progress

    with Progress(console=err_console, transient=True, disable=json_out) as progress:
        task = progress.add_task("simulating", total=len(rules) * replications)
        for rule in rules:
            runs = []
            for i in range(replications):
                log = i == 0 and (events is not None or gantt is not None) and rule is rules[0]
                searching = isinstance(rule, LookaheadPolicy)
                twin = Twin(
                    spec, seed + i, None if searching else rule, rel, warmup=warm, log_events=log
                )
                families = watch_families(twin) if log else None
                if searching:
                    rule.run(twin, until)  # decides on the twin's snapshots, one by one
                else:
                    twin.run(until)
                if log:
                    _export(twin, events, gantt, families)
                runs.append(twin.kpis())
                progress.advance(task)
            results[rule.name] = runs
    if json_out:
        _print_json(
            {
                "line": spec.name,
                "seed": seed,
                "replications": replications,
                "release": rel.name,
                "results": {
                    name: {
                        k: {"mean": e.mean, "ci95": e.half_width}
                        for k, e in summarize(runs).items()
                    }
                    for name, runs in results.items()
                },
            }
        )
        return
    from taktline.tables import estimate_cell, fitting_table, terminal_console

    table = fitting_table(
        f"{spec.name}: {replications} replications, seeds {seed}..{seed + replications - 1},"
        f" release {rel.name} (mean ±95% CI)"
    )
    table.add_column("KPI", overflow="fold", min_width=max(len(k) for k in HEADLINE))
    for name in results:
        table.add_column(name, justify="right", overflow="fold")
    summaries = {name: summarize(runs) for name, runs in results.items()}
    for k in HEADLINE:
        cells = [summaries[n][k] for n in results]
        table.add_row(k, *[estimate_cell(e.mean, e.half_width if e.n > 1 else None) for e in cells])
    terminal_console().print(table)


def _window(
    spec: LineSpec, horizon: float | None, warmup: float | None
) -> tuple[float | None, float | None]:
    """The ``--horizon`` and ``--warmup`` to run with, checked against each other and the spec."""
    from taktline.envs.spec import OrderList

    check_number("--horizon", horizon, above=0, hint="give the simulated time, e.g. --horizon 480")
    check_number("--warmup", warmup, minimum=0, hint="give the time to delete, e.g. --warmup 60")
    until = horizon if horizon is not None else spec.horizon
    warm = warmup if warmup is not None else spec.warmup
    if until is None and not isinstance(spec.arrivals, OrderList):
        raise SpecError(
            f"--horizon: line {spec.name!r} has endless arrivals and no default horizon;"
            " give one, e.g. --horizon 480"
        )
    if until is not None and warm >= until:
        which = "--warmup" if warmup is not None else "the spec's warmup"
        raise SpecError(
            f"{which}: must be < the horizon ({until:g}), got {warm:g}; the warm-up would delete"
            " every statistic. Shorten --warmup or lengthen --horizon"
        )
    return horizon, warmup


def _export(
    twin: Twin, events: Path | None, gantt: Path | None, families: dict[int, str] | None
) -> None:
    from taktline.envs.eventlog import export_events, gantt_bars

    if events is not None:
        export_events(twin, events)
        err_console.print(f"event log written to {events}")
    if gantt is not None:
        from taktline.envs.jobshop.gantt import plot_gantt

        plot_gantt(gantt_bars(twin, families), gantt, title=twin.spec.name)
        err_console.print(f"Gantt chart written to {gantt}")


def register(app: typer.Typer) -> None:
    app.command("lines")(lines)
    app.command("validate")(validate)
    app.command("simulate")(simulate)
