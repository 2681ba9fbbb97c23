"""A job-shop state's snapshot, and the state a snapshot restores (exactly).

A job-shop snapshot holds a partial schedule's *frontier*: per job its next operation and when
it is ready, per machine when it is free. That is all the schedule builder needs to go on: the
decision point (``M*`` and its candidates) and the decision time follow from the frontier by
the scheme's rule, so a restore sets the frontier and checks the snapshot's ``decision`` and
``time`` against the ones it recomputes. What came before the frontier (which operation ran
where) is not in a snapshot; a restored state's ``schedule`` starts empty.

:func:`jobshop_snapshot` builds without validation and reuses, from the state's previous
snapshot, the job and machine records that did not change (a decision moves one job and one
machine), so a rule that reads a snapshot per decision stays cheap on large shops. Snapshots
are values: copy one (``model_copy(deep=True)``) before changing it.

The restore checks name the field that does not fit the instance, e.g.
``jobs[3].operations: ...``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from taktline.envs.jobshop.instance import JobShopInstance
from taktline.envs.snapshot import (
    SCHEMA_VERSION,
    JobShopCandidate,
    JobShopDecisionPoint,
    JobShopJob,
    JobShopMachine,
    JobShopSnapshot,
)

if TYPE_CHECKING:
    from taktline.envs.jobshop.schedule import JobShopState


def jobshop_snapshot(state: JobShopState) -> JobShopSnapshot:
    """The typed snapshot of a job-shop state.

    ``as_snapshot`` of its ``model_dump(mode="json")`` gives it back, and
    ``JobShopState.from_snapshot`` restores it.

    >>> from taktline.envs.jobshop import JobShopState, load_bundled
    >>> snap = jobshop_snapshot(JobShopState(load_bundled("ft06")))
    >>> snap.decision.machine, len(snap.jobs), snap.time_scale
    (2, 6, 10)
    """
    inst = state.instance
    decision: JobShopDecisionPoint | None = None
    if not state.done:
        decision = JobShopDecisionPoint.model_construct(
            kind="dispatch",
            machine=state.candidate_machine,
            candidates=[
                JobShopCandidate.model_construct(job=j, start=s, processing_time=p)
                for j, s, p in zip(
                    state.candidate_jobs, state.candidate_starts, state.candidate_times, strict=True
                )
            ],
        )
    jobs, machines = state.snapshot_records
    ready, nxt = state.job_ready, state.next_op
    for j, rec in enumerate(jobs):
        if rec is None or rec.next_op != nxt[j] or rec.ready != ready[j]:
            jobs[j] = _job_record(inst, j, ready[j], nxt[j])
    for m, a in enumerate(state.machine_available):
        rec_m = machines[m]
        if rec_m is None or rec_m.available != a:
            machines[m] = JobShopMachine.model_construct(id=m, available=a)
    return JobShopSnapshot.model_construct(
        schema_version=SCHEMA_VERSION,
        kind="jobshop",
        instance=inst.name,
        scheme="non-delay" if state.scheme == "non-delay" else "active",
        time=state.now,
        makespan=state.makespan,
        time_scale=inst.max_processing_time,
        machines=[m for m in machines if m is not None],  # every record is filled above
        jobs=[j for j in jobs if j is not None],
        decision=decision,
    )


def _job_record(inst: JobShopInstance, j: int, ready: int, next_op: int) -> JobShopJob:
    ops = inst.jobs[j]
    return JobShopJob.model_construct(
        id=j,
        ready=ready,
        next_op=next_op,
        n_ops=len(ops),
        release_date=inst.release_dates[j] if inst.release_dates else 0,
        due_date=inst.due_dates[j] if inst.due_dates else None,
        operations=[[list(a) for a in alts] for alts in ops[next_op:]],
    )


def instance_problem(instance: JobShopInstance, snap: JobShopSnapshot) -> str | None:
    """Why ``snap`` is not a snapshot of ``instance``, or ``None``."""
    name = instance.name
    if snap.instance != name:
        return f"instance: {snap.instance!r}, but restoring into instance {name!r}"
    if len(snap.machines) != instance.n_machines:
        return f"machines: {len(snap.machines)} machines, but {name!r} has {instance.n_machines}"
    if len(snap.jobs) != instance.n_jobs:
        return f"jobs: {len(snap.jobs)} jobs, but {name!r} has {instance.n_jobs}"
    if snap.time_scale != instance.max_processing_time:
        return (
            f"time_scale: {snap.time_scale}, but the longest processing time of {name!r} is "
            f"{instance.max_processing_time}"
        )
    releases = instance.release_dates or (0,) * instance.n_jobs
    makespan = max(m.available for m in snap.machines)
    for j, (job, ops) in enumerate(zip(snap.jobs, instance.jobs, strict=True)):
        due = None if instance.due_dates is None else instance.due_dates[j]
        where = f"jobs[{j}]"
        if job.n_ops != len(ops):
            return f"{where}.n_ops: {job.n_ops}, but job {j} of {name!r} has {len(ops)} operations"
        if job.release_date != releases[j]:
            return f"{where}.release_date: {job.release_date}, but {name!r} says {releases[j]}"
        if job.due_date != due:
            return f"{where}.due_date: {job.due_date}, but {name!r} says {due}"
        if job.operations != [[list(a) for a in alts] for alts in ops[job.next_op :]]:
            return (
                f"{where}.operations: not operations {job.next_op}..{len(ops) - 1} of job {j} "
                f"in {name!r} (as [machine, processing time] alternatives)"
            )
        if job.next_op == 0 and job.ready != releases[j]:
            return (
                f"{where}.ready: {job.ready}, but job {j} has not started (next_op 0), so it is "
                f"ready at its release date {releases[j]}"
            )
        if job.next_op > 0 and job.ready > makespan:
            return (
                f"{where}.ready: {job.ready}, after every machine is free ({makespan}): its "
                "last operation cannot have ended then"
            )
    if snap.makespan != makespan:
        return f"makespan: {snap.makespan}, but the last machine is free at {makespan}"
    return None


def decision_problem(state: JobShopState, snap: JobShopSnapshot) -> str | None:
    """Why ``snap``'s decision point or time is not the one ``state`` (its frontier) has."""
    d = snap.decision
    scheme = f"the {state.scheme} scheme"
    if state.done != (d is None):
        if state.done:
            return "decision: every operation is scheduled, so there is none; expected null"
        return (
            f"decision: null, but operations are left; {scheme} decides machine "
            f"{state.candidate_machine} here"
        )
    if d is not None and d.machine != state.candidate_machine:
        return (
            f"decision.machine: {d.machine}, but {scheme} decides machine "
            f"{state.candidate_machine} at this frontier"
        )
    if d is not None:
        got = sorted((c.job, c.start, c.processing_time) for c in d.candidates)
        want = list(
            zip(state.candidate_jobs, state.candidate_starts, state.candidate_times, strict=True)
        )
        if got != want:
            return (
                f"decision.candidates: {got}, but {scheme} offers {want} at this frontier "
                "(job, start, processing time)"
            )
    if snap.time != state.now:
        return f"time: {snap.time}, but the decision time at this frontier is {state.now}"
    return None
