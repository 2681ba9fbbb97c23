"""Job-shop commands: ``instances``, ``solve``, ``schedule``.

``INSTANCE`` is a bundled name (``ft06``, ``la01``..``la40``, ``ta01``..``ta80``) or a file in
OR-Library / Taillard or Brandimarte (``.fjs``) format.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from taktline.errors import SpecError, check_number
from taktline.jsonout import echo_json as _echo_json

if TYPE_CHECKING:
    from taktline.envs.jobshop.instance import JobShopInstance
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


SOLVE_METHODS: tuple[str, ...] = ("cpsat", "rule", "policy", "hybrid")


def _write_anytime_log(path: Path, points: Sequence[tuple[float, int, str]]) -> None:
    import csv

    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["time_s", "best_makespan", "stage"])
        for t, ms, stage in points:
            writer.writerow([f"{t:.4f}", ms, stage])
    console.print(f"anytime log written to {path}", highlight=False)


def solve(
    instance: InstanceArg,
    method: Annotated[
        str,
        typer.Option(
            "--method",
            help="cpsat (exact solver), rule (best rule + sampling), policy (the learned"
            " scheduler: greedy, then best of sampled schedules) or hybrid (rules and the learned"
            " scheduler -> tabu search -> CP-SAT LNS)",
        ),
    ] = "cpsat",
    time_limit: Annotated[
        float, typer.Option("--time-limit", help="wall-clock limit, seconds")
    ] = 10.0,
    workers: Annotated[int, typer.Option("--workers", help="CP-SAT search workers")] = 2,
    anytime_log: Annotated[
        Path | None,
        typer.Option("--anytime-log", help="write the best makespan over time (.csv)"),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="seed of the search")] = 0,
    weights: Annotated[
        Path | None,
        typer.Option(
            "--weights",
            help="the learned scheduler's weights (.npz from `taktline train-jobshop`);"
            " default: the ones shipped with taktline",
        ),
    ] = None,
    json_out: JsonOpt = False,
    gantt: GanttOpt = None,
) -> None:
    """Solve a job shop: CP-SAT (default), a rule with sampling, the learned scheduler, or the
    anytime hybrid."""
    from taktline.envs.jobshop.bundled import resolve_instance

    if method not in SOLVE_METHODS:
        raise SpecError(f"--method: expected one of {', '.join(SOLVE_METHODS)}, got {method!r}")
    check_number("--time-limit", time_limit, above=0, hint="seconds, e.g. --time-limit 10")
    check_number("--workers", workers, minimum=1, hint="e.g. --workers 2")
    if weights is not None and method not in ("policy", "hybrid"):
        raise SpecError(f"--weights: only --method policy or hybrid use weights, not {method}")
    learned = _learned_scheduler(weights) if method in ("policy", "hybrid") else None
    _check_gantt(gantt)
    if anytime_log is not None:
        from taktline.envs.files import check_output_file

        check_output_file(anytime_log, "--anytime-log", (".csv",))
    inst = resolve_instance(instance)
    if method == "cpsat":
        _solve_cpsat(inst, time_limit, workers, seed, anytime_log, json_out, gantt)
        return
    from taktline.agents.jobshop_hybrid import hybrid_solve
    from taktline.agents.jobshop_search import construct
    from taktline.envs.jobshop.replay import check_schedule, replay_schedule

    if method == "rule":
        res = construct(inst, time_limit_s=time_limit, seed=seed)
    elif method == "policy":
        from taktline.agents.jobshop_policy import policy_solve

        assert learned is not None
        res = policy_solve(inst, time_limit, seed, scheduler=learned)
    else:
        res = hybrid_solve(
            inst, time_limit_s=time_limit, num_workers=workers, seed=seed, start_policy=learned
        )
    check_schedule(inst, res.schedule)
    replayed = replay_schedule(inst, res.schedule).makespan
    status = "optimal" if res.lower_bound is not None else "feasible"
    if anytime_log is not None:
        _write_anytime_log(anytime_log, [(p.time_s, p.makespan, p.stage) for p in res.log])
    if gantt is not None:
        _gantt(res.schedule, gantt, f"{inst.name} {method} {status}")
    ref, kind = inst.reference()
    if json_out:
        _echo_json(
            {
                "instance": inst.name,
                "method": method,
                "status": status,
                "makespan": res.makespan,
                "lower_bound": res.lower_bound,
                "wall_time_s": round(res.wall_time_s, 3),
                "reference": ref,
                "reference_kind": kind,
                "replayed_makespan": replayed,
                "anytime": [
                    {"time_s": round(p.time_s, 4), "makespan": p.makespan, "stage": p.stage}
                    for p in res.log
                ],
                "schedule": [so._asdict() for so in res.schedule],
            }
        )
        return
    _solve_table(
        f"{method} on {inst.name} ({inst.n_jobs}x{inst.n_machines})",
        [status, str(res.makespan), str(replayed), _fmt(res.lower_bound), _fmt(ref)],
        kind,
        res.wall_time_s,
    )


def _learned_scheduler(weights: Path | None) -> Any:
    """The learned scheduler: ``--weights`` or the shipped ones."""
    from taktline.agents.jobshop_policy import LearnedScheduler
    from taktline.errors import PolicyError

    if weights is not None and not weights.is_file():
        raise PolicyError(f"--weights: no such file {str(weights)!r}; give a .npz file")
    try:
        return LearnedScheduler.load(weights)
    except PolicyError as exc:
        raise PolicyError(f"--weights: {exc}") from None


def _solve_table(title: str, cells: list[str], kind: str | None, wall_s: float) -> None:
    table = Table(title=title)
    cols = ("status", "makespan", "replayed", "lower bound", "known " + (kind or "bound"), "time s")
    for col in cols:
        table.add_column(col, justify="right")
    table.add_row(*cells, f"{wall_s:.2f}")
    console.print(table)


def _solve_cpsat(
    inst: JobShopInstance,
    time_limit: float,
    workers: int,
    seed: int,
    anytime_log: Path | None,
    json_out: bool,
    gantt: Path | None,
) -> None:
    """``solve --method cpsat``: OR-Tools CP-SAT, its schedule replayed through the builder."""
    from taktline.agents.cpsat import replay
    from taktline.agents.cpsat import solve as cpsat_solve

    points: list[tuple[float, int, str]] = []
    result = cpsat_solve(
        inst,
        time_limit_s=time_limit,
        num_workers=workers,
        seed=seed,
        on_solution=lambda t, ms: points.append((t, ms, "cpsat")),
    )
    # the solver's schedule, checked and rebuilt through the schedule builder (active scheme)
    replayed = replay(inst, result).makespan if result.schedule else None
    if anytime_log is not None:
        _write_anytime_log(anytime_log, points)
    if gantt is not None and result.schedule:
        _gantt(result.schedule, gantt, f"{inst.name} CP-SAT {result.status}")
    ref, kind = inst.reference()
    if json_out:
        data = result.as_dict()
        data.update({"reference": ref, "reference_kind": kind, "replayed_makespan": replayed})
        data["method"] = "cpsat"
        data["anytime"] = [{"time_s": round(t, 4), "makespan": m, "stage": s} for t, m, s in points]
        _echo_json(data)
        return
    _solve_table(
        f"CP-SAT on {inst.name} ({inst.n_jobs}x{inst.n_machines})",
        [
            result.status,
            _fmt(result.makespan),
            _fmt(replayed),
            str(result.lower_bound),
            _fmt(ref),
        ],
        kind,
        result.wall_time_s,
    )


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
