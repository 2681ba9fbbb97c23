"""The learned job-shop scheduler dispatching online in a line twin (a dynamic job shop).

A line's dispatch decision (a free machine at a station, jobs waiting in its queue) is posed to
the scheduler network as the job shop that is left to do: every job in the line with the
operations of its routing not yet started, on one "machine" per station, at the spec's expected
processing times. The time of the decision is 0; a job in process becomes ready when its
operation ends; a station is available when its first machine frees. The candidates are the
jobs in the deciding station's queue, and the network scores them with the same 25 features
(:mod:`taktline.agents.jobshop_features`) it was trained on, so the policy is the shipped
static scheduler, unchanged, in a shop where jobs keep arriving.

Two approximations, both stated where they are used: a station of ``c`` identical machines is
one machine working ``c`` times as fast (its load and waits, not its parallelism), and times are
the spec's means (the twin samples them). The network was trained to shorten makespans and never
sees a due date, so on tardiness it is an honest test of transfer, not a tuned dispatcher.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from taktline.agents.jobshop_features import InstanceTables, features, unscheduled_load
from taktline.envs.jobshop.instance import JobShopInstance
from taktline.envs.snapshot import LineSnapshot, MachineState, pending_dispatch
from taktline.envs.spec import LineSpec
from taktline.errors import PolicyError

#: Mean operation time of the residual instance (its integer time unit).
TIME_SCALE = 100.0


@dataclass(frozen=True)
class ResidualShop:
    """The job shop left at a line's dispatch decision, in the scheduler's terms."""

    instance: JobShopInstance
    ready: np.ndarray
    """``(n,)`` when each job's next operation may start (scaled integer time)."""
    available: np.ndarray
    """``(M,)`` when each station can start work (scaled)."""
    machine: int
    """The deciding station's index."""
    mask: np.ndarray
    """``(n,)`` the jobs waiting at the deciding station (the candidates)."""
    queue_index: np.ndarray
    """``(n,)`` each candidate's position in the station's queue (-1 for the others)."""

    def features(self) -> np.ndarray:
        """``(1, n, N_FEATURES)`` features of the candidates' decision."""
        tables = InstanceTables(self.instance)
        next_op = np.zeros((1, self.instance.n_jobs), dtype=np.int64)
        return features(
            tables,
            next_op,
            self.ready[None, :],
            self.available[None, :],
            np.array([self.machine]),
            self.mask[None, :],
            unscheduled_load(tables, next_op),
        )


def residual_shop(snapshot: LineSnapshot, spec: LineSpec) -> ResidualShop:
    """The job shop left at ``snapshot``'s pending dispatch decision.

    Raises:
        PolicyError: when the snapshot waits for no dispatch decision, or names a station or
            product the spec lacks.
    """
    station, _ = pending_dispatch(snapshot)
    index = {s.name: i for i, s in enumerate(spec.stations)}
    capacity = [s.machines for s in spec.stations]
    routes = {
        p.name: [(index[step.station], step.processing_time.mean) for step in p.routing]
        for p in spec.products
    }
    for rec in snapshot.stations:
        if rec.name not in index:
            raise PolicyError(
                f"snapshot.stations: {rec.name!r} is not a station of line {spec.name!r}; post "
                "a snapshot of the line the scheduler was given"
            )
    ops: list[list[tuple[int, float]]] = []
    ready: list[float] = []
    queue_index: list[int] = []
    avail = [0.0] * len(spec.stations)

    def add(product: str, first_step: int, at: float, k: int) -> None:
        if product not in routes:
            raise PolicyError(
                f"snapshot: product {product!r} is not made on line {spec.name!r}; post a "
                "snapshot of the line the scheduler was given"
            )
        rest = [(m, mean / capacity[m]) for m, mean in routes[product][first_step:]]
        if rest:  # a job on its last operation only occupies its machine
            ops.append(rest)
            ready.append(at)
            queue_index.append(k)

    for rec in snapshot.stations:
        s = index[rec.name]
        free: list[float] = []
        for mach in rec.machines:
            job = mach.in_process
            if mach.state is MachineState.IDLE or job is None:
                free.append(0.0 if mach.state is MachineState.IDLE else mach.remaining or 0.0)
                continue
            left = mach.remaining
            if mach.state is MachineState.BLOCKED:  # done, waiting to move on
                left = 0.0
            elif left is None:  # the plant did not say: the expected rest of the operation
                left = max(0.0, job.processing_time - mach.elapsed)
            free.append(left)
            add(job.product, job.step + 1, left, -1)
        avail[s] = min(free) if rec is not station else 0.0
        for k, job in enumerate(rec.queue):
            add(job.product, job.step, 0.0, k if rec is station else -1)
    mean_p = float(np.mean([p for job_ops in ops for _, p in job_ops]))
    scale = TIME_SCALE / max(mean_p, 1e-9)
    jobs = tuple(tuple(((m, max(1, round(p * scale))),) for m, p in job_ops) for job_ops in ops)
    return ResidualShop(
        instance=JobShopInstance(jobs=jobs, n_machines=len(spec.stations), name="residual"),
        ready=np.round(np.asarray(ready) * scale).astype(np.int64),
        available=np.round(np.asarray(avail) * scale).astype(np.int64),
        machine=index[station.name],
        mask=np.asarray(queue_index) >= 0,
        queue_index=np.asarray(queue_index, dtype=np.int64),
    )


__all__ = ["TIME_SCALE", "ResidualShop", "residual_shop"]
