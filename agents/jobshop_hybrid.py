"""The anytime hybrid for classical job shops: construct, tabu search, then CP-SAT LNS.

:func:`lns` is large-neighbourhood search with CP-SAT warm-started from a schedule: each step
frees a part of the schedule (the operations of a window of consecutive start times, of a few
machines or of a few jobs), keeps the machine order of every other operation, hints the current
start times and asks CP-SAT, with a short time limit and the current makespan as an upper bound,
for a better completion. A step that finds one (or an equally good one) is accepted. The freed
share grows after a step CP-SAT solves to optimality (the neighbourhood was too easy) and shrinks
after one that runs out of time; once it covers every operation a step is a full CP-SAT solve
with the whole schedule as a hint, so on small instances the hybrid ends with a proof.

:func:`hybrid_solve` splits one wall-clock budget: :func:`~taktline.agents.jobshop_search.construct`
(``construct_share``), :func:`~taktline.agents.jobshop_search.tabu_search` (``tabu_share``),
then :func:`lns` until the limit. The anytime log merges the three stages on one clock.

>>> from taktline.envs.jobshop import load_bundled
>>> r = hybrid_solve(load_bundled("ft06"), time_limit_s=3)
>>> r.makespan, r.lower_bound
(55, 55)
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Sequence
from typing import Any

from taktline.agents.jobshop_search import (
    AnytimePoint,
    SearchResult,
    construct,
    require_classical,
    tabu_search,
)
from taktline.envs.jobshop.instance import JobShopInstance
from taktline.envs.jobshop.schedule import ScheduledOperation
from taktline.errors import PolicyError

NEIGHBOURHOODS: tuple[str, ...] = ("window", "machines", "jobs")


def _lns_step(
    instance: JobShopInstance,
    schedule: Sequence[ScheduledOperation],
    free: set[tuple[int, int]],
    upper_bound: int,
    time_limit_s: float,
    num_workers: int,
    seed: int,
) -> tuple[str, list[ScheduledOperation], int]:
    """Re-optimise the ``free`` operations, the others keeping their machine order.

    Returns:
        CP-SAT's status name, the new schedule (empty without one) and its proven bound.
    """
    from ortools.sat.python import cp_model

    model = cp_model.CpModel()
    releases = instance.release_dates or (0,) * instance.n_jobs
    start: dict[tuple[int, int], cp_model.IntVar] = {}
    end: dict[tuple[int, int], Any] = {}  # linear expressions start + p
    on_machine: list[list[cp_model.IntervalVar]] = [[] for _ in range(instance.n_machines)]
    for j, ops in enumerate(instance.jobs):
        for i, alts in enumerate(ops):
            m, p = alts[0]
            s = model.new_int_var(releases[j], upper_bound - p, f"s{j}_{i}")
            e = s + p
            on_machine[m].append(model.new_fixed_size_interval_var(s, p, f"i{j}_{i}"))
            if i > 0:
                model.add(s >= end[(j, i - 1)])
            start[(j, i)], end[(j, i)] = s, e
    for intervals in on_machine:
        if len(intervals) > 1:
            model.add_no_overlap(intervals)
    fixed: list[list[ScheduledOperation]] = [[] for _ in range(instance.n_machines)]
    for so in schedule:
        model.add_hint(start[(so.job, so.op)], so.start)
        if (so.job, so.op) not in free:
            fixed[so.machine].append(so)
    for seq in fixed:
        seq.sort(key=lambda so: so.start)
        for a, b in itertools.pairwise(seq):
            model.add(start[(b.job, b.op)] >= end[(a.job, a.op)])
    makespan = model.new_int_var(0, upper_bound, "makespan")
    model.add_max_equality(
        makespan, [end[(j, len(ops) - 1)] for j, ops in enumerate(instance.jobs)]
    )
    model.minimize(makespan)
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(0.01, float(time_limit_s))
    solver.parameters.num_workers = num_workers
    solver.parameters.random_seed = seed
    code = solver.solve(model)
    names: dict[Any, str] = {cp_model.OPTIMAL: "optimal", cp_model.FEASIBLE: "feasible"}
    status = names.get(code, "unknown")
    if status == "unknown":
        return status, [], 0
    out = []
    for so in schedule:
        t = int(solver.value(start[(so.job, so.op)]))
        out.append(ScheduledOperation(so.job, so.op, so.machine, t, t + so.end - so.start))
    out.sort(key=lambda so: (so.start, so.machine))
    return status, out, round(solver.best_objective_bound)


def _neighbourhood(
    instance: JobShopInstance,
    schedule: Sequence[ScheduledOperation],
    kind: str,
    share: float,
    rng: random.Random,
) -> set[tuple[int, int]]:
    """The operations one LNS step frees: about ``share`` of them, chosen by ``kind``."""
    if kind == "machines":
        k = max(2, round(share * instance.n_machines))
        chosen = set(rng.sample(range(instance.n_machines), min(k, instance.n_machines)))
        return {(so.job, so.op) for so in schedule if so.machine in chosen}
    if kind == "jobs":
        k = max(2, round(share * instance.n_jobs))
        jobs = set(rng.sample(range(instance.n_jobs), min(k, instance.n_jobs)))
        return {(so.job, so.op) for so in schedule if so.job in jobs}
    ordered = sorted(schedule, key=lambda so: so.start)
    k = max(2, round(share * len(ordered)))
    first = rng.randrange(max(1, len(ordered) - k + 1))
    return {(so.job, so.op) for so in ordered[first : first + k]}


def lns(
    instance: JobShopInstance,
    start: Sequence[ScheduledOperation],
    time_limit_s: float = 10.0,
    num_workers: int = 2,
    seed: int = 0,
    step_time_s: float = 1.0,
    share: float = 0.2,
    target: int | None = None,
    clock: float | None = None,
) -> SearchResult:
    """CP-SAT large-neighbourhood search from ``start`` (see the module docstring).

    Args:
        instance: A classical job shop.
        start: A complete feasible schedule; the result is never worse.
        time_limit_s: Wall-clock budget.
        num_workers: CP-SAT search workers per step.
        seed: Seed of the neighbourhood choice and of CP-SAT.
        step_time_s: Time limit of one step.
        share: Starting share of the operations each step frees (adapted as it goes).
        target: Stop once this makespan is reached.
        clock: ``time.perf_counter()`` value the anytime log counts from (default: now).

    Returns:
        The best schedule; ``lower_bound`` is set when a full solve proved it optimal.
    """
    from taktline.envs.jobshop.replay import check_schedule

    require_classical(instance, "lns")
    if time_limit_s < 0 or num_workers < 1 or step_time_s <= 0:
        raise PolicyError(
            "lns: need time_limit_s >= 0, num_workers >= 1 and step_time_s > 0, got "
            f"{time_limit_s}, {num_workers}, {step_time_s}"
        )
    started = time.perf_counter()
    t0 = started if clock is None else clock
    deadline = started + time_limit_s
    rng = random.Random(seed)
    best = sorted(start, key=lambda so: (so.start, so.machine))
    best_ms = check_schedule(instance, best)
    log = [AnytimePoint(time.perf_counter() - t0, best_ms, "lns")]
    lower: int | None = None
    steps = 0
    while (target is None or best_ms > target) and lower is None:
        left = deadline - time.perf_counter()
        if left < 0.05:
            break
        steps += 1
        kind = NEIGHBOURHOODS[rng.randrange(len(NEIGHBOURHOODS))]
        free = (
            {(so.job, so.op) for so in best}
            if share >= 1.0
            else _neighbourhood(instance, best, kind, share, rng)
        )
        status, sched, bound = _lns_step(
            instance, best, free, best_ms, min(left, step_time_s), num_workers, seed + steps
        )
        if sched:
            ms = max(so.end for so in sched)
            if ms <= best_ms:
                if ms < best_ms:
                    log.append(AnytimePoint(time.perf_counter() - t0, ms, "lns"))
                best, best_ms = sched, ms
            if share >= 1.0 and status == "optimal":
                lower = best_ms
            elif len(free) == len(best) and bound > 0:
                lower = bound if bound >= best_ms else None
        share = min(1.0, share * 1.25) if status == "optimal" else max(0.05, share * 0.85)
    return SearchResult(best_ms, best, log, steps, time.perf_counter() - started, lower_bound=lower)


def hybrid_solve(
    instance: JobShopInstance,
    time_limit_s: float = 10.0,
    num_workers: int = 2,
    seed: int = 0,
    construct_share: float = 0.05,
    tabu_share: float = 0.6,
    step_time_s: float | None = None,
    construct_max_s: float = 0.5,
    start_policy: Any = None,
) -> SearchResult:
    """Construct, then tabu search, then CP-SAT LNS, all within ``time_limit_s``.

    Args:
        instance: A classical job shop.
        time_limit_s: Wall-clock budget of the whole hybrid.
        num_workers: CP-SAT search workers of each LNS step.
        seed: Seed of every stage.
        construct_share: Share of the budget for rules and sampling, at most
            ``construct_max_s`` (sampling gains little after that: on ta41-80 it took 15.7% to
            15.2% in 2.5 s while tabu search went from 15% to 5% in one second).
        tabu_share: Share of the time left after construction for tabu search (the rest goes
            to LNS).
        step_time_s: LNS step time limit (default: 5% of the budget, 0.2 s to 2 s).
        start_policy: A :class:`~taktline.agents.jobshop_policy.LearnedScheduler`: it gets
            half of the construction budget for its greedy and sampled schedules (the rules
            the other half), and tabu search starts from the better; too big an instance for
            its half, it is skipped and the log says nothing of it.

    Returns:
        The best schedule, the merged anytime log, and ``lower_bound`` when the makespan is
        proven optimal (it equals the trivial lower bound or a full CP-SAT step proved it).
    """
    require_classical(instance, "hybrid")
    if not time_limit_s > 0 or num_workers < 1:
        raise PolicyError(
            f"hybrid: need time_limit_s > 0 and num_workers >= 1, got {time_limit_s}, {num_workers}"
        )
    if not (0 <= construct_share < 1 and 0 <= tabu_share <= 1 and construct_max_s >= 0):
        raise PolicyError(
            "hybrid: need 0 <= construct_share < 1, 0 <= tabu_share <= 1 and "
            f"construct_max_s >= 0, got {construct_share}, {tabu_share}, {construct_max_s}"
        )
    t0 = time.perf_counter()
    trivial = instance.trivial_lower_bound()
    budget = min(time_limit_s * construct_share, construct_max_s)
    if start_policy is not None:
        budget /= 2
    built = construct(instance, budget, seed=seed, clock=t0)
    log = list(built.log)
    best, best_ms = built.schedule, built.makespan
    if start_policy is not None:
        from taktline.agents.jobshop_policy import policy_search

        learned = policy_search(instance, budget, seed, scheduler=start_policy, clock=t0)
        if learned is not None and learned.makespan < best_ms:
            log += [p for p in learned.log if p.makespan < best_ms]
            best, best_ms = learned.schedule, learned.makespan
    if best_ms > trivial:
        left = time_limit_s - (time.perf_counter() - t0)
        tabu = tabu_search(
            instance,
            best,
            max(0.0, tabu_share * left),
            seed=seed,
            target=trivial,
            clock=t0,
        )
        log += [p for p in tabu.log if p.makespan < best_ms]
        if tabu.makespan < best_ms:
            best, best_ms = tabu.schedule, tabu.makespan
    lower = trivial if best_ms <= trivial else None
    left = time_limit_s - (time.perf_counter() - t0)
    if lower is None and left > 0.05:
        step = step_time_s or min(2.0, max(0.2, 0.05 * time_limit_s))
        # small shops start with (nearly) every operation free: a full warm-started solve
        share = min(1.0, max(0.2, 80 / instance.n_operations))
        res = lns(instance, best, left, num_workers, seed, step, share, trivial, t0)
        log += [p for p in res.log if p.makespan < best_ms]
        best, best_ms = res.schedule, res.makespan
        lower = res.lower_bound if res.lower_bound is not None else lower
        if best_ms <= trivial:
            lower = trivial
    return SearchResult(best_ms, best, log, 0, time.perf_counter() - t0, lower_bound=lower)
