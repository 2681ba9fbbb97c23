"""The exact baseline: OR-Tools CP-SAT on (flexible) job shops, minimising the makespan.

Model: one interval per operation alternative (optional when an operation has several
machines, with exactly one chosen), no overlap per machine, precedence within jobs, release
dates, makespan >= every job's last end. CP-SAT runs with ``num_workers`` search workers
(2 by default, one per core of the reference machine) under a time limit and reports its best
schedule and its best objective bound, so ``status == "optimal"`` means
``makespan == lower_bound``.

>>> from taktline.envs.jobshop import load_bundled
>>> r = solve(load_bundled("ft06"), time_limit_s=10)
>>> r.status, r.makespan, r.lower_bound
('optimal', 55, 55)
>>> replay(load_bundled("ft06"), r).makespan
55
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from taktline.envs.jobshop.instance import JobShopInstance
from taktline.envs.jobshop.replay import check_schedule, replay_schedule
from taktline.envs.jobshop.schedule import JobShopState, ScheduledOperation
from taktline.errors import PolicyError


@dataclass(frozen=True)
class CpSatResult:
    """What CP-SAT found.

    Attributes:
        instance: Instance name.
        status: ``"optimal"``, ``"feasible"`` (time limit hit), ``"infeasible"`` or
            ``"unknown"`` (no schedule within the limit).
        makespan: Best makespan found (``None`` without a schedule).
        lower_bound: The solver's best proven bound on the makespan.
        schedule: The best schedule (empty without one), sorted by start time.
        wall_time_s: Solver wall time.
        num_workers: Search workers used.
    """

    instance: str
    status: str
    makespan: int | None
    lower_bound: int
    schedule: list[ScheduledOperation]
    wall_time_s: float
    num_workers: int

    def as_dict(self, with_schedule: bool = True) -> dict[str, object]:
        """Plain data (for ``--json``)."""
        out: dict[str, object] = {
            "instance": self.instance,
            "status": self.status,
            "makespan": self.makespan,
            "lower_bound": self.lower_bound,
            "wall_time_s": round(self.wall_time_s, 3),
            "num_workers": self.num_workers,
        }
        if with_schedule:
            out["schedule"] = [s._asdict() for s in self.schedule]
        return out


def solve(
    instance: JobShopInstance,
    time_limit_s: float = 10.0,
    num_workers: int = 2,
    hint: Sequence[ScheduledOperation] | None = None,
    seed: int = 0,
    on_solution: Callable[[float, int], None] | None = None,
) -> CpSatResult:
    """Minimise the makespan of ``instance`` with CP-SAT.

    Args:
        instance: A classical or flexible job shop.
        time_limit_s: Wall-clock limit.
        num_workers: CP-SAT search workers.
        hint: Optional starting schedule (e.g. from a dispatching rule).
        seed: CP-SAT random seed.
        on_solution: Called with ``(seconds since the solve began, makespan)`` at every
            improving solution (an anytime log).
    """
    from ortools.sat.python import cp_model

    if time_limit_s <= 0 or num_workers < 1:
        raise PolicyError(
            f"solve: need time_limit_s > 0 and num_workers >= 1, got {time_limit_s}, {num_workers}"
        )
    model = cp_model.CpModel()
    releases = instance.release_dates or (0,) * instance.n_jobs
    horizon = max(releases) + sum(max(p for _, p in alts) for ops in instance.jobs for alts in ops)
    starts: list[list[cp_model.IntVar]] = []
    ends: list[list[cp_model.IntVar]] = []
    # per (job, op): list of (machine, presence literal or None)
    choices: list[list[list[tuple[int, Any]]]] = []
    on_machine: list[list[cp_model.IntervalVar]] = [[] for _ in range(instance.n_machines)]
    for j, ops in enumerate(instance.jobs):
        s_row: list[cp_model.IntVar] = []
        e_row: list[cp_model.IntVar] = []
        c_row: list[list[tuple[int, Any]]] = []
        for i, alts in enumerate(ops):
            s = model.new_int_var(releases[j], horizon, f"s{j}_{i}")
            e = model.new_int_var(releases[j], horizon, f"e{j}_{i}")
            alt_row: list[tuple[int, Any]] = []
            if len(alts) == 1:
                m, p = alts[0]
                on_machine[m].append(model.new_interval_var(s, p, e, f"i{j}_{i}_{m}"))
                alt_row.append((m, None))
            else:
                lits = []
                for m, p in alts:
                    lit = model.new_bool_var(f"x{j}_{i}_{m}")
                    on_machine[m].append(
                        model.new_optional_interval_var(s, p, e, lit, f"i{j}_{i}_{m}")
                    )
                    lits.append(lit)
                    alt_row.append((m, lit))
                model.add_exactly_one(lits)
            if i > 0:
                model.add(s >= e_row[-1])
            s_row.append(s)
            e_row.append(e)
            c_row.append(alt_row)
        starts.append(s_row)
        ends.append(e_row)
        choices.append(c_row)
    for intervals in on_machine:
        if len(intervals) > 1:
            model.add_no_overlap(intervals)
    makespan = model.new_int_var(0, horizon, "makespan")
    model.add_max_equality(makespan, [row[-1] for row in ends])
    model.minimize(makespan)
    if hint:
        for so in hint:
            model.add_hint(starts[so.job][so.op], so.start)
            for m, lit in choices[so.job][so.op]:
                if lit is not None:
                    model.add_hint(lit, m == so.machine)

    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = float(time_limit_s)
    solver.parameters.num_workers = num_workers
    solver.parameters.random_seed = seed
    t0 = time.perf_counter()
    if on_solution is None:
        code = solver.solve(model)
    else:
        report = on_solution

        class _Log(cp_model.CpSolverSolutionCallback):
            def on_solution_callback(self) -> None:
                report(time.perf_counter() - t0, round(self.objective_value))

        code = solver.solve(model, _Log())
    wall = time.perf_counter() - t0
    names: dict[Any, str] = {
        cp_model.OPTIMAL: "optimal",
        cp_model.FEASIBLE: "feasible",
        cp_model.INFEASIBLE: "infeasible",
    }
    status = names.get(code, "unknown")
    schedule: list[ScheduledOperation] = []
    best: int | None = None
    if status in ("optimal", "feasible"):
        for j, ops in enumerate(instance.jobs):
            for i in range(len(ops)):
                machine = next(
                    m for m, lit in choices[j][i] if lit is None or solver.boolean_value(lit)
                )
                st, en = solver.value(starts[j][i]), solver.value(ends[j][i])
                schedule.append(ScheduledOperation(j, i, machine, int(st), int(en)))
        schedule.sort(key=lambda so: (so.start, so.machine))
        best = int(solver.objective_value)
    bound = round(solver.best_objective_bound) if best is not None else 0
    if status == "optimal" and best is not None:
        bound = best
    return CpSatResult(instance.name, status, best, bound, schedule, wall, num_workers)


def replay(instance: JobShopInstance, result: CpSatResult) -> JobShopState:
    """Check CP-SAT's schedule and rebuild it through the schedule builder.

    Returns the finished :class:`JobShopState` (active scheme); its makespan is at most the
    solver's (equal when the solver's schedule is optimal).
    """
    if not result.schedule:
        raise PolicyError(f"{result.instance}: CP-SAT found no schedule ({result.status})")
    check_schedule(instance, result.schedule)
    return replay_schedule(instance, result.schedule)
