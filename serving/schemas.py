"""Pydantic models at the HTTP boundary.

The snapshot a client posts and the decision it gets back are not declared here: they are
:mod:`taktline.envs.snapshot` and :mod:`taktline.envs.decision`, the same types the twin emits
and the policies answer in training (re-exported for the app).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from taktline.envs.decision import Decision
from taktline.envs.snapshot import (
    MAX_INT,
    SNAPSHOT_TAGS,
    AnySnapshot,
    JobShopSnapshot,
    LineSnapshot,
    line_snapshot_problem,
    line_spec_problem,
)

__all__ = [
    "MAX_INT",
    "SNAPSHOT_TAGS",
    "ActRequest",
    "ActResponse",
    "AnySnapshot",
    "DecideResponse",
    "Decision",
    "JobShopSnapshot",
    "LineSnapshot",
    "PolicyInfo",
    "ReloadResponse",
    "ShadowResult",
    "line_snapshot_problem",
    "line_spec_problem",
]

_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)


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
