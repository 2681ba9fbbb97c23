"""Job-shop commands: ``instances``, ``solve``, ``schedule``.

``INSTANCE`` is a bundled name (``ft06``, ``la01``..``la40``, ``ta01``..``ta80``) or a file in
OR-Library / Taillard or Brandimarte (``.fjs``) format.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from taktline.errors import SpecError, check_number
from taktline.jsonout import echo_json as _echo_json

if TYPE_CHECKING:
    from taktline.envs.jobshop.schedule import ScheduledOperation

console = Console()

JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]
GanttOpt = Annotated[
    Path | None, typer.Option("--gantt", help="write a Gantt chart (.png, .svg or .pdf)")
]
InstanceArg = Annotated[
    str, typer.Argument(help="bundled name (ft06, la01, ta01, ...) or an instance file")
]


def _fmt(value: object) -> str:
    return "-" if value is None else str(value)


def instances(json_out: JsonOpt = False) -> None:
    """List the bundled job-shop instances with their sizes and bounds."""
    from taktline.envs.jobshop.bundled import bundled_catalog

    rows = bundled_catalog()
    if json_out:
        _echo_json([row.__dict__ for row in rows])
        return
    table = Table(title=f"bundled job-shop instances ({len(rows)})")
    for col in ("name", "jobs", "machines", "optimum", "lower bound", "upper bound"):
        table.add_column(col, justify="left" if col == "name" else "right")
    for r in rows:
        table.add_row(
            r.name,
            str(r.n_jobs),
            str(r.n_machines),
            _fmt(r.optimum),
            _fmt(r.lower_bound),
            _fmt(r.upper_bound),
        )
    console.print(table)


def _check_gantt(gantt: Path | None) -> None:
    """Refuse an unwritable ``--gantt`` before solving or scheduling."""
    if gantt is not None:
        from taktline.envs.eventlog import GANTT_SUFFIXES
        from taktline.envs.files import check_output_file

        check_output_file(gantt, "--gantt", GANTT_SUFFIXES)


def _gantt(schedule: Sequence[ScheduledOperation], path: Path, title: str) -> None:
    from taktline.envs.jobshop.gantt import bars_from_schedule, plot_gantt

    plot_gantt(bars_from_schedule(schedule), path, title=title)
    console.print(f"Gantt chart written to {path}", highlight=False)


def solve(
    instance: InstanceArg,
    time_limit: Annotated[
        float, typer.Option("--time-limit", help="CP-SAT wall-clock limit, seconds")
    ] = 10.0,
    workers: Annotated[int, typer.Option("--workers", help="CP-SAT search workers")] = 2,
    json_out: JsonOpt = False,
    gantt: GanttOpt = None,
) -> None:
    """Solve a job shop (or flexible job shop) with OR-Tools CP-SAT."""
    from taktline.agents.cpsat import replay
    from taktline.agents.cpsat import solve as cpsat_solve
    from taktline.envs.jobshop.bundled import resolve_instance

    check_number("--time-limit", time_limit, above=0, hint="seconds, e.g. --time-limit 10")
    check_number("--workers", workers, minimum=1, hint="e.g. --workers 2")
    _check_gantt(gantt)
    inst = resolve_instance(instance)
    result = cpsat_solve(inst, time_limit_s=time_limit, num_workers=workers)
    # the solver's schedule, checked and rebuilt through the schedule builder (active scheme)
    replayed = replay(inst, result).makespan if result.schedule else None
    if gantt is not None and result.schedule:
        _gantt(result.schedule, gantt, f"{inst.name} CP-SAT {result.status}")
    ref, kind = inst.reference()
    if json_out:
        data = result.as_dict()
        data.update({"reference": ref, "reference_kind": kind, "replayed_makespan": replayed})
        _echo_json(data)
        return
    table = Table(title=f"CP-SAT on {inst.name} ({inst.n_jobs}x{inst.n_machines})")
    cols = ("status", "makespan", "replayed", "lower bound", "known " + (kind or "bound"), "time s")
    for col in cols:
        table.add_column(col, justify="right")
    table.add_row(
        result.status,
        _fmt(result.makespan),
        _fmt(replayed),
        str(result.lower_bound),
        _fmt(ref),
        f"{result.wall_time_s:.2f}",
    )
    console.print(table)


def schedule(
    instance: InstanceArg,
    rule: Annotated[str, typer.Option("--rule", help="SPT, LPT, MWKR, MOPNR, FIFO, EDD, ...")],
    scheme: Annotated[
        str, typer.Option("--scheme", help="active (Giffler-Thompson) or non-delay")
    ] = "active",
    json_out: JsonOpt = False,
    gantt: GanttOpt = None,
) -> None:
    """Schedule a job shop with a dispatching rule; report makespan and gap."""
    from taktline.agents.jobshop_dispatch import dispatch
    from taktline.agents.rules import get_rule
    from taktline.envs.jobshop import SCHEMES
    from taktline.envs.jobshop.bundled import resolve_instance
    from taktline.errors import PolicyError

    if scheme not in SCHEMES:
        raise SpecError(f"--scheme: expected one of {', '.join(SCHEMES)}, got {scheme!r}")
    try:
        get_rule(rule)
    except PolicyError as exc:
        raise PolicyError(f"--rule: {exc}") from None
    _check_gantt(gantt)
    inst = resolve_instance(instance)
    result = dispatch(inst, rule, scheme)
    if gantt is not None:
        _gantt(result.schedule, gantt, f"{inst.name} {result.rule} ({scheme})")
    if json_out:
        _echo_json(result.as_dict(with_schedule=True))
        return
    table = Table(title=f"{result.rule} on {inst.name} ({inst.n_jobs}x{inst.n_machines})")
    for col in ("scheme", "makespan", "reference", "gap"):
        table.add_column(col, justify="right")
    gap = "-" if result.gap is None else f"{100 * result.gap:.1f} %"
    ref = "-" if result.reference is None else f"{result.reference} ({result.reference_kind})"
    table.add_row(scheme, str(result.makespan), ref, gap)
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add the job-shop commands to the ``taktline`` app."""
    app.command("instances")(instances)
    app.command("solve")(solve)
    app.command("schedule")(schedule)
