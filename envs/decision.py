"""Decisions: what should happen next at a decision point, as one typed value.

Every policy kind answers a snapshot with a :class:`Decision` (``decide(snapshot)``); a codec
turns an action into one (``decode(snapshot, action)``); the twin carries it out
(``twin.apply(decision)``); the HTTP API returns it. Lines name stations, machines and jobs by
their ids (``"press.M2"``, ``"J-1042"``); job shops number machines and jobs and add the
operation and its start time.

>>> Decision(kind="dispatch", station="weld", machine="weld.M1", job="J-3").job
'J-3'
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class Decision(BaseModel):
    """What should happen next: start a job on a machine, or release orders into the line."""

    kind: Literal["dispatch", "release"]
    station: str | None = None
    machine: str | int | None = None
    job: str | int | None = None
    operation: int | None = None
    start: float | None = None
    count: int | None = None
    rule: str | None = Field(default=None, description="rule a rule-choosing policy picked")
    wip_cap: int | None = Field(default=None, description="cap a WIP-cap policy set")
    note: str | None = Field(
        default=None,
        max_length=200,
        description="why the policy decided as it did when it did not search as asked "
        "(a lookahead out of time answers with its base rule)",
    )
