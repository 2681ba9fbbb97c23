"""Pydantic models at the HTTP boundary.

:class:`Snapshot` mirrors :mod:`taktline.envs.snapshot` field for field (the twin's
``Twin.snapshot()`` validates against it unchanged), so a plant posts exactly what the twin
produces in training.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)
Name = Field(min_length=1, max_length=200)


class JobRecord(BaseModel):
    """A job waiting in a buffer or in the order pool (times in the line's unit)."""

    model_config = _STRICT

    id: str = Name
    product: str = Name
    family: str = Field(max_length=200)
    step: int = Field(ge=0)
    n_steps: int = Field(ge=1)
    processing_time: float = Field(ge=0)
    remaining_work: float = Field(ge=0)
    remaining_ops: int = Field(ge=0)
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
    buffer_capacity: int | None = Field(default=None, ge=0)
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
    wip: int = Field(ge=0)
    decision: DecisionPoint
    stations: list[StationRecord] = Field(min_length=1, max_length=10_000)
    pool: list[JobRecord] = Field(default_factory=list, max_length=100_000)

    @model_validator(mode="after")
    def _decision_refers_to_the_line(self) -> Snapshot:
        d = self.decision
        if d.kind == "release":
            return self
        station = next((s for s in self.stations if s.name == d.station), None)
        if station is None:
            names = [s.name for s in self.stations]
            raise ValueError(f"decision.station: {d.station!r} is not one of {names}")
        if all(m.id != d.machine for m in station.machines):
            ids = [m.id for m in station.machines]
            raise ValueError(f"decision.machine: {d.machine!r} is not one of {ids}")
        if not station.queue:
            raise ValueError(f"decision: station {d.station!r} has no waiting job to dispatch")
        return self


class Decision(BaseModel):
    """What should happen next: start a job on a machine, or release orders into the line."""

    kind: Literal["dispatch", "release"]
    station: str | None = None
    machine: str | None = None
    job: str | None = None
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
