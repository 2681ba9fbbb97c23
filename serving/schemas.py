"""Pydantic models at the HTTP boundary.

:class:`Snapshot` mirrors :mod:`taktline.envs.snapshot` field for field (the twin's
``Twin.snapshot()`` validates against it unchanged), so a plant posts exactly what the twin
produces in training.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

if TYPE_CHECKING:
    from taktline.envs.spec import LineSpec

_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)
MAX_INT = 2**53
"""The largest integer a request may hold: every float64 (JSON number) up to it is exact, and a
larger one (``10**400``) would overflow the float conversions of the rules and codecs."""
Name = Field(min_length=1, max_length=200)


class JobRecord(BaseModel):
    """A job waiting in a buffer or in the order pool (times in the line's unit)."""

    model_config = _STRICT

    id: str = Name
    product: str = Name
    family: str = Field(max_length=200)
    step: int = Field(ge=0, le=MAX_INT)
    n_steps: int = Field(ge=1, le=MAX_INT)
    processing_time: float = Field(ge=0)
    remaining_work: float = Field(ge=0)
    remaining_ops: int = Field(ge=0, le=MAX_INT)
    due_date: float | None = None
    arrival_time: float = Field(ge=0)
    queue_entry_time: float = Field(ge=0)


class MachineRecord(BaseModel):
    """One machine's state."""

    model_config = _STRICT

    id: str = Name
    state: Literal["idle", "setup", "busy", "blocked", "down"]
    job: str | None = None
    family: str | None = None


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


class Snapshot(BaseModel):
    """The state of a line at a decision point (see :mod:`taktline.envs.snapshot`)."""

    model_config = _STRICT

    time: float = Field(ge=0)
    line: str = Name
    spec_hash: str = Field(max_length=200)
    time_unit: str = Field(max_length=20)
    wip: int = Field(ge=0, le=MAX_INT)
    decision: DecisionPoint
    stations: list[StationRecord] = Field(min_length=1, max_length=10_000)
    pool: list[JobRecord] = Field(default_factory=list, max_length=100_000)

    @model_validator(mode="after")
    def _decision_refers_to_the_line(self) -> Snapshot:
        problem = line_snapshot_problem(self.model_dump(include={"decision", "stations", "pool"}))
        if problem:
            raise ValueError(problem)
        return self


def line_snapshot_problem(snapshot: dict[str, Any]) -> str | None:
    """Why a line snapshot whose fields are valid is still not one, or ``None``.

    A snapshot must describe one possible state of a line: station names, machine ids and
    job ids each appear once (a job waits in one place, or is on one machine), and a pending
    dispatch names a station with waiting jobs and one of *that station's* machines, idle
    (a busy, blocked, down or changing-over machine cannot start a job). The fast path runs
    this same function on its dicts (:func:`taktline.serving.fastpath.dict_validator`).
    """
    stations = snapshot["stations"]
    seen: set[str] = set()
    for i, s in enumerate(stations):
        if s["name"] in seen:
            return f"stations[{i}].name: {s['name']!r} appears twice; station names are unique"
        seen.add(s["name"])
    owner: dict[str, str] = {}
    for i, s in enumerate(stations):
        for k, m in enumerate(s["machines"]):
            if m["id"] in owner:
                return (
                    f"stations[{i}].machines[{k}].id: {m['id']!r} is already a machine of "
                    f"station {owner[m['id']]!r}; a machine belongs to one station"
                )
            owner[m["id"]] = s["name"]
    where: dict[str, str] = {}
    places = [
        *((f"stations[{i}].queue[{k}].id", j["id"]) for i, s in enumerate(stations)
          for k, j in enumerate(s["queue"])),
        *((f"stations[{i}].machines[{k}].job", m["job"]) for i, s in enumerate(stations)
          for k, m in enumerate(s["machines"]) if m["job"] is not None),
        *((f"pool[{k}].id", j["id"]) for k, j in enumerate(snapshot.get("pool", ()))),
    ]  # fmt: skip
    for field, job in places:
        if job in where:
            return f"{field}: job {job!r} is also at {where[job]}; each job is in one place"
        where[job] = field
    d = snapshot["decision"]
    if d["kind"] == "release":
        return None
    station = next((s for s in stations if s["name"] == d["station"]), None)
    if station is None:
        names = [s["name"] for s in stations]
        return f"decision.station: {d['station']!r} is not one of {names}"
    machine = next((m for m in station["machines"] if m["id"] == d["machine"]), None)
    if machine is None:
        ids = [m["id"] for m in station["machines"]]
        elsewhere = (
            f" (it is a machine of {owner[d['machine']]!r})" if d["machine"] in owner else ""
        )
        return (
            f"decision.machine: {d['machine']!r} is not a machine of station "
            f"{d['station']!r}{elsewhere}; expected one of {ids}"
        )
    if machine["state"] != "idle":
        return (
            f"decision.machine: {d['machine']!r} is {machine['state']}; only an idle machine "
            "can start a job (post the snapshot of the moment it became idle)"
        )
    if not station["queue"]:
        return f"decision: station {d['station']!r} has no waiting job to dispatch"
    return None


def line_spec_problem(
    snapshot: dict[str, Any], spec: LineSpec
) -> tuple[tuple[str | int, ...], str] | None:
    """Where and why a valid line snapshot does not fit the line ``spec`` it claims to be of
    (its ``spec_hash``): an unknown station, machine or product. ``None`` when it fits.
    """
    machines = {s.name: [f"{s.name}.M{k + 1}" for k in range(s.machines)] for s in spec.stations}
    products = {p.name for p in spec.products}
    for i, s in enumerate(snapshot["stations"]):
        if s["name"] not in machines:
            return ("stations", i, "name"), (
                f"station {s['name']!r} is not in line {spec.name!r} (spec_hash "
                f"{snapshot['spec_hash']!r}); its stations are {list(machines)}"
            )
        for k, m in enumerate(s["machines"]):
            if m["id"] not in machines[s["name"]]:
                return ("stations", i, "machines", k, "id"), (
                    f"machine {m['id']!r} is not a machine of station {s['name']!r} in line "
                    f"{spec.name!r}; expected one of {machines[s['name']]}"
                )
    jobs = [
        (("stations", i, "queue", k, "product"), j) for i, s in enumerate(snapshot["stations"])
        for k, j in enumerate(s["queue"])
    ] + [(("pool", k, "product"), j) for k, j in enumerate(snapshot.get("pool", ()))]  # fmt: skip
    for loc, job in jobs:
        if job["product"] not in products:
            return loc, (
                f"product {job['product']!r} of job {job['id']!r} is not in line {spec.name!r}; "
                f"its products are {sorted(products)}"
            )
    return None


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
    """A job shop at a decision point (see :mod:`taktline.envs.encoding_jobshop`)."""

    model_config = _STRICT

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
        n_m, n_j = len(self.machines), len(self.jobs)
        for i, m in enumerate(self.machines):
            if m.id != i:
                raise ValueError(
                    f"machines[{i}].id: expected {i} (machines in id order), got {m.id}"
                )
        for j, job in enumerate(self.jobs):
            if job.id != j:
                raise ValueError(f"jobs[{j}].id: expected {j} (jobs in id order), got {job.id}")
            if job.next_op + len(job.operations) != job.n_ops:
                raise ValueError(
                    f"jobs[{j}]: next_op {job.next_op} + {len(job.operations)} operations left "
                    f"must equal n_ops {job.n_ops}"
                )
            for o, alts in enumerate(job.operations):
                for machine, _ in alts:
                    if not 0 <= machine < n_m:
                        raise ValueError(
                            f"jobs[{j}].operations[{o}]: machine {machine} is not in 0..{n_m - 1}"
                        )
        d = self.decision
        if d is None:
            raise ValueError("decision: the schedule is complete; there is nothing to decide")
        if d.machine >= n_m:
            raise ValueError(f"decision.machine: {d.machine} is not in 0..{n_m - 1}")
        seen: set[int] = set()
        for k, c in enumerate(d.candidates):
            if c.job >= n_j or not self.jobs[c.job].operations:
                raise ValueError(f"decision.candidates: job {c.job} has no operation left to start")
            if c.job in seen:
                raise ValueError(
                    f"decision.candidates[{k}].job: job {c.job} is a candidate twice; "
                    "each job is listed once"
                )
            seen.add(c.job)
            times = [p for machine, p in self.jobs[c.job].operations[0] if machine == d.machine]
            if not times:
                raise ValueError(
                    f"decision.candidates[{k}].job: job {c.job}'s next operation cannot run on "
                    f"decision.machine {d.machine} (its machines: "
                    f"{[m for m, _ in self.jobs[c.job].operations[0]]})"
                )
            if c.processing_time not in times:
                raise ValueError(
                    f"decision.candidates[{k}].processing_time: {c.processing_time}, but job "
                    f"{c.job}'s next operation takes {times[0]} on machine {d.machine}"
                )
            earliest = max(self.jobs[c.job].ready, self.machines[d.machine].available)
            if c.start < earliest:
                raise ValueError(
                    f"decision.candidates[{k}].start: {c.start} is before job {c.job} is ready "
                    f"and machine {d.machine} is free (at {earliest})"
                )
        return self


def _snapshot_kind(value: Any) -> str:
    kind = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)
    return "jobshop" if kind == "jobshop" else "line"


AnySnapshot = Annotated[
    Annotated[Snapshot, Tag("line")] | Annotated[JobShopSnapshot, Tag("jobshop")],
    Discriminator(_snapshot_kind),
]
"""A line snapshot, or a job-shop one (``"kind": "jobshop"``)."""

SNAPSHOT_TAGS = ("line", "jobshop")
"""The tags pydantic puts in an error's ``loc`` after ``body`` (the API strips them)."""


class Decision(BaseModel):
    """What should happen next: start a job on a machine, or release orders into the line.

    Lines name stations, machines and jobs by their ids (``"press.M2"``, ``"J-1042"``); job
    shops number machines and jobs and add the operation and its start time.
    """

    kind: Literal["dispatch", "release"]
    station: str | None = None
    machine: str | int | None = None
    job: str | int | None = None
    operation: int | None = None
    start: float | None = None
    count: int | None = None
    rule: str | None = Field(default=None, description="rule a rule-choosing policy picked")
    wip_cap: int | None = Field(default=None, description="cap a WIP-cap policy set")


class ShadowResult(BaseModel):
    """In shadow mode: what the policy would have done (not served)."""

    decision: Decision | None
    action: int | None
    model_version: str | None
    agrees: bool | None
    error: str | None = None


class DecideResponse(BaseModel):
    """The decision and who made it: a policy version, or the fallback rule (flagged)."""

    policy: str
    decision: Decision
    served_by: str = Field(description="'policy:NAME@VERSION' or 'rule:RULE'")
    model_version: str | None
    rule: str | None
    action: int | None
    fallback: bool
    fallback_reason: str | None = None
    shadow: ShadowResult | None = None


class ActRequest(BaseModel):
    """A batch of encoded observations (each flattened) and optional feasibility masks."""

    model_config = _STRICT

    observations: list[list[float]] = Field(min_length=1)
    masks: list[list[bool]] | None = None
    deterministic: bool = True


class ActResponse(BaseModel):
    """One action per observation, each feasible under its mask."""

    policy: str
    model_version: str
    actions: list[int]
    masked_rows_replaced: list[int] = Field(
        default_factory=list,
        description="rows where the network chose a masked action and the first feasible one "
        "was served instead",
    )


class PolicyInfo(BaseModel):
    """A configured policy and the version being served."""

    name: str
    ref: str
    loaded: bool
    model_version: str | None
    alias: str | None
    source: str | None
    env_id: str | None
    env_kwargs: dict[str, Any] | None
    spec_hash: str | None
    observation_shape: list[int] | None
    n_actions: int | None
    lineage: dict[str, Any] | None
    fallback_rule: str
    shadow: bool
    error: str | None = None


class ReloadResponse(BaseModel):
    """Result of a reload."""

    policy: str
    changed: bool
    model_version: str | None
    previous_version: str | None
    source: str | None
    error: str | None = None
