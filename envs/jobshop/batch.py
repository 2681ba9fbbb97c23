"""Many schedules of one classical job shop built in lockstep with numpy.

:class:`JobShopBatch` is :class:`~taktline.envs.jobshop.schedule.JobShopState` vectorised over
a batch: the same generation schemes, the same decision machine ``M*`` and the same candidate
sets, row by row (a test replays every row through ``JobShopState``). Use it for best-of-N
sampling, vectorised rollouts and wherever thousands of schedules are needed.

>>> import numpy as np
>>> from taktline.envs.jobshop import load_bundled
>>> batch = JobShopBatch(load_bundled("ft06"), batch_size=64)
>>> rng = np.random.default_rng(0)
>>> while not batch.done:
...     batch.apply(batch.random_decisions(rng))
>>> int(batch.makespan.min()) >= 55
True
"""

from __future__ import annotations

import numpy as np

from taktline.envs.jobshop.instance import JobShopInstance
from taktline.envs.jobshop.schedule import SCHEMES
from taktline.errors import InfeasibleActionError, SpecError


class JobShopBatch:
    """``batch_size`` partial schedules of one classical job shop.

    Attributes (numpy arrays, first axis = batch row):
        next_op: ``(B, n_jobs)`` next operation index of each job.
        job_ready: ``(B, n_jobs)`` end of each job's previous operation (release at first).
        machine_available: ``(B, n_machines)`` end of each machine's last operation.
        start: ``(B, n_jobs, max_ops)`` start time of every scheduled operation (-1 if not).
        candidate_machine: ``(B,)`` the decision machine ``M*`` of each row (-1 when done).
        mask: ``(B, n_jobs)`` the candidates of each row.
    """

    def __init__(self, instance: JobShopInstance, batch_size: int, scheme: str = "active"):
        """Start ``batch_size`` empty schedules.

        Args:
            instance: A classical job shop (one machine per operation).
            batch_size: Number of schedules built together.
            scheme: ``"active"`` (Giffler–Thompson) or ``"non-delay"``.
        """
        if instance.is_flexible:
            raise SpecError("JobShopBatch: flexible job shops are not supported; use JobShopState")
        if scheme not in SCHEMES:
            raise SpecError(f"scheme: expected one of {', '.join(SCHEMES)}, got {scheme!r}")
        if batch_size < 1:
            raise SpecError(f"batch_size: must be >= 1, got {batch_size}")
        self.instance = instance
        self.scheme = scheme
        self.batch_size = batch_size
        n, width = instance.n_jobs, max(len(ops) for ops in instance.jobs)
        # one padding column past each job's end: machine 0, time 0 (never a candidate)
        self._seq_m = np.zeros((n, width + 1), dtype=np.int64)
        self._seq_p = np.zeros((n, width + 1), dtype=np.int64)
        for j, ops in enumerate(instance.jobs):
            for i, alts in enumerate(ops):
                self._seq_m[j, i], self._seq_p[j, i] = alts[0]
        self._n_ops = np.array([len(ops) for ops in instance.jobs], dtype=np.int64)
        self._release = np.array(instance.release_dates or (0,) * n, dtype=np.int64)
        self._rows = np.arange(batch_size)
        self.reset()

    def reset(self) -> None:
        """Back to empty schedules."""
        b, n = self.batch_size, self.instance.n_jobs
        self.next_op = np.zeros((b, n), dtype=np.int64)
        self.job_ready = np.tile(self._release, (b, 1))
        self.machine_available = np.zeros((b, self.instance.n_machines), dtype=np.int64)
        self.start = np.full((b, n, self._seq_m.shape[1] - 1), -1, dtype=np.int64)
        self._refresh()

    @property
    def row_done(self) -> np.ndarray:
        """``(B,)`` True where every operation is scheduled."""
        return self._row_done

    @property
    def done(self) -> bool:
        """True when every row is complete."""
        return bool(self.row_done.all())

    @property
    def makespan(self) -> np.ndarray:
        """``(B,)`` largest end time so far in each row."""
        return np.asarray(self.job_ready.max(axis=1))

    def random_decisions(self, rng: np.random.Generator) -> np.ndarray:
        """One uniformly random candidate per row (rows that are done get 0)."""
        scores = rng.random(self.mask.shape)
        scores[~self.mask] = -1.0
        return np.asarray(scores.argmax(axis=1))

    def apply(self, jobs: np.ndarray) -> None:
        """Schedule, in every unfinished row, the next operation of ``jobs[row]``.

        Raises:
            InfeasibleActionError: if some unfinished row's job is not one of its candidates.
        """
        jobs = np.asarray(jobs, dtype=np.int64)
        live = ~self.row_done
        rows = self._rows[live]
        j = jobs[live]
        ok = self.mask[rows, j]
        if not ok.all():
            bad = int(rows[~ok][0])
            raise InfeasibleActionError(
                f"row {bad}: job {int(jobs[bad])} is not schedulable; candidates are "
                f"{np.flatnonzero(self.mask[bad]).tolist()}"
            )
        m = self.candidate_machine[rows]
        i = self.next_op[rows, j]
        start = np.maximum(self.job_ready[rows, j], self.machine_available[rows, m])
        end = start + self._seq_p[j, i]
        self.start[rows, j, i] = start
        self.job_ready[rows, j] = end
        self.machine_available[rows, m] = end
        self.next_op[rows, j] = i + 1
        self._refresh()

    def _refresh(self) -> None:
        cols = np.arange(self.instance.n_jobs)
        cur_m = self._seq_m[cols, self.next_op]
        cur_p = self._seq_p[cols, self.next_op]
        job_done = self.next_op == self._n_ops
        est = np.maximum(self.job_ready, np.take_along_axis(self.machine_available, cur_m, 1))
        nm = self.instance.n_machines
        time = est if self.scheme == "non-delay" else est + cur_p
        key = np.where(job_done, np.iinfo(np.int64).max, time * nm + cur_m)
        best = key.min(axis=1, keepdims=True)
        t, m_star = best // nm, best % nm
        on_m = (cur_m == m_star) & ~job_done
        if self.scheme == "non-delay":
            self.mask = on_m & (est == t)
        else:
            self.mask = on_m & ((est < t) | (key == best))
        self._row_done = np.asarray(job_done.all(axis=1))
        self.candidate_machine = np.where(self._row_done, -1, m_star[:, 0])
