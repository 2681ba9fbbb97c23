"""The schedule builder: a job-shop state that grows a schedule one decision at a time.

Two classical generation schemes (Giffler & Thompson 1960; Baker 1974, ch. 7):

* ``"active"`` (default, Giffler–Thompson): let ``C*`` be the earliest completion time of any
  schedulable operation and ``M*`` its machine. The candidates are the jobs whose next
  operation can run on ``M*`` and could start there before ``C*`` (the *conflict set*). Every
  schedule built this way is **active**, and every active schedule, hence an optimal one, can be
  built: :func:`taktline.envs.jobshop.replay.replay_schedule` replays any schedule.
* ``"non-delay"``: let ``t*`` be the earliest time any operation can start and ``M*`` its
  machine; the candidates are the jobs whose next operation can start on ``M*`` at ``t*``. No
  machine is ever kept idle while work waits; non-delay schedules are a subset of active ones
  and may exclude every optimum.

Ties between machines go to the lowest machine index. A decision names a candidate job; its
next operation starts on ``M*`` at its earliest start. In a flexible job shop every
``(operation, machine)`` alternative takes part in finding ``C*`` (``t*``), so ``M*`` is the
machine that can complete (start) an operation first.

The state keeps plain Python lists (fast to update, cheap to :meth:`JobShopState.copy` for
best-of-N rollouts); :meth:`JobShopState.arrays` gives numpy views for observations.

>>> from taktline.envs.jobshop.instance import JobShopInstance
>>> inst = JobShopInstance.from_matrices([[0, 1], [0, 1]], [[3, 2], [1, 4]])
>>> s = JobShopState(inst)
>>> s.candidate_jobs, s.candidate_machine
([0, 1], 0)
>>> s.apply(1); s.apply(0); s.apply(1); s.apply(0)
>>> s.done, s.makespan
(True, 7)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np

from taktline.envs.decision import Decision
from taktline.envs.jobshop.instance import JobShopInstance
from taktline.errors import InfeasibleActionError, SpecError

if TYPE_CHECKING:
    from taktline.envs.snapshot import JobShopJob, JobShopMachine, JobShopSnapshot

Scheme = Literal["active", "non-delay"]
SCHEMES: tuple[str, ...] = ("active", "non-delay")
_INF = float("inf")


class ScheduledOperation(NamedTuple):
    """One operation of a schedule: ``job``'s ``op``-th operation on ``machine``."""

    job: int
    op: int
    machine: int
    start: int
    end: int


class JobShopState:
    """A partial schedule and its decision point (see the module docstring).

    Attributes (read-only; plain lists, indexed by job or machine):
        next_op: Index of each job's next unscheduled operation (``len(ops)`` when done).
        job_ready: When each job's previous operation ends (its release date at first).
        machine_available: When each machine finishes its last scheduled operation.
        schedule: The scheduled operations in decision order.
        makespan: The largest end time so far.
        candidate_jobs: Jobs that may be chosen now (the feasibility mask), in job order.
        candidate_machine: ``M*``, the machine the chosen job's operation will run on.
        candidate_starts: Start time of each candidate's operation on ``M*``.
        candidate_times: Processing time of each candidate's operation on ``M*``.
        snapshot_records: The job and machine records of the last snapshot, which
            :func:`~taktline.envs.jobshop.snapshots.jobshop_snapshot` reuses where they
            still hold (``None`` before the first).
    """

    __slots__ = (
        "_alts",
        "_done_key",
        "_flexible",
        "_key",
        "_log",
        "_min_time",
        "_n_left",
        "_n_machines",
        "_n_ops",
        "_non_delay",
        "_op_machine",
        "_op_time",
        "_queue",
        "_seq_machine",
        "_seq_time",
        "_suffix_work",
        "candidate_jobs",
        "candidate_machine",
        "instance",
        "job_ready",
        "machine_available",
        "makespan",
        "next_op",
        "scheme",
        "snapshot_records",
    )

    def __init__(self, instance: JobShopInstance, scheme: str = "active") -> None:
        """Start an empty schedule.

        Args:
            instance: The problem.
            scheme: ``"active"`` (Giffler–Thompson) or ``"non-delay"``.
        """
        if scheme not in SCHEMES:
            raise SpecError(f"scheme: expected one of {', '.join(SCHEMES)}, got {scheme!r}")
        self.instance = instance
        self.scheme = scheme
        self._non_delay = scheme == "non-delay"
        self._alts = instance.jobs
        self._flexible = instance.is_flexible
        self._n_machines = instance.n_machines
        self._n_ops = [len(ops) for ops in instance.jobs]
        self._min_time = [[min(p for _, p in alts) for alts in ops] for ops in instance.jobs]
        # each operation's first alternative (its only one in a classical job shop)
        self._seq_machine = [[alts[0][0] for alts in ops] for ops in instance.jobs]
        self._seq_time = [[alts[0][1] for alts in ops] for ops in instance.jobs]
        self._suffix_work = []
        for times in self._min_time:
            suffix = [0] * (len(times) + 1)
            for i in range(len(times) - 1, -1, -1):
                suffix[i] = suffix[i + 1] + times[i]
            self._suffix_work.append(suffix)
        self.reset()

    def reset(self) -> None:
        """Back to the empty schedule (reuses the precomputed tables; cheaper than a new state)."""
        n = self.instance.n_jobs
        self._load([0] * n, list(self.instance.release_dates or (0,) * n), [0] * self._n_machines)

    def _load(self, next_op: list[int], job_ready: list[int], machine_available: list[int]) -> None:
        """Set the partial schedule's frontier and find its decision point (no log kept)."""
        n, nm = self.instance.n_jobs, self._n_machines
        self.next_op = next_op
        self.job_ready = job_ready
        self.machine_available = machine_available
        self._log: list[tuple[int, int, int, int, int]] = []
        self.makespan = max(machine_available)
        self._n_left = sum(k - i for k, i in zip(self._n_ops, next_op, strict=True))
        # The next operation's machine and time (its first alternative; -1 / 0 once done).
        rows = list(zip(self._seq_machine, self._seq_time, next_op, self._n_ops, strict=True))
        self._op_machine = [-1 if i == k else ms[i] for ms, _, i, k in rows]
        self._op_time = [0 if i == k else ts[i] for _, ts, i, k in rows]
        # Classical job shops: jobs waiting for each machine, and per job the sort key
        # ``time * n_machines + machine`` (time = completion for active, start for non-delay),
        # so ``min(self._key)`` finds C* (t*) and M* (lowest machine on ties) in one C call.
        self._done_key = 1 << 62
        self._queue: list[list[int]] = [[] for _ in range(nm)]
        self._key = [self._done_key] * n
        if not self._flexible:
            for j in range(n):
                if self._op_machine[j] >= 0:
                    self._queue[self._op_machine[j]].append(j)
                    self._key[j] = self._job_key(j)
        self.candidate_jobs: list[int] = []
        self.candidate_machine = -1
        self.snapshot_records: tuple[list[JobShopJob | None], list[JobShopMachine | None]] = (
            [None] * n,
            [None] * nm,
        )
        self._refresh()

    @property
    def done(self) -> bool:
        """True when every operation is scheduled."""
        return self._n_left == 0

    @property
    def schedule(self) -> list[ScheduledOperation]:
        """The scheduled operations, in decision order."""
        return [ScheduledOperation._make(t) for t in self._log]

    @property
    def candidate_starts(self) -> list[int]:
        """Start time of each candidate's operation on :attr:`candidate_machine`."""
        a = self.machine_available[self.candidate_machine]
        return [max(self.job_ready[j], a) for j in self.candidate_jobs]

    @property
    def candidate_times(self) -> list[int]:
        """Processing time of each candidate's operation on :attr:`candidate_machine`."""
        return [self._time_on(j, self.candidate_machine) for j in self.candidate_jobs]

    @property
    def now(self) -> int:
        """The decision time: the earliest start among the candidates."""
        return min(self.candidate_starts) if self.candidate_jobs else self.makespan

    def remaining_work(self, job: int) -> int:
        """Work left in ``job`` including its next operation (shortest alternative times)."""
        return self._suffix_work[job][self.next_op[job]]

    def work_after(self, job: int) -> int:
        """Work left in ``job`` after its next operation (shortest alternative times)."""
        return self._suffix_work[job][min(self.next_op[job] + 1, self._n_ops[job])]

    def remaining_ops(self, job: int) -> int:
        """Operations left in ``job`` including its next one."""
        return self._n_ops[job] - self.next_op[job]

    def apply(self, job: int, machine: int | None = None) -> None:
        """Schedule the next operation of ``job`` (one of :attr:`candidate_jobs`).

        Args:
            job: The chosen job.
            machine: Optional; when given it must be :attr:`candidate_machine`.

        Raises:
            InfeasibleActionError: if ``job`` is not a candidate or the machine is wrong.
        """
        m = self.candidate_machine
        if job not in self.candidate_jobs or (machine is not None and machine != m):
            self._reject(job, machine)
        if self._flexible:
            self._apply_flexible(job, m)
            return
        # The hot path of every rollout: plain locals, no helper calls.
        jr, ma, ot, om = self.job_ready, self.machine_available, self._op_time, self._op_machine
        r, a = jr[job], ma[m]
        start = r if r > a else a
        end = start + ot[job]
        i = self.next_op[job]
        self._log.append((job, i, m, start, end))
        ma[m] = end
        jr[job] = end
        if end > self.makespan:
            self.makespan = end
        i += 1
        self.next_op[job] = i
        self._n_left -= 1
        queue, key, nm, non_delay = self._queue, self._key, self._n_machines, self._non_delay
        waiting = queue[m]
        waiting.remove(job)
        if i < self._n_ops[job]:
            m2 = om[job] = self._seq_machine[job][i]
            p2 = ot[job] = self._seq_time[job][i]
            queue[m2].append(job)
            a2 = ma[m2]
            s2 = end if end > a2 else a2
            key[job] = (s2 if non_delay else s2 + p2) * nm + m2
        else:
            om[job], ot[job] = -1, 0
            key[job] = self._done_key
            if self._n_left == 0:
                self.candidate_jobs = []
                self.candidate_machine = -1
                return
        # machine m's availability moved to ``end``: re-key the jobs waiting for it
        if non_delay:
            for q in waiting:
                rq = jr[q]
                key[q] = (rq if rq > end else end) * nm + m
        else:
            for q in waiting:
                rq = jr[q]
                key[q] = ((rq if rq > end else end) + ot[q]) * nm + m
        # the next decision point: key = time * n_machines + machine, so min() gives M*
        b = min(key)
        t, bm = divmod(b, nm)
        a = ma[bm]
        cands = []
        if non_delay:
            for q in queue[bm]:  # loops, not comprehensions: these lists are short
                if (jr[q] if jr[q] > a else a) == t:
                    cands.append(q)
        elif a < t:  # starts before C* <=> ready before C* (machine M* is free before C*)
            for q in queue[bm]:
                if jr[q] < t or key[q] == b:
                    cands.append(q)
        else:  # only with zero processing times: the critical operations themselves
            for q in queue[bm]:
                if key[q] == b:
                    cands.append(q)
        cands.sort()  # job order, not queue order: a restored state has no queue history
        self.candidate_jobs = cands
        self.candidate_machine = bm

    def _apply_flexible(self, job: int, m: int) -> None:
        jr, ma = self.job_ready, self.machine_available
        start = max(jr[job], ma[m])
        end = start + self._time_on(job, m)
        i = self.next_op[job]
        self._log.append((job, i, m, start, end))
        ma[m] = jr[job] = end
        self.makespan = max(self.makespan, end)
        self.next_op[job] = i + 1
        self._n_left -= 1
        if i + 1 < self._n_ops[job]:
            self._op_machine[job], self._op_time[job] = self._alts[job][i + 1][0]
        else:
            self._op_machine[job], self._op_time[job] = -1, 0
        self._refresh()

    def copy(self) -> JobShopState:
        """An independent copy (the instance and precomputed tables are shared)."""
        new = object.__new__(JobShopState)
        for name in (
            "instance",
            "scheme",
            "_non_delay",
            "_alts",
            "_flexible",
            "_n_machines",
            "_n_ops",
            "_min_time",
            "_suffix_work",
            "_seq_machine",
            "_seq_time",
            "_done_key",
            "makespan",
            "_n_left",
            "candidate_machine",
        ):
            setattr(new, name, getattr(self, name))
        for name in (
            "next_op",
            "job_ready",
            "machine_available",
            "_log",
            "_op_machine",
            "_op_time",
            "_key",
            "candidate_jobs",
        ):
            setattr(new, name, list(getattr(self, name)))
        new._queue = [list(q) for q in self._queue]
        new.snapshot_records = (list(self.snapshot_records[0]), list(self.snapshot_records[1]))
        return new

    def fork(self) -> JobShopState:
        """A copy that continues exactly as this state would (the twin's name for :meth:`copy`;
        a job shop draws no random numbers, so there are no streams to share or reseed)."""
        return self.copy()

    @classmethod
    def from_snapshot(
        cls, instance: JobShopInstance, snapshot: JobShopSnapshot | Mapping[str, Any]
    ) -> JobShopState:
        """The state a job-shop snapshot of ``instance`` describes (its scheme and frontier).

        Restoring is exact: the restored state's snapshot equals ``snapshot``, and the same
        decisions then build the same operations and makespan. Its :attr:`schedule` holds only
        the operations scheduled after the restore (a snapshot does not carry the past).

        Raises:
            SpecError: naming the snapshot field that does not fit ``instance``, or a
                ``decision`` other than the one the scheme gives at that frontier.
        """
        from taktline.envs.jobshop.snapshots import decision_problem, instance_problem
        from taktline.envs.snapshot import as_jobshop_snapshot

        snap = as_jobshop_snapshot(snapshot)
        problem = instance_problem(instance, snap)
        state = cls(instance, snap.scheme)
        if problem is None:
            state._load(
                [j.next_op for j in snap.jobs],
                [j.ready for j in snap.jobs],
                [m.available for m in snap.machines],
            )
            problem = decision_problem(state, snap)
        if problem is not None:
            raise SpecError(problem, source="job-shop snapshot")
        return state

    def apply_decision(self, decision: Decision | Mapping[str, Any]) -> None:
        """Carry out a dispatch :class:`~taktline.envs.decision.Decision` (or its dict).

        ``machine``, ``operation`` and ``start`` are optional; when given they must be the
        decision machine, the job's next operation and its start there.

        Raises:
            InfeasibleActionError: naming the field that does not fit the decision point.
        """
        d = decision if isinstance(decision, Decision) else Decision.model_validate(decision)
        job, machine, m = d.job, d.machine, self.candidate_machine
        if d.kind != "dispatch" or not isinstance(job, int) or isinstance(machine, str):
            raise InfeasibleActionError(
                "decision: a job shop needs a dispatch naming job and machine numbers, got "
                f"kind={d.kind!r}, job={job!r}, machine={machine!r}"
            )
        if job not in self.candidate_jobs or (machine is not None and machine != m):
            self._reject(job, machine)
        if d.operation is not None and d.operation != self.next_op[job]:
            raise InfeasibleActionError(
                f"decision.operation: job {job}'s next operation is {self.next_op[job]}, "
                f"got {d.operation}"
            )
        if d.start is not None:
            r, a = self.job_ready[job], self.machine_available[m]
            if d.start != (r if r > a else a):
                raise InfeasibleActionError(
                    f"decision.start: job {job} starts on machine {m} at {max(r, a)}, "
                    f"got {d.start:g}"
                )
        self.apply(job)

    def mask(self) -> np.ndarray:
        """Boolean mask over jobs: True for the candidates."""
        out = np.zeros(self.instance.n_jobs, dtype=bool)
        out[self.candidate_jobs] = True
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        """Per-job and per-machine features for observations (fresh numpy arrays).

        Keys: ``next_op``, ``remaining_ops``, ``op_machine`` (-1 when done), ``op_time`` (the
        next operation's shortest time, 0 when done), ``remaining_work``, ``job_ready``,
        ``machine_available``, ``mask``.
        """
        n = self.instance.n_jobs
        nxt = self.next_op
        return {
            "next_op": np.array(nxt, dtype=np.int64),
            "remaining_ops": np.array(self._n_ops, dtype=np.int64) - np.array(nxt),
            "op_machine": np.array(self._op_machine, dtype=np.int64),
            "op_time": np.array(
                [self._min_time[j][nxt[j]] if self._op_machine[j] >= 0 else 0 for j in range(n)],
                dtype=np.int64,
            ),
            "remaining_work": np.array(
                [self._suffix_work[j][nxt[j]] for j in range(n)], dtype=np.int64
            ),
            "job_ready": np.array(self.job_ready, dtype=np.int64),
            "machine_available": np.array(self.machine_available, dtype=np.int64),
            "mask": self.mask(),
        }

    def _job_key(self, j: int) -> int:
        m = self._op_machine[j]
        s = max(self.job_ready[j], self.machine_available[m])
        return (s if self._non_delay else s + self._op_time[j]) * self._n_machines + m

    def _time_on(self, job: int, machine: int) -> int:
        for m, p in self._alts[job][self.next_op[job]]:
            if m == machine:
                return p
        raise InfeasibleActionError(f"job {job}: its next operation cannot run on {machine}")

    def _reject(self, job: int, machine: int | None) -> None:
        if job not in self.candidate_jobs:
            raise InfeasibleActionError(
                f"job {job} is not schedulable now; candidates are {self.candidate_jobs}"
                + (" (the schedule is complete)" if self.done else "")
            )
        raise InfeasibleActionError(
            f"job {job}: machine {machine} is not the decision machine; use machine "
            f"{self.candidate_machine}"
        )

    def _refresh(self) -> None:
        if self._n_left == 0:
            self.candidate_jobs = []
            self.candidate_machine = -1
        elif self._flexible:
            self._refresh_flexible()
        else:
            b = min(self._key)
            t, bm = divmod(b, self._n_machines)
            a = self.machine_available[bm]
            jr = self.job_ready
            if self._non_delay:
                # t is the earliest start; jobs on M* that can start at t
                self.candidate_jobs = sorted(
                    q for q in self._queue[bm] if (jr[q] if jr[q] > a else a) == t
                )
            else:
                key = self._key
                self.candidate_jobs = sorted(
                    q for q in self._queue[bm] if (jr[q] if jr[q] > a else a) < t or key[q] == b
                )
            self.candidate_machine = bm

    def _refresh_flexible(self) -> None:
        jr, ma, nxt, alts = self.job_ready, self.machine_available, self.next_op, self._alts
        active = not self._non_delay
        best, bm, bj = _INF, -1, -1
        for j, i in enumerate(nxt):
            if i == self._n_ops[j]:
                continue
            r = jr[j]
            for m, p in alts[j][i]:
                a = ma[m]
                key = (r if r > a else a) + (p if active else 0)
                if key < best or (key == best and m < bm):
                    best, bm, bj = key, m, j
        a = ma[bm]
        jobs = []
        for j, i in enumerate(nxt):
            if i == self._n_ops[j]:
                continue
            for m, _ in alts[j][i]:
                if m == bm:
                    s = jr[j] if jr[j] > a else a
                    if (s < best or j == bj) if active else s == best:
                        jobs.append(j)
                    break
        self.candidate_jobs = jobs
        self.candidate_machine = bm
