"""Snapshots: the one typed, versioned description of a line or job shop at a decision point.

A :class:`LineSnapshot` is what :meth:`Twin.snapshot` emits, what the codecs encode and the
rules read, and exactly the body the HTTP API accepts (its JSON Schema is the OpenAPI schema);
:class:`JobShopSnapshot` is the same for job shops. There is no second reader: a dict (a
posted body, a notebook's JSON) becomes a snapshot through :func:`as_snapshot`, which
validates it once and names the field that is wrong.

It only holds what a plant can know: what waits where, each machine's state (and, for restoring
a twin, how long it has been in it and the job it holds), expected (not drawn) processing times,
due dates and the clock. Times are in the line's ``time_unit``.

``schema_version`` is :data:`SCHEMA_VERSION`; a body with another version is refused (422 at the
API), so a client built against one contract never meets another silently.

>>> from taktline.envs.twin import Twin
>>> from taktline.envs.spec import load_spec
>>> twin = Twin(load_spec("serial5"), seed=1)
>>> snap = twin.run_until_decision() and twin.snapshot()
>>> snap.schema_version, snap.decision.kind
(1, 'dispatch')
>>> as_snapshot(snap.model_dump(mode="json")) == snap
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from taktline.errors import PolicyError

if TYPE_CHECKING:
    from taktline.envs.spec import LineSpec
    from taktline.envs.twin import Twin
    from taktline.envs.twin_state import Job

SCHEMA_VERSION: Final[Literal[1]] = 1
"""The version of the snapshot contract this code reads and writes."""

_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)
MAX_INT = 2**53
"""The largest integer a snapshot may hold: every float64 (JSON number) up to it is exact, and a
larger one (``10**400``) would overflow the float conversions of the rules and codecs."""
Name = Field(min_length=1, max_length=200)
Version = Annotated[
    Literal[1],
    Field(description="snapshot contract version (taktline.envs.snapshot.SCHEMA_VERSION)"),
]


class MachineState(StrEnum):
    """What a machine is doing; the order is the twin's integer state (``code``)."""

    IDLE = "idle"
    SETUP = "setup"
    BUSY = "busy"
    BLOCKED = "blocked"
    DOWN = "down"

    @property
    def code(self) -> int:
        """The twin's integer code of this state (0..4)."""
        return _STATE_ORDER.index(self)

    @classmethod
    def from_index(cls, i: int) -> MachineState:
        """The state the twin codes as ``i``."""
        return _STATE_ORDER[i]


_STATE_ORDER = tuple(MachineState)
STATE_NAMES: tuple[str, ...] = tuple(s.value for s in _STATE_ORDER)
"""The state names in the twin's integer order (``idle, setup, busy, blocked, down``)."""


# ---- lines -------------------------------------------------------------------------------------
class JobRecord(BaseModel):
    """A job: waiting in a buffer or in the order pool, or on a machine."""

    model_config = _STRICT

    id: str = Name
    product: str = Name
    family: str = Field(max_length=200)
    step: int = Field(ge=0, le=MAX_INT, description="index of the operation it waits for or runs")
    n_steps: int = Field(ge=1, le=MAX_INT)
    processing_time: float = Field(ge=0, description="expected time of operation `step`")
    remaining_work: float = Field(ge=0, description="expected work left, operation `step` included")
    remaining_ops: int = Field(ge=0, le=MAX_INT)
    due_date: float | None = None
    arrival_time: float = Field(ge=0)
    queue_entry_time: float = Field(ge=0)


class MachineRecord(BaseModel):
    """One machine's state."""

    model_config = _STRICT

    id: str = Name
    state: MachineState
    job: str | None = Field(default=None, description="id of the job it holds")
    family: str | None = Field(default=None, description="family it last processed (setups)")
    elapsed: float = Field(default=0.0, ge=0, description="time since it entered `state`")
    remaining: float | None = Field(
        default=None, ge=0, description="time left of the current activity, where the plant knows"
    )
    in_process: JobRecord | None = Field(
        default=None, description="the job it holds (busy, setup or blocked), in full"
    )


class StationRecord(BaseModel):
    """A station: its buffer and machines."""

    model_config = _STRICT

    name: str = Name
    buffer_capacity: int | None = Field(default=None, ge=0, le=MAX_INT)
    queue: list[JobRecord] = Field(max_length=100_000)
    machines: list[MachineRecord] = Field(min_length=1, max_length=10_000)


class DecisionPoint(BaseModel):
    """The decision the line waits for."""

    model_config = _STRICT

    kind: Literal["dispatch", "release"]
    station: str | None = None
    machine: str | None = None


class LineSnapshot(BaseModel):
    """The state of a line, usually at a decision point."""

    model_config = _STRICT

    schema_version: Version = SCHEMA_VERSION
    kind: Literal["line"] = "line"
    time: float = Field(ge=0)
    line: str = Name
    spec_hash: str = Field(max_length=200)
    time_unit: str = Field(max_length=20)
    wip: int = Field(ge=0, le=MAX_INT)
    decision: DecisionPoint | None
    stations: list[StationRecord] = Field(min_length=1, max_length=10_000)
    pool: list[JobRecord] = Field(default_factory=list, max_length=100_000)
    last_arrival: float | None = Field(default=None, ge=0, description="time of the last order")

    @model_validator(mode="after")
    def _describes_a_possible_line(self) -> LineSnapshot:
        problem = line_snapshot_problem(self)
        if problem:
            raise ValueError(problem)
        return self


def line_snapshot_problem(snapshot: LineSnapshot) -> str | None:
    """Why a line snapshot whose fields are valid is still not one, or ``None``.

    A snapshot must describe one possible state of a line: station names, machine ids and job
    ids each appear once (a job waits in one place, or is on one machine), and a pending
    dispatch names a station with waiting jobs and one of *that station's* machines, idle (a
    busy, blocked, down or changing-over machine cannot start a job).
    """
    stations = snapshot.stations
    seen: set[str] = set()
    for i, s in enumerate(stations):
        if s.name in seen:
            return f"stations[{i}].name: {s.name!r} appears twice; station names are unique"
        seen.add(s.name)
    owner: dict[str, str] = {}
    for i, s in enumerate(stations):
        for k, m in enumerate(s.machines):
            if m.id in owner:
                return (
                    f"stations[{i}].machines[{k}].id: {m.id!r} is already a machine of "
                    f"station {owner[m.id]!r}; a machine belongs to one station"
                )
            owner[m.id] = s.name
            if m.in_process is not None and m.job not in (None, m.in_process.id):
                return (
                    f"stations[{i}].machines[{k}].in_process.id: {m.in_process.id!r} differs "
                    f"from its job {m.job!r}; give one job"
                )
    where: dict[str, str] = {}
    places = [
        *((f"stations[{i}].queue[{k}].id", j.id) for i, s in enumerate(stations)
          for k, j in enumerate(s.queue)),
        *((f"stations[{i}].machines[{k}].job", m.job or m.in_process.id)  # type: ignore[union-attr]
          for i, s in enumerate(stations) for k, m in enumerate(s.machines)
          if m.job is not None or m.in_process is not None),
        *((f"pool[{k}].id", j.id) for k, j in enumerate(snapshot.pool)),
    ]  # fmt: skip
    for field, job in places:
        if job in where:
            return f"{field}: job {job!r} is also at {where[job]}; each job is in one place"
        where[job] = field
    d = snapshot.decision
    if d is None or d.kind == "release":
        return None
    station = next((s for s in stations if s.name == d.station), None)
    if station is None:
        return f"decision.station: {d.station!r} is not one of {[s.name for s in stations]}"
    machine = next((m for m in station.machines if m.id == d.machine), None)
    if machine is None:
        ids = [m.id for m in station.machines]
        elsewhere = f" (it is a machine of {owner[d.machine]!r})" if d.machine in owner else ""
        return (
            f"decision.machine: {d.machine!r} is not a machine of station "
            f"{d.station!r}{elsewhere}; expected one of {ids}"
        )
    if machine.state != MachineState.IDLE:
        return (
            f"decision.machine: {d.machine!r} is {machine.state.value}; only an idle machine "
            "can start a job (post the snapshot of the moment it became idle)"
        )
    if not station.queue:
        return f"decision: station {d.station!r} has no waiting job to dispatch"
    return None


def line_spec_problem(
    snapshot: LineSnapshot, spec: LineSpec
) -> tuple[tuple[str | int, ...], str] | None:
    """Where and why a valid line snapshot does not fit the line ``spec`` it claims to be of
    (its ``spec_hash``): an unknown station, machine or product. ``None`` when it fits.
    """
    machines = {s.name: [f"{s.name}.M{k + 1}" for k in range(s.machines)] for s in spec.stations}
    products = {p.name for p in spec.products}
    for i, s in enumerate(snapshot.stations):
        if s.name not in machines:
            return ("stations", i, "name"), (
                f"station {s.name!r} is not in line {spec.name!r} (spec_hash "
                f"{snapshot.spec_hash!r}); its stations are {list(machines)}"
            )
        for k, m in enumerate(s.machines):
            if m.id not in machines[s.name]:
                return ("stations", i, "machines", k, "id"), (
                    f"machine {m.id!r} is not a machine of station {s.name!r} in line "
                    f"{spec.name!r}; expected one of {machines[s.name]}"
                )
    jobs = [
        (("stations", i, "queue", k, "product"), j) for i, s in enumerate(snapshot.stations)
        for k, j in enumerate(s.queue)
    ] + [(("pool", k, "product"), j) for k, j in enumerate(snapshot.pool)]  # fmt: skip
    for loc, job in jobs:
        if job.product not in products:
            return loc, (
                f"product {job.product!r} of job {job.id!r} is not in line {spec.name!r}; "
                f"its products are {sorted(products)}"
            )
    return None


# ---- job shops ---------------------------------------------------------------------------------
class JobShopCandidate(BaseModel):
    """A job whose next operation can start on the decision machine."""

    model_config = _STRICT

    job: int = Field(ge=0, le=MAX_INT)
    start: int = Field(ge=0, le=MAX_INT)
    processing_time: int = Field(ge=0, le=MAX_INT)


class JobShopDecisionPoint(BaseModel):
    """The machine M* that waits for a job, and the jobs that may go on it."""

    model_config = _STRICT

    kind: Literal["dispatch"]
    machine: int = Field(ge=0, le=MAX_INT)
    candidates: list[JobShopCandidate] = Field(min_length=1, max_length=100_000)


class JobShopMachine(BaseModel):
    """A machine and when it is free."""

    model_config = _STRICT

    id: int = Field(ge=0, le=MAX_INT)
    available: int = Field(ge=0, le=MAX_INT)


Alternative = Annotated[
    list[Annotated[int, Field(ge=0, le=MAX_INT)]], Field(min_length=2, max_length=2)
]
"""``[machine, processing time]``."""


class JobShopJob(BaseModel):
    """A job: when it is ready and the operations it has left (each a list of alternatives)."""

    model_config = _STRICT

    id: int = Field(ge=0, le=MAX_INT)
    ready: int = Field(ge=0, le=MAX_INT)
    next_op: int = Field(ge=0, le=MAX_INT)
    n_ops: int = Field(ge=1, le=MAX_INT)
    release_date: int = Field(default=0, ge=0, le=MAX_INT)
    due_date: float | None = None
    operations: list[Annotated[list[Alternative], Field(min_length=1)]] = Field(max_length=100_000)


class JobShopSnapshot(BaseModel):
    """A job shop at a decision point (``decision`` is ``None`` once the schedule is complete)."""

    model_config = _STRICT

    schema_version: Version = SCHEMA_VERSION
    kind: Literal["jobshop"]
    instance: str = Field(max_length=200)
    scheme: Literal["active", "non-delay"]
    time: int = Field(ge=0, le=MAX_INT)
    makespan: int = Field(ge=0, le=MAX_INT)
    time_scale: int = Field(ge=1, le=MAX_INT)
    machines: list[JobShopMachine] = Field(min_length=1, max_length=10_000)
    jobs: list[JobShopJob] = Field(min_length=1, max_length=100_000)
    decision: JobShopDecisionPoint | None

    @model_validator(mode="after")
    def _consistent(self) -> JobShopSnapshot:
        problem = jobshop_snapshot_problem(self)
        if problem:
            raise ValueError(problem)
        return self


def jobshop_snapshot_problem(snap: JobShopSnapshot) -> str | None:
    """Why a job-shop snapshot whose fields are valid is still not one, or ``None``."""
    n_m, n_j = len(snap.machines), len(snap.jobs)
    for i, m in enumerate(snap.machines):
        if m.id != i:
            return f"machines[{i}].id: expected {i} (machines in id order), got {m.id}"
    for j, job in enumerate(snap.jobs):
        if job.id != j:
            return f"jobs[{j}].id: expected {j} (jobs in id order), got {job.id}"
        if job.next_op + len(job.operations) != job.n_ops:
            return (
                f"jobs[{j}]: next_op {job.next_op} + {len(job.operations)} operations left "
                f"must equal n_ops {job.n_ops}"
            )
        for o, alts in enumerate(job.operations):
            for machine, _ in alts:
                if not 0 <= machine < n_m:
                    return f"jobs[{j}].operations[{o}]: machine {machine} is not in 0..{n_m - 1}"
    d = snap.decision
    if d is None:
        return None
    if d.machine >= n_m:
        return f"decision.machine: {d.machine} is not in 0..{n_m - 1}"
    seen: set[int] = set()
    for k, c in enumerate(d.candidates):
        if c.job >= n_j or not snap.jobs[c.job].operations:
            return f"decision.candidates: job {c.job} has no operation left to start"
        if c.job in seen:
            return (
                f"decision.candidates[{k}].job: job {c.job} is a candidate twice; "
                "each job is listed once"
            )
        seen.add(c.job)
        times = [p for machine, p in snap.jobs[c.job].operations[0] if machine == d.machine]
        if not times:
            return (
                f"decision.candidates[{k}].job: job {c.job}'s next operation cannot run on "
                f"decision.machine {d.machine} (its machines: "
                f"{[m for m, _ in snap.jobs[c.job].operations[0]]})"
            )
        if c.processing_time not in times:
            return (
                f"decision.candidates[{k}].processing_time: {c.processing_time}, but job "
                f"{c.job}'s next operation takes {times[0]} on machine {d.machine}"
            )
        earliest = max(snap.jobs[c.job].ready, snap.machines[d.machine].available)
        if c.start < earliest:
            return (
                f"decision.candidates[{k}].start: {c.start} is before job {c.job} is ready "
                f"and machine {d.machine} is free (at {earliest})"
            )
    return None


# ---- either ------------------------------------------------------------------------------------
def _snapshot_kind(value: Any) -> str:
    kind = value.get("kind") if isinstance(value, Mapping) else getattr(value, "kind", None)
    return "jobshop" if kind == "jobshop" else "line"


AnySnapshot = Annotated[
    Annotated[LineSnapshot, Tag("line")] | Annotated[JobShopSnapshot, Tag("jobshop")],
    Discriminator(_snapshot_kind),
]
"""A line snapshot, or a job-shop one (``"kind": "jobshop"``)."""

Snapshot = LineSnapshot | JobShopSnapshot
"""Either kind of snapshot, as a type."""

SNAPSHOT_TAGS = ("line", "jobshop")
"""The tags pydantic puts in an error's ``loc`` (after ``body`` at the API)."""

_ADAPTER: TypeAdapter[Snapshot] = TypeAdapter(AnySnapshot)


def as_snapshot(value: Snapshot | Mapping[str, Any]) -> Snapshot:
    """``value`` as a typed snapshot: a snapshot is returned as is, a mapping is validated.

    Raises:
        PolicyError: naming the first field that is wrong, with what was expected.
    """
    if isinstance(value, LineSnapshot | JobShopSnapshot):
        return value
    try:
        return _ADAPTER.validate_python(value)
    except ValidationError as exc:
        raise PolicyError(f"snapshot: {validation_message(exc)}") from None


def validation_message(exc: ValidationError) -> str:
    """The first error of a pydantic validation, as ``field.path: message``."""
    err = exc.errors(include_url=False)[0]
    head = err["loc"][:1]
    parts = err["loc"][1:] if head and head[0] in SNAPSHOT_TAGS else err["loc"]
    loc = ".".join(str(p) for p in parts)
    msg = str(err["msg"])
    value = err.get("input")
    if not isinstance(value, dict | list) and err["type"] != "missing":
        got = repr(value)
        msg += f", got {got if len(got) <= 80 else got[:77] + '...'}"
    return f"{loc}: {msg}" if loc else msg


def as_line_snapshot(value: Snapshot | Mapping[str, Any]) -> LineSnapshot:
    """``value`` as a line snapshot (see :func:`as_snapshot`)."""
    snap = as_snapshot(value)
    if not isinstance(snap, LineSnapshot):
        raise PolicyError("snapshot.kind: expected a line snapshot, got 'jobshop'")
    return snap


def as_jobshop_snapshot(value: Snapshot | Mapping[str, Any]) -> JobShopSnapshot:
    """``value`` as a job-shop snapshot (see :func:`as_snapshot`)."""
    if isinstance(value, Mapping) and value.get("kind") != "jobshop":
        raise PolicyError(f"snapshot.kind: expected 'jobshop', got {value.get('kind')!r}")
    snap = as_snapshot(value)
    if not isinstance(snap, JobShopSnapshot):
        raise PolicyError("snapshot.kind: expected 'jobshop', got a line snapshot")
    return snap


# ---- the one candidate type --------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Candidate:
    """A waiting job as a dispatching rule ranks it (times in the line's unit).

    ``processing_time`` and ``remaining_work`` are *expected* times, as a plant's MES knows them.
    ``id`` is the number in a ``J-<n>`` job id (as the twin names jobs), else the job's position
    in its queue; ``name`` is the id as given. ``due_date`` is ``inf`` when the job has none.
    """

    id: int
    name: str
    family: str
    processing_time: float
    remaining_work: float
    remaining_ops: int
    due_date: float
    arrival_time: float
    queue_entry_time: float


def job_number(name: str, position: int) -> int:
    """The integer id of a job named ``name`` (``"J-12"`` -> 12, else ``position``)."""
    head, _, tail = name.rpartition("-")
    return int(tail) if head == "J" and tail.isdigit() else position


def candidate(rec: JobRecord, position: int) -> Candidate:
    """The candidate a job record is (``position``: its place in the queue)."""
    return Candidate(
        id=job_number(rec.id, position),
        name=rec.id,
        family=rec.family or rec.product,
        processing_time=rec.processing_time,
        remaining_work=rec.remaining_work,
        remaining_ops=rec.remaining_ops,
        due_date=math.inf if rec.due_date is None else rec.due_date,
        arrival_time=rec.arrival_time,
        queue_entry_time=rec.queue_entry_time,
    )


def pending_dispatch(snapshot: LineSnapshot) -> tuple[StationRecord, MachineRecord]:
    """The station and machine of the snapshot's pending dispatch decision.

    Raises:
        PolicyError: when the snapshot waits for no dispatch decision or names no such machine.
    """
    d = snapshot.decision
    if d is None or d.kind != "dispatch":
        raise PolicyError(
            "snapshot.decision: expected a pending dispatch decision "
            f'{{"kind": "dispatch", "station": ..., "machine": ...}}, got {d!r}'
        )
    for s in snapshot.stations:
        if s.name == d.station:
            for m in s.machines:
                if m.id == d.machine:
                    return s, m
            raise PolicyError(
                f"snapshot.decision.machine: {d.machine!r} is not a machine of station {s.name!r}"
            )
    names = ", ".join(s.name for s in snapshot.stations)
    raise PolicyError(
        f"snapshot.decision.station: unknown station {d.station!r}; the line has {names}"
    )


def line_candidates(snapshot: LineSnapshot) -> list[Candidate]:
    """The jobs waiting at the station of the pending dispatch decision, in queue order."""
    station, _ = pending_dispatch(snapshot)
    return [candidate(rec, k) for k, rec in enumerate(station.queue)]


# ---- from the twin -----------------------------------------------------------------------------
def job_record(job: Job, product_names: list[str]) -> JobRecord:
    """The record of a twin job (built without validation: the twin's values are valid)."""
    step = min(job.step, len(job.route) - 1)
    return JobRecord.model_construct(
        id=f"J-{job.id}",
        product=product_names[job.product],
        family=job.family,
        step=job.step,
        n_steps=len(job.route),
        processing_time=job.means[step],
        remaining_work=job.remwork[step],
        remaining_ops=len(job.route) - job.step,
        due_date=job.due_date if math.isfinite(job.due_date) else None,
        arrival_time=job.arrival_time,
        queue_entry_time=job.queue_entry_time,
    )


def make_snapshot(twin: Twin) -> LineSnapshot:
    """Snapshot of ``twin`` now, including the pending decision if there is one."""
    names = [p.name for p in twin.spec.products]
    req = twin.pending
    decision: DecisionPoint | None = None
    if req is not None and req.kind == "dispatch":
        decision = DecisionPoint.model_construct(
            kind="dispatch",
            station=twin.stations[req.station].name,
            machine=twin.machines[req.machine].name,
        )
    elif req is not None:
        decision = DecisionPoint.model_construct(kind="release", station=None, machine=None)
    now = twin.now
    stations = []
    for s, st in zip(twin.stations, twin.spec.stations, strict=True):
        machines = []
        for m in s.machines:
            held = m.job
            machines.append(
                MachineRecord.model_construct(
                    id=m.name,
                    state=_STATE_ORDER[m.state],
                    job=f"J-{held.id}" if held is not None else None,
                    family=m.last_family,
                    elapsed=now - m.since,
                    remaining=None,
                    in_process=job_record(held, names) if held is not None else None,
                )
            )
        stations.append(
            StationRecord.model_construct(
                name=s.name,
                buffer_capacity=st.buffer_capacity,
                queue=[job_record(j, names) for j in s.buffer],
                machines=machines,
            )
        )
    last = twin.last_arrival if math.isfinite(twin.last_arrival) else None
    return LineSnapshot.model_construct(
        schema_version=SCHEMA_VERSION,
        kind="line",
        time=now,
        line=twin.spec.name,
        spec_hash=twin.spec_hash,
        time_unit=twin.spec.time_unit,
        wip=twin.wip,
        decision=decision,
        stations=stations,
        pool=[job_record(j, names) for j in twin.pool],
        last_arrival=last,
    )
