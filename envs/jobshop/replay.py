"""Check a schedule, and replay any schedule through the schedule builder.

:func:`replay_schedule` is the reachability contract made executable: it turns any feasible
schedule (for example a CP-SAT optimum, whose non-critical operations may start late) into
decisions of :class:`~taktline.envs.jobshop.schedule.JobShopState` and returns a state whose
makespan is at most the schedule's. Two steps:

1. :func:`make_active` moves every operation, taken in order of start time, to the earliest
   gap on its machine that fits after its job predecessor. The result is an active schedule in
   which no operation starts later than before.
2. Giffler–Thompson is run choosing, among the candidates, the operation that starts first in
   that active schedule; for an active schedule this rebuilds it exactly (the classical
   argument: the first unscheduled operation on ``M*`` is always in the conflict set).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence

from taktline.envs.jobshop.instance import JobShopInstance
from taktline.envs.jobshop.schedule import JobShopState, ScheduledOperation
from taktline.errors import InfeasibleActionError, SpecError


def check_schedule(instance: JobShopInstance, schedule: Sequence[ScheduledOperation]) -> int:
    """Verify a complete schedule and return its makespan.

    Checks that every operation appears exactly once on one of its machines with that
    machine's processing time, that jobs follow their technological order and release dates,
    and that no machine runs two operations at once.

    Raises:
        SpecError: listing the first problems found.
    """
    problems: list[str] = []
    seen: dict[tuple[int, int], ScheduledOperation] = {}
    for so in schedule:
        key = (so.job, so.op)
        if not (0 <= so.job < instance.n_jobs and 0 <= so.op < len(instance.jobs[so.job])):
            problems.append(f"{so}: no such operation")
            continue
        if key in seen:
            problems.append(f"job {so.job} op {so.op}: scheduled twice")
        seen[key] = so
        times = dict(instance.jobs[so.job][so.op])
        if so.machine not in times:
            problems.append(f"job {so.job} op {so.op}: machine {so.machine} not allowed")
        elif so.end - so.start != times[so.machine]:
            problems.append(
                f"job {so.job} op {so.op}: lasts {so.end - so.start}, expected "
                f"{times[so.machine]} on machine {so.machine}"
            )
    releases = instance.release_dates or (0,) * instance.n_jobs
    for j, ops in enumerate(instance.jobs):
        ready = releases[j]
        for i in range(len(ops)):
            found = seen.get((j, i))
            if found is None:
                problems.append(f"job {j} op {i}: missing")
                break
            if found.start < ready:
                problems.append(f"job {j} op {i}: starts at {found.start} before {ready}")
            ready = found.end
    by_machine: dict[int, list[ScheduledOperation]] = {}
    for so in seen.values():
        by_machine.setdefault(so.machine, []).append(so)
    for m, ops_on_m in by_machine.items():
        ops_on_m.sort(key=lambda s: (s.start, s.end))
        for a, b in itertools.pairwise(ops_on_m):
            if b.start < a.end:
                problems.append(f"machine {m}: {a} overlaps {b}")
    if problems:
        raise SpecError(problems[:10], source=f"schedule of {instance.name!r}")
    return max((so.end for so in schedule), default=0)


def make_active(
    instance: JobShopInstance, schedule: Sequence[ScheduledOperation]
) -> list[ScheduledOperation]:
    """Left-shift every operation (in order of start time) into the earliest gap that fits.

    Machine assignments are kept; no operation starts later than in ``schedule``; the result
    is an active schedule.
    """
    releases = instance.release_dates or (0,) * instance.n_jobs
    job_ready = list(releases)
    busy: dict[int, list[tuple[int, int]]] = {}
    out = []
    for so in sorted(schedule, key=lambda s: (s.start, s.end, s.job)):
        p = so.end - so.start
        intervals = busy.setdefault(so.machine, [])
        t = job_ready[so.job]
        for s, e in intervals:  # sorted by start; find the first gap of length p at or after t
            if t + p <= s:
                break
            t = max(t, e)
        bisect.insort(intervals, (t, t + p))
        job_ready[so.job] = t + p
        out.append(ScheduledOperation(so.job, so.op, so.machine, t, t + p))
    return out


def replay_schedule(
    instance: JobShopInstance, schedule: Sequence[ScheduledOperation]
) -> JobShopState:
    """Rebuild ``schedule`` (made active) with Giffler–Thompson decisions.

    Args:
        instance: The problem. A flexible job shop is replayed with the schedule's machine
            assignment (:meth:`JobShopInstance.restricted_to`).
        schedule: A complete feasible schedule.

    Returns:
        The finished state; its makespan is at most the schedule's (equal for an optimum).
    """
    check_schedule(instance, schedule)
    if instance.is_flexible:
        assignment = [[0] * len(ops) for ops in instance.jobs]
        for so in schedule:
            assignment[so.job][so.op] = so.machine
        instance = instance.restricted_to(assignment)
    target = {(so.job, so.op): so.start for so in make_active(instance, schedule)}
    state = JobShopState(instance, scheme="active")
    while not state.done:
        job = min(state.candidate_jobs, key=lambda j: (target[(j, state.next_op[j])], j))
        state.apply(job)
    for so in state.schedule:
        if so.start != target[(so.job, so.op)]:
            raise InfeasibleActionError(
                f"replay diverged at job {so.job} op {so.op}: started {so.start}, target "
                f"{target[(so.job, so.op)]} (please report: the schedule builder lost an "
                "active schedule)"
            )
    return state
