"""Features of the job-shop scheduler network, computed for a whole batch of partial schedules.

One row per job, whatever the instance's size, so one network serves 6x6 and 100x20 alike. The
features of job ``j`` in a partial schedule whose decision machine is ``M*`` and whose earliest
candidate start is ``t0`` (``p̄`` the instance's mean processing time, ``LB`` its trivial
makespan bound, ``op`` the job's next operation on machine ``m``, ``m2`` the machine after it):

==  ==============================================================================
 0  candidate (its next operation may start next on ``M*``)
 1  done (every operation scheduled)
 2  processing time of ``op`` / p̄
 3  (earliest start of ``op`` - t0) / p̄
 4  (job ready - availability of M*) / p̄  (idle time the job would leave on M*)
 5  work left in the job / LB
 6  operations left / operations of the job
 7  (earliest start + work left) / LB  (the job's own bound on the makespan)
 8  (availability of m2 - earliest end of ``op``) / p̄  (wait at its next machine; 0 if last)
 9  unscheduled work on m / LB
10  unscheduled work on m2 / LB
11  work left / the largest work left of any job  (MWKR, relative)
12  processing time / the longest candidate's  (SPT, relative)
13  operations left / the most operations left of any job  (MOPNR, relative)
14  t0 / LB  (progress in time)
15  share of operations scheduled
16  makespan so far / LB
17  unscheduled work on M* / LB
18  candidates / jobs
19  the partial schedule's machine bound: max over machines (available + unscheduled) / LB
20  the partial schedule's job bound: max over jobs (earliest start + work left) / LB
21  work the job has left before its operation on the bottleneck ``b``  / LB (0 if none left)
22  work the job has left after its operation on ``b`` / LB (0 if none left)
23  the job still has an operation on ``b``
24  the most congested machine on the job's remaining route: max (available + unscheduled) / LB
==  ==============================================================================

The bottleneck ``b`` of a partial schedule is the machine with the largest available time plus
unscheduled work (the one that sets feature 19): a job that reaches it soon and has a long tail
after it is the shifting-bottleneck heuristic's priority.

The scales make the features independent of the time unit and, mostly, of the instance's size.
"""

from __future__ import annotations

import numpy as np

from taktline.envs.jobshop.batch import JobShopBatch
from taktline.envs.jobshop.instance import JobShopInstance

N_FEATURES = 25
CLIP = 10.0


class InstanceTables:
    """Per-instance arrays the features read (padded one column past each job's end)."""

    def __init__(self, instance: JobShopInstance):
        n, width = instance.n_jobs, max(len(ops) for ops in instance.jobs)
        self.n_jobs, self.n_machines = n, instance.n_machines
        self.seq_m = np.zeros((n, width + 2), dtype=np.int64)
        self.seq_p = np.zeros((n, width + 2), dtype=np.int64)
        self.has_next = np.zeros((n, width + 2), dtype=bool)
        for j, ops in enumerate(instance.jobs):
            for i, alts in enumerate(ops):
                self.seq_m[j, i], self.seq_p[j, i] = alts[0]
                self.has_next[j, i] = i + 1 < len(ops)
        self.n_ops = np.array([len(ops) for ops in instance.jobs], dtype=np.int64)
        self.work_left = np.cumsum(self.seq_p[:, ::-1], axis=1)[:, ::-1].astype(np.float64)
        load = np.zeros(instance.n_machines)
        np.add.at(load, self.seq_m[self.seq_p > 0], self.seq_p[self.seq_p > 0])
        self.machine_load = load
        # the first operation of each job on each machine (width: the job never visits it)
        self.op_on = np.full((n, instance.n_machines), width, dtype=np.int64)
        for j, ops in enumerate(instance.jobs):
            for i in range(len(ops) - 1, -1, -1):
                self.op_on[j, self.seq_m[j, i]] = i
        total_ops = int(self.n_ops.sum())
        self.total_ops = total_ops
        self.mean_p = max(1.0, float(self.seq_p.sum()) / total_ops)
        self.lower_bound = max(1.0, float(instance.trivial_lower_bound()))


def unscheduled_load(tables: InstanceTables, next_op: np.ndarray) -> np.ndarray:
    """``(B, M)`` work not yet scheduled on each machine."""
    b = next_op.shape[0]
    done_work = np.zeros((b, tables.n_machines))
    width = tables.seq_m.shape[1] - 2
    idx = np.arange(width)
    scheduled = idx[None, None, :] < next_op[:, :, None]  # (B, n, width)
    m = np.broadcast_to(tables.seq_m[None, :, :width], scheduled.shape)
    p = np.where(scheduled, tables.seq_p[None, :, :width], 0)
    rows = np.broadcast_to(np.arange(b)[:, None, None], scheduled.shape)
    np.add.at(done_work, (rows.ravel(), m.ravel()), p.ravel())
    return tables.machine_load[None, :] - done_work


def features(
    tables: InstanceTables,
    next_op: np.ndarray,
    job_ready: np.ndarray,
    machine_available: np.ndarray,
    decision_machine: np.ndarray,
    mask: np.ndarray,
    rem_load: np.ndarray,
) -> np.ndarray:
    """``(B, n_jobs, N_FEATURES)`` float32 features of ``B`` partial schedules (see the module).

    Args:
        tables: The instance's :class:`InstanceTables`.
        next_op: ``(B, n)`` next operation index of each job.
        job_ready: ``(B, n)`` end of each job's last scheduled operation (or its release).
        machine_available: ``(B, M)`` end of each machine's last operation.
        decision_machine: ``(B,)`` the machine ``M*`` of each row (any value in a finished row).
        mask: ``(B, n)`` the candidates.
        rem_load: ``(B, M)`` unscheduled work per machine (:func:`unscheduled_load`).
    """
    b, n = next_op.shape
    cols = np.arange(n)[None, :]
    rows = np.arange(b)[:, None]
    mp, lb = tables.mean_p, tables.lower_bound
    done = next_op >= tables.n_ops[None, :]
    m = tables.seq_m[cols, next_op]
    p = tables.seq_p[cols, next_op].astype(np.float64)
    m2 = tables.seq_m[cols, next_op + 1]
    has2 = tables.has_next[cols, next_op] & ~done
    wl = tables.work_left[cols, next_op]
    est = np.maximum(job_ready, machine_available[rows, m])
    ms = np.maximum(decision_machine, 0)
    avail_star = machine_available[np.arange(b), ms][:, None]
    big = np.where(mask, est, np.inf).min(axis=1, keepdims=True)
    t0 = np.where(np.isfinite(big), big, avail_star)
    f = np.empty((b, n, N_FEATURES), dtype=np.float64)
    f[..., 0] = mask
    f[..., 1] = done
    f[..., 2] = p / mp
    f[..., 3] = (est - t0) / mp
    f[..., 4] = (job_ready - avail_star) / mp
    f[..., 5] = wl / lb
    f[..., 6] = (tables.n_ops[None, :] - next_op) / tables.n_ops[None, :]
    f[..., 7] = np.where(done, job_ready, est + wl) / lb
    f[..., 8] = np.where(has2, machine_available[rows, m2] - (est + p), 0.0) / mp
    f[..., 9] = np.where(done, 0.0, rem_load[rows, m]) / lb
    f[..., 10] = np.where(has2, rem_load[rows, m2], 0.0) / lb
    f[..., 11] = wl / np.maximum(wl.max(axis=1, keepdims=True), 1.0)
    cand_p = np.where(mask, p, 0.0).max(axis=1, keepdims=True)
    f[..., 12] = np.where(mask, p / np.maximum(cand_p, 1.0), 0.0)
    ops_left = (tables.n_ops[None, :] - next_op).astype(np.float64)
    f[..., 13] = ops_left / np.maximum(ops_left.max(axis=1, keepdims=True), 1.0)
    f[..., 14] = t0 / lb
    f[..., 15] = next_op.sum(axis=1, keepdims=True) / tables.total_ops
    f[..., 16] = job_ready.max(axis=1, keepdims=True) / lb
    f[..., 17] = rem_load[np.arange(b), ms][:, None] / lb
    f[..., 18] = mask.sum(axis=1, keepdims=True) / n
    bound = machine_available + rem_load  # (B, M): when each machine could finish its work
    f[..., 19] = bound.max(axis=1, keepdims=True) / lb
    f[..., 20] = np.where(done, job_ready, est + wl).max(axis=1, keepdims=True) / lb
    neck = bound.argmax(axis=1)  # (B,)
    at = tables.op_on[:, neck].T  # (B, n): index of each job's operation on its row's bottleneck
    ahead = (at >= next_op) & (at < tables.n_ops[None, :])
    f[..., 21] = np.where(ahead, wl - tables.work_left[cols, at], 0.0) / lb
    f[..., 22] = np.where(ahead, tables.work_left[cols, at + 1], 0.0) / lb
    f[..., 23] = ahead
    width = tables.seq_m.shape[1] - 2
    idx = np.arange(width)[None, None, :]
    route = (idx >= next_op[:, :, None]) & (idx < tables.n_ops[None, :, None])
    on_route = bound[rows[:, :, None], tables.seq_m[None, :, :width]]  # (B, n, width)
    f[..., 24] = np.where(route, on_route, 0.0).max(axis=2) / lb
    np.clip(f, -CLIP, CLIP, out=f)
    return f.astype(np.float32)


def batch_features(tables: InstanceTables, batch: JobShopBatch, rem_load: np.ndarray) -> np.ndarray:
    """:func:`features` of every row of ``batch``."""
    return features(
        tables,
        batch.next_op,
        batch.job_ready,
        batch.machine_available,
        batch.candidate_machine,
        batch.mask,
        rem_load,
    )
