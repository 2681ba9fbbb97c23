"""The job-shop snapshot, its rule candidates and the codec of ``taktline/JobShop-v0``.

A job-shop snapshot (:class:`~taktline.envs.snapshot.JobShopSnapshot`, built by
:func:`jobshop_snapshot`, defined in :mod:`taktline.envs.jobshop.snapshots`) is what a
scheduler knows at a decision point; its JSON (``snap.model_dump(mode="json")``) is::

    {"schema_version": 1, "kind": "jobshop", "instance": "ta01", "scheme": "active",
     "time": 120, "makespan": 187, "time_scale": 99,   # the longest processing time
     "machines": [{"id": 0, "available": 187}, ...],
     "jobs": [{"id": 0, "ready": 94, "next_op": 2, "n_ops": 15,
               "release_date": 0, "due_date": null,
               "operations": [[[6, 40]], [[2, 13]], ...]},   # the ops left: (machine, time)
              ...],
     "decision": {"kind": "dispatch", "machine": 3,        # M*, or null when done
                  "candidates": [{"job": 0, "start": 120, "processing_time": 40}, ...]}}

The observation (float32, clipped to ``[-CLIP, CLIP]``; ``ps`` = time_scale, ``M``/``J`` the
instance's machines/jobs, padded to ``max_jobs``/``max_machines`` with zeros) is, per job slot:
valid, candidate, done, processing time of its next operation (on M* for a candidate) / ps,
(earliest start - now) / ps, (ready - now) / ps, remaining work / (ps M), remaining operations /
operations, (availability of its next machine - now) / ps, next machine is M*, (due date - now -
remaining work) / (ps M) or 0; per machine slot: valid, (available - now) / ps, potential load
(the times of every remaining operation that may run on it) / (ps J), is M*; and globally:
now / (ps M), (makespan - now) / ps, share of operations scheduled, candidates / J.
That is 11 per job + 4 per machine + 4 (229 on a 15x15 instance; JSSEnv has 7 per job).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

from taktline.envs.decision import Decision
from taktline.envs.jobshop.snapshots import jobshop_snapshot
from taktline.envs.snapshot import Candidate, JobShopSnapshot, as_jobshop_snapshot
from taktline.errors import InfeasibleActionError, PolicyError

if TYPE_CHECKING:
    from taktline.envs.jobshop.schedule import JobShopState

__all__ = [
    "JobShopCodec",
    "JobShopView",
    "check_action",
    "dispatch_decision",
    "jobshop_candidates",
    "jobshop_snapshot",
    "jobshop_view",
]

CLIP = 10.0
JOB_FEATURES = 11
MACHINE_FEATURES = 4
GLOBAL_FEATURES = 4


@dataclass(slots=True)
class JobShopView:
    """The numbers a job-shop observation is built from (from a snapshot or a live state)."""

    now: float
    makespan: float
    time_scale: float
    ready: list[int]
    next_machine: list[int]  # first alternative's machine, -1 when done
    next_time: list[int]  # shortest time of the next operation, 0 when done
    remaining_work: list[int]  # sum of shortest times of the remaining operations
    remaining_ops: list[int]
    n_ops: list[int]
    due: list[float]  # nan when none
    available: list[int]
    load: list[int]
    cand_jobs: list[int]
    cand_starts: list[int]
    cand_times: list[int]
    machine: int  # M*, -1 when done


def jobshop_view(snapshot: JobShopSnapshot | Mapping[str, Any]) -> JobShopView:
    """Read a job-shop snapshot (a dict is validated first) into a :class:`JobShopView`."""
    snap = as_jobshop_snapshot(snapshot)
    load = [0] * len(snap.machines)
    next_machine, next_time, rem_work, rem_ops, n_ops, due = [], [], [], [], [], []
    for job in snap.jobs:
        ops = job.operations
        work = 0
        for alts in ops:
            work += min(p for _, p in alts)
            for m, p in alts:
                load[m] += p
        next_machine.append(ops[0][0][0] if ops else -1)
        next_time.append(min(p for _, p in ops[0]) if ops else 0)
        rem_work.append(work)
        rem_ops.append(len(ops))
        n_ops.append(job.n_ops)
        due.append(math.nan if job.due_date is None else float(job.due_date))
    d = snap.decision
    cands = d.candidates if d is not None else []
    return JobShopView(
        now=float(snap.time),
        makespan=float(snap.makespan),
        time_scale=float(snap.time_scale),
        ready=[job.ready for job in snap.jobs],
        next_machine=next_machine,
        next_time=next_time,
        remaining_work=rem_work,
        remaining_ops=rem_ops,
        n_ops=n_ops,
        due=due,
        available=[m.available for m in snap.machines],
        load=load,
        cand_jobs=[c.job for c in cands],
        cand_starts=[c.start for c in cands],
        cand_times=[c.processing_time for c in cands],
        machine=d.machine if d is not None else -1,
    )


def jobshop_candidates(snapshot: JobShopSnapshot | Mapping[str, Any]) -> list[Candidate]:
    """The jobs a dispatching rule chooses among at a job-shop snapshot's decision point.

    This is the only place a waiting job of a job shop becomes a rule
    :class:`~taktline.envs.snapshot.Candidate` (the env, the offline dispatcher and
    ``RulePolicy.decide`` all read it). Classical job-shop definitions:

    * ``processing_time``: the operation's time on the decision machine ``M*`` (SPT, LPT);
    * ``remaining_work``: that time plus the job's later operations, each at its shortest
      alternative (MWKR; the operation being decided runs on ``M*``, so it counts at ``M*``);
    * ``remaining_ops``: its operations left, this one included (MOPNR);
    * ``queue_entry_time``: when the job became ready for this operation (FIFO);
    * ``due_date`` / ``arrival_time``: its due date (``inf`` if none) / its release date.

    ``id`` is the job number, ``name`` its string, ``family`` empty; in candidate order.

    Raises:
        PolicyError: when the schedule is complete (no decision point).
    """
    snap = as_jobshop_snapshot(snapshot)
    d = snap.decision
    if d is None:
        raise PolicyError("snapshot.decision: the schedule is complete; nothing to dispatch")
    out = []
    for c in d.candidates:
        job = snap.jobs[c.job]
        later = sum(min(p for _, p in alts) for alts in job.operations[1:])
        out.append(
            Candidate(
                id=c.job,
                name=str(c.job),
                family="",
                processing_time=float(c.processing_time),
                remaining_work=float(c.processing_time + later),
                remaining_ops=len(job.operations),
                due_date=math.inf if job.due_date is None else float(job.due_date),
                arrival_time=float(job.release_date),
                queue_entry_time=float(job.ready),
            )
        )
    return out


def dispatch_decision(machine: int, job: int, operation: int, start: int) -> Decision:
    """The decision "start ``job``'s operation ``operation`` on ``machine`` at ``start``".

    The one place a job-shop action becomes a :class:`~taktline.envs.decision.Decision`
    (:meth:`JobShopCodec.decode` on a snapshot, :meth:`JobShopCodec.decode_state` in the env).
    """
    return Decision(kind="dispatch", machine=machine, job=job, operation=operation, start=start)


class JobShopCodec:
    """Codec of ``taktline/JobShop-v0``: action ``j`` schedules job ``j``'s next operation.

    Args:
        max_jobs: Job slots (observation rows and actions); smaller instances are padded.
        max_machines: Machine slots.
        dict_obs: Observations as ``{"observations", "action_mask"}``.

    >>> from taktline.envs.jobshop import JobShopState, load_bundled
    >>> codec = JobShopCodec(max_jobs=8, max_machines=6)
    >>> obs, mask = codec.encode(jobshop_snapshot(JobShopState(load_bundled("ft06"))))
    >>> obs.shape, mask.nonzero()[0].tolist()
    ((116,), [0, 2, 4])
    """

    env_id = "taktline/JobShop-v0"

    def __init__(self, max_jobs: int, max_machines: int, dict_obs: bool = False) -> None:
        if max_jobs < 1 or max_machines < 1:
            raise PolicyError(
                f"max_jobs, max_machines: must be >= 1, got {max_jobs}, {max_machines}"
            )
        self.max_jobs = max_jobs
        self.max_machines = max_machines
        self.dict_obs = dict_obs
        n_obs = max_jobs * JOB_FEATURES + max_machines * MACHINE_FEATURES + GLOBAL_FEATURES
        self.flat_space = gym.spaces.Box(-CLIP, CLIP, shape=(n_obs,), dtype=np.float32)
        self.action_space: gym.spaces.Discrete = gym.spaces.Discrete(max_jobs)
        self.observation_space: gym.spaces.Space[Any] = (
            gym.spaces.Dict(
                {
                    "observations": self.flat_space,
                    "action_mask": gym.spaces.Box(0.0, 1.0, shape=(max_jobs,), dtype=np.float32),
                }
            )
            if dict_obs
            else self.flat_space
        )

    def observation(self, obs: np.ndarray, mask: np.ndarray) -> Any:
        """What the env returns: ``obs``, or the Dict ``{observations, action_mask}``."""
        if self.dict_obs:
            return {"observations": obs, "action_mask": mask.astype(np.float32)}
        return obs

    def check_size(self, n_jobs: int, n_machines: int, source: str) -> None:
        """Raise a clear error when an instance does not fit the padding."""
        if n_jobs > self.max_jobs or n_machines > self.max_machines:
            raise PolicyError(
                f"{source}: {n_jobs} jobs x {n_machines} machines does not fit max_jobs="
                f"{self.max_jobs}, max_machines={self.max_machines}; raise max_jobs/max_machines"
            )

    def features(self, v: JobShopView) -> tuple[np.ndarray, np.ndarray]:
        """Observation and mask of a view (plain Python: small numpy ops cost more here)."""
        n_j, n_m = len(v.ready), len(v.available)
        self.check_size(n_j, n_m, "snapshot")
        ps = v.time_scale if v.time_scale > 0 else 1.0
        now = v.now
        wscale = ps * n_m
        dm = v.machine
        avail = v.available
        cand = {j: (s, p) for j, s, p in zip(v.cand_jobs, v.cand_starts, v.cand_times, strict=True)}
        out: list[float] = []
        ext = out.extend
        for j, r, rw, d, m, pt, ro, no in zip(
            range(n_j),
            v.ready,
            v.remaining_work,
            v.due,
            v.next_machine,
            v.next_time,
            v.remaining_ops,
            v.n_ops,
            strict=True,
        ):
            slack = 0.0 if d != d else (d - now - rw) / wscale  # d != d: no due date (nan)
            if m < 0:
                ext((1.0, 0.0, 1.0, 0.0, 0.0, (r - now) / ps, 0.0, 0.0, 0.0, 0.0, slack))
                continue
            a = avail[m]
            c = cand.get(j)
            if c is None:
                start, p, is_cand = (r if r > a else a), pt, 0.0
            else:
                start, p, is_cand = c[0], c[1], 1.0
            ext(
                (
                    1.0,
                    is_cand,
                    0.0,
                    p / ps,
                    (start - now) / ps,
                    (r - now) / ps,
                    rw / wscale,
                    ro / (no or 1),
                    (a - now) / ps,
                    1.0 if m == dm else 0.0,
                    slack,
                )
            )
        ext([0.0] * (JOB_FEATURES * (self.max_jobs - n_j)))
        lscale = ps * max(n_j, 1)
        for m in range(n_m):
            ext((1.0, (avail[m] - now) / ps, v.load[m] / lscale, 1.0 if m == dm else 0.0))
        ext([0.0] * (MACHINE_FEATURES * (self.max_machines - n_m)))
        total = sum(v.n_ops)
        left = sum(v.remaining_ops)
        ext(
            (
                now / wscale,
                (v.makespan - now) / ps,
                (total - left) / max(total, 1),
                len(cand) / max(n_j, 1),
            )
        )
        obs = np.array(out, dtype=np.float32)
        np.clip(obs, -CLIP, CLIP, out=obs)
        mask = np.zeros(self.max_jobs, dtype=bool)
        mask[v.cand_jobs] = True
        return obs, mask

    def encode(
        self, snapshot: JobShopSnapshot | Mapping[str, Any]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Observation (float32) and action mask (bool) of a job-shop snapshot."""
        return self.features(jobshop_view(snapshot))

    def decode(self, snapshot: JobShopSnapshot | Mapping[str, Any], action: int) -> Decision:
        """The decision an action means: schedule job ``action``'s next operation on M*.

        Raises:
            InfeasibleActionError: when job ``action`` is not a candidate now.
        """
        snap = as_jobshop_snapshot(snapshot)
        d = snap.decision
        a = int(action)
        if d is None:
            raise InfeasibleActionError(
                f"action {a}: the schedule is complete; there is nothing to dispatch"
            )
        jobs = [c.job for c in d.candidates]
        check_action(a, jobs, self.max_jobs)
        start = d.candidates[jobs.index(a)].start
        return dispatch_decision(d.machine, a, snap.jobs[a].next_op, start)

    def decode_state(self, state: JobShopState, action: int) -> Decision:
        """:meth:`decode` on the snapshot of ``state``, read from the state directly (the
        env's step: building the whole snapshot per step would triple its cost).

        Raises:
            InfeasibleActionError: when job ``action`` is not a candidate now.
        """
        a = int(action)
        check_action(a, state.candidate_jobs, self.max_jobs)
        m = state.candidate_machine
        start = max(state.job_ready[a], state.machine_available[m])  # as candidate_starts
        return dispatch_decision(m, a, state.next_op[a], start)


def check_action(action: int, candidates: Sequence[int], max_jobs: int) -> None:
    """Raise :class:`InfeasibleActionError` unless ``action`` is one of ``candidates``."""
    if action not in candidates:
        where = (
            f"job {action} cannot start its next operation on the decision machine now"
            if 0 <= action < max_jobs
            else f"expected a job slot in 0..{max_jobs - 1}"
        )
        raise InfeasibleActionError(
            f"action {action}: {where}; feasible actions (the mask) are {list(candidates)}"
        )
