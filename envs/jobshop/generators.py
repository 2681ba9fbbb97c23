"""Random job-shop instances for training distributions (seeded, reproducible).

Every generator takes ``rng``: a ``numpy.random.Generator`` or an integer seed; the same seed
gives the same instance.

>>> a = taillard_like(4, 3, rng=7)
>>> b = taillard_like(4, 3, rng=7)
>>> a == b, a.n_jobs, a.n_machines
(True, 4, 3)
>>> flexible(3, 4, rng=1).is_flexible
True
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from taktline.envs.jobshop.instance import JobShopInstance, Operation
from taktline.errors import SpecError

RngLike = np.random.Generator | int | None


def _rng(rng: RngLike) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _check_range(label: str, low: int, high: int, minimum: int) -> None:
    if low < minimum or high < low:
        raise SpecError(f"{label}: expected {minimum} <= low <= high, got ({low}, {high})")


def taillard_like(
    n_jobs: int,
    n_machines: int,
    rng: RngLike = None,
    time_range: tuple[int, int] = (1, 99),
    name: str | None = None,
) -> JobShopInstance:
    """Every job visits every machine once in a random order; times uniform in ``time_range``.

    Same distribution as Taillard's benchmark, drawn with numpy.
    """
    g = _rng(rng)
    _check_range("time_range", *time_range, minimum=0)
    if n_jobs < 1 or n_machines < 1:
        raise SpecError(f"need n_jobs, n_machines >= 1, got {n_jobs}, {n_machines}")
    times = g.integers(time_range[0], time_range[1] + 1, size=(n_jobs, n_machines))
    machines = np.argsort(g.random((n_jobs, n_machines)), axis=1)
    return JobShopInstance.from_matrices(
        machines.tolist(),
        times.tolist(),
        name=name or f"taillard_like_{n_jobs}x{n_machines}",
        n_machines=n_machines,
    )


def random_routing(
    n_jobs: int,
    n_machines: int,
    rng: RngLike = None,
    ops_per_job: tuple[int, int] = (1, 0),
    time_range: tuple[int, int] = (1, 99),
    recirculation: bool = False,
    name: str | None = None,
) -> JobShopInstance:
    """Jobs with random routings of random length.

    Args:
        n_jobs: Number of jobs.
        n_machines: Number of machines.
        rng: Generator or seed.
        ops_per_job: ``(low, high)`` operations per job; ``high = 0`` means ``n_machines``.
        time_range: Processing times, uniform integers.
        recirculation: Allow a job to revisit a machine (routing drawn with replacement);
            otherwise each job visits distinct machines.
        name: Instance name.
    """
    g = _rng(rng)
    low, high = ops_per_job[0], ops_per_job[1] or n_machines
    _check_range("ops_per_job", low, high, minimum=1)
    _check_range("time_range", *time_range, minimum=0)
    if not recirculation and high > n_machines:
        raise SpecError(
            f"ops_per_job: at most n_machines ({n_machines}) without recirculation, got {high}"
        )
    jobs = []
    for _ in range(n_jobs):
        k = int(g.integers(low, high + 1))
        if recirculation:
            route = g.integers(0, n_machines, size=k)
        else:
            route = g.permutation(n_machines)[:k]
        times = g.integers(time_range[0], time_range[1] + 1, size=k)
        jobs.append(tuple(((int(m), int(p)),) for m, p in zip(route, times, strict=True)))
    return JobShopInstance(
        jobs=tuple(jobs), n_machines=n_machines, name=name or f"routing_{n_jobs}x{n_machines}"
    )


def flexible(
    n_jobs: int,
    n_machines: int,
    rng: RngLike = None,
    ops_per_job: tuple[int, int] = (2, 0),
    machines_per_op: tuple[int, int] = (1, 0),
    time_range: tuple[int, int] = (1, 20),
    spread: float = 0.5,
    name: str | None = None,
) -> JobShopInstance:
    """A flexible job shop in Brandimarte's style.

    Each operation gets a base time uniform in ``time_range`` and may run on a random subset
    of machines, each with its own time uniform in ``base * [1 - spread, 1 + spread]``.

    Args:
        n_jobs: Number of jobs.
        n_machines: Number of machines.
        rng: Generator or seed.
        ops_per_job: ``(low, high)`` operations per job; ``high = 0`` means ``n_machines``.
        machines_per_op: ``(low, high)`` alternatives per operation; ``high = 0`` means all.
        time_range: Base processing times.
        spread: Relative spread of machine-specific times around the base.
        name: Instance name.
    """
    g = _rng(rng)
    o_low, o_high = ops_per_job[0], ops_per_job[1] or n_machines
    a_low, a_high = machines_per_op[0], machines_per_op[1] or n_machines
    _check_range("ops_per_job", o_low, o_high, minimum=1)
    _check_range("machines_per_op", a_low, min(a_high, n_machines), minimum=1)
    _check_range("time_range", *time_range, minimum=1)
    if not 0 <= spread < 1:
        raise SpecError(f"spread: expected 0 <= spread < 1, got {spread}")
    jobs = []
    for _ in range(n_jobs):
        ops: list[Operation] = []
        for _ in range(int(g.integers(o_low, o_high + 1))):
            k = int(g.integers(a_low, min(a_high, n_machines) + 1))
            machines = sorted(int(m) for m in g.choice(n_machines, size=k, replace=False))
            base = int(g.integers(time_range[0], time_range[1] + 1))
            lo = max(1, math.floor(base * (1 - spread)))
            hi = max(lo, math.ceil(base * (1 + spread)))
            ops.append(tuple((m, int(g.integers(lo, hi + 1))) for m in machines))
        jobs.append(tuple(ops))
    return JobShopInstance(
        jobs=tuple(jobs), n_machines=n_machines, name=name or f"fjsp_{n_jobs}x{n_machines}"
    )


def with_release_and_due_dates(
    instance: JobShopInstance,
    rng: RngLike = None,
    release_span: float = 0.0,
    due_factor: float | None = 1.5,
) -> JobShopInstance:
    """A copy with random release dates and due dates.

    Args:
        instance: The base instance.
        rng: Generator or seed.
        release_span: Release dates are uniform integers in ``[0, release_span * LB]`` where
            ``LB`` is the instance's trivial lower bound (0: every job released at 0).
        due_factor: Due date = release + ``ceil(due_factor * job's total work)``
            (shortest alternative times); ``None``: no due dates.
    """
    g = _rng(rng)
    if release_span < 0:
        raise SpecError(f"release_span: must be >= 0, got {release_span}")
    horizon = int(release_span * instance.trivial_lower_bound())
    releases = tuple(int(r) for r in g.integers(0, horizon + 1, size=instance.n_jobs))
    dues = None
    if due_factor is not None:
        if due_factor <= 0:
            raise SpecError(f"due_factor: must be > 0, got {due_factor}")
        work = [sum(min(p for _, p in alts) for alts in ops) for ops in instance.jobs]
        dues = tuple(r + math.ceil(due_factor * w) for r, w in zip(releases, work, strict=True))
    # the published bounds hold for the instance without release dates; drop them
    return replace(
        instance,
        release_dates=releases,
        due_dates=dues,
        optimum=None,
        lower_bound=None,
        upper_bound=None,
    )
