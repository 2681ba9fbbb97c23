"""Job-shop instances: immutable parameters of a (flexible) job-shop scheduling problem.

A job is a sequence of operations in technological order; an operation is a tuple of
*alternatives* ``(machine, processing_time)``. A classical job shop (JSSP) has exactly one
alternative per operation; a flexible job shop (FJSP) may offer several machines with
machine-specific times. Times are integers, as in every published benchmark (and as CP-SAT
needs).

>>> inst = JobShopInstance.from_matrices([[0, 1], [1, 0]], [[3, 2], [2, 4]], name="tiny")
>>> inst.n_jobs, inst.n_machines, inst.n_operations, inst.is_flexible
(2, 2, 4, False)
>>> inst.trivial_lower_bound()
7
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property

from taktline.errors import SpecError

Alternative = tuple[int, int]
"""``(machine, processing_time)``: one way to run an operation."""
Operation = tuple[Alternative, ...]
"""The alternatives of one operation (exactly one in a classical job shop)."""

MAX_MACHINES = 10_000
"""Most machines an instance may have (published benchmarks have at most a few hundred)."""
MAX_PROCESSING_TIME = 10**9
"""Largest processing time: CP-SAT and the schedule arrays work in 64-bit integers."""


@dataclass(frozen=True)
class JobShopInstance:
    """A (flexible) job-shop problem; validated on construction.

    Attributes:
        jobs: Per job, its operations in technological order; each operation is a tuple of
            ``(machine, processing_time)`` alternatives, machines numbered from 0.
        n_machines: Number of machines (machines are ``0 .. n_machines - 1``).
        name: A short name (``ft06``, ``ta01``, a file stem).
        release_dates: Per job, the earliest start of its first operation (default all 0).
        due_dates: Per job, its due date (``None``: no due dates).
        optimum: The proven optimal makespan, when known.
        lower_bound: The best known lower bound on the makespan.
        upper_bound: The best known makespan (best known solution).
    """

    jobs: tuple[tuple[Operation, ...], ...]
    n_machines: int
    name: str = "instance"
    release_dates: tuple[int, ...] | None = None
    due_dates: tuple[int, ...] | None = None
    optimum: int | None = None
    lower_bound: int | None = None
    upper_bound: int | None = None
    _flexible: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not 1 <= self.n_machines <= MAX_MACHINES:
            problems.append(f"n_machines: must be 1..{MAX_MACHINES}, got {self.n_machines}")
        if not self.jobs:
            problems.append("jobs: an instance needs at least one job, got none")
        flexible = False
        for j, ops in enumerate(self.jobs):
            if not ops:
                problems.append(f"jobs[{j}]: has no operations; give it at least one")
            for i, alts in enumerate(ops):
                if not alts:
                    problems.append(f"jobs[{j}][{i}]: operation has no (machine, time) choice")
                flexible = flexible or len(alts) > 1
                seen: set[int] = set()
                for m, p in alts:
                    if not 0 <= m < self.n_machines:
                        problems.append(
                            f"jobs[{j}][{i}]: machine {m} out of range 0..{self.n_machines - 1}"
                        )
                    if m in seen:
                        problems.append(f"jobs[{j}][{i}]: machine {m} listed twice")
                    seen.add(m)
                    if not 0 <= p <= MAX_PROCESSING_TIME:
                        problems.append(
                            f"jobs[{j}][{i}]: processing time must be 0..{MAX_PROCESSING_TIME},"
                            f" got {p}"
                        )
        for label, values in (("release_dates", self.release_dates), ("due_dates", self.due_dates)):
            if values is not None and len(values) != len(self.jobs):
                problems.append(
                    f"{label}: needs one value per job ({len(self.jobs)}), got {len(values)}"
                )
        if self.release_dates is not None and any(r < 0 for r in self.release_dates):
            problems.append("release_dates: must all be >= 0")
        if problems:
            raise SpecError(problems, source=f"job-shop instance {self.name!r}")
        object.__setattr__(self, "_flexible", flexible)

    @classmethod
    def from_matrices(
        cls,
        machines: Sequence[Sequence[int]],
        times: Sequence[Sequence[int]],
        name: str = "instance",
        n_machines: int | None = None,
        **bounds: int | None,
    ) -> JobShopInstance:
        """A classical job shop from a machine matrix and a processing-time matrix.

        Args:
            machines: ``machines[j][i]`` is the machine of job ``j``'s ``i``-th operation.
            times: ``times[j][i]`` is its processing time.
            name: Instance name.
            n_machines: Number of machines (default: largest machine index + 1).
            **bounds: ``optimum``, ``lower_bound``, ``upper_bound``.
        """
        if len(machines) != len(times) or any(
            len(a) != len(b) for a, b in zip(machines, times, strict=True)
        ):
            raise SpecError("machines and times matrices must have the same shape", source=name)
        jobs = tuple(
            tuple(((int(m), int(p)),) for m, p in zip(row_m, row_t, strict=True))
            for row_m, row_t in zip(machines, times, strict=True)
        )
        if n_machines is None:
            n_machines = 1 + max((m for row in machines for m in row), default=0)
        return cls(jobs=jobs, n_machines=n_machines, name=name, **bounds)  # type: ignore[arg-type]

    @property
    def n_jobs(self) -> int:
        """Number of jobs."""
        return len(self.jobs)

    @property
    def n_operations(self) -> int:
        """Total number of operations over all jobs."""
        return sum(len(ops) for ops in self.jobs)

    @cached_property
    def max_processing_time(self) -> int:
        """The longest processing time of any alternative (a job-shop snapshot's ``time_scale``)."""
        return max(p for ops in self.jobs for alts in ops for _, p in alts)

    @property
    def is_flexible(self) -> bool:
        """True when some operation may run on more than one machine."""
        return self._flexible

    def machines_matrix(self) -> list[list[int]]:
        """``[j][i]`` machine of each operation (classical job shops only)."""
        self._require_classical("machines_matrix")
        return [[alts[0][0] for alts in ops] for ops in self.jobs]

    def times_matrix(self) -> list[list[int]]:
        """``[j][i]`` processing time of each operation (classical job shops only)."""
        self._require_classical("times_matrix")
        return [[alts[0][1] for alts in ops] for ops in self.jobs]

    def trivial_lower_bound(self) -> int:
        """``max(longest job, busiest machine)`` using each operation's shortest time."""
        releases = self.release_dates or (0,) * self.n_jobs
        job_len = max(
            r + sum(min(p for _, p in alts) for alts in ops)
            for r, ops in zip(releases, self.jobs, strict=True)
        )
        load = [0] * self.n_machines
        for ops in self.jobs:
            for alts in ops:
                if len(alts) == 1:
                    load[alts[0][0]] += alts[0][1]
        return max(job_len, max(load))

    def reference(self) -> tuple[int | None, str | None]:
        """The makespan gaps are measured against, and what it is.

        Returns:
            ``(optimum, "optimum")`` when the optimum is known, else ``(upper_bound,
            "upper_bound")`` (the best known solution), else ``(lower_bound, "lower_bound")``,
            else ``(None, None)``.
        """
        for value, kind in (
            (self.optimum, "optimum"),
            (self.upper_bound, "upper_bound"),
            (self.lower_bound, "lower_bound"),
        ):
            if value is not None:
                return value, kind
        return None, None

    def with_bounds(
        self,
        optimum: int | None = None,
        lower_bound: int | None = None,
        upper_bound: int | None = None,
    ) -> JobShopInstance:
        """A copy carrying the given bounds (an optimum implies both bounds)."""
        if optimum is not None:
            lower_bound = optimum if lower_bound is None else lower_bound
            upper_bound = optimum if upper_bound is None else upper_bound
        return replace(self, optimum=optimum, lower_bound=lower_bound, upper_bound=upper_bound)

    def restricted_to(self, assignment: Sequence[Sequence[int]]) -> JobShopInstance:
        """The classical job shop that keeps only the chosen machine of every operation.

        Args:
            assignment: ``assignment[j][i]`` is the machine chosen for job ``j``'s ``i``-th
                operation; it must be one of that operation's alternatives.
        """
        jobs = []
        for j, ops in enumerate(self.jobs):
            row = []
            for i, alts in enumerate(ops):
                m = assignment[j][i]
                times = [p for k, p in alts if k == m]
                if not times:
                    raise SpecError(
                        f"jobs[{j}][{i}]: machine {m} is not one of its alternatives "
                        f"{[k for k, _ in alts]}",
                        source=self.name,
                    )
                row.append(((m, times[0]),))
            jobs.append(tuple(row))
        return replace(self, jobs=tuple(jobs))

    def _require_classical(self, what: str) -> None:
        if self.is_flexible:
            raise SpecError(
                f"{what}: instance {self.name!r} is a flexible job shop (several machines per "
                "operation); use .jobs instead",
            )
