"""Turning snapshots and observations into decisions, safely.

The policy path is ``encode -> act -> decode`` with the codec of the policy's environment (the
same functions as in training). Whatever goes wrong on it — no loaded version, another line
(spec hash), a snapshot outside what the policy was trained for (e.g. more waiting jobs than its
padding), an exception, a timeout, a masked action — the configured rule decides instead, and
the answer says so (``fallback: true`` with a reason) and ``taktline_fallbacks`` counts it.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, NoReturn

import anyio
import numpy as np
from fastapi import HTTPException, status
from fastapi.exceptions import RequestValidationError

from taktline.agents.rules import get_release_rule, get_rule
from taktline.envs.encoding import JOBSHOP_ID
from taktline.envs.spec import LineSpec
from taktline.errors import TaktlineError
from taktline.serving.metrics import ServingMetrics
from taktline.serving.schemas import (
    ActRequest,
    ActResponse,
    DecideResponse,
    Decision,
    ShadowResult,
    line_spec_problem,
)
from taktline.serving.settings import PolicyConfig, Settings
from taktline.serving.store import LoadedPolicy, ModelStore

log = logging.getLogger("taktline.serving")
shadow_log = logging.getLogger("taktline.serving.shadow")


class PolicyUnusable(Exception):
    """The policy cannot answer this request; ``reason`` is the metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class PolicyAnswer:
    """A decision made by a policy version."""

    action: int | None
    decision: dict[str, Any]
    version: str


def snapshot_kind(snapshot: dict[str, Any]) -> str:
    """``"jobshop"`` or ``"line"``."""
    return "jobshop" if snapshot.get("kind") == "jobshop" else "line"


def rule_decision(snapshot: dict[str, Any], config: PolicyConfig) -> dict[str, Any]:
    """The configured rule's decision for ``snapshot``; needs no model, never fails."""
    point = snapshot["decision"]
    if snapshot_kind(snapshot) == "jobshop":
        return _jobshop_rule_decision(snapshot, config.fallback_rule)
    if point["kind"] == "release":
        rule = get_release_rule(config.fallback_release)
        count = rule.release(len(snapshot["pool"]), int(snapshot["wip"]), float(snapshot["time"]))
        return {"kind": "release", "count": int(count)}
    from taktline.envs.encoding import candidates_from_snapshot

    station = next(s for s in snapshot["stations"] if s["name"] == point["station"])
    machine = next(m for m in station["machines"] if m["id"] == point["machine"])
    candidates = candidates_from_snapshot(snapshot)
    index = get_rule(config.fallback_rule).dispatch(
        candidates, float(snapshot["time"]), machine.get("family")
    )
    return {
        "kind": "dispatch",
        "station": station["name"],
        "machine": machine["id"],
        "job": station["queue"][index]["id"],
    }


def _jobshop_rule_decision(snapshot: dict[str, Any], rule: str) -> dict[str, Any]:
    """A dispatching rule on a job-shop snapshot (the rule sees what it sees in
    :func:`taktline.agents.jobshop_dispatch.candidates_of`)."""
    from taktline.agents.jobshop_dispatch import JobCandidate

    point = snapshot["decision"]
    jobs = snapshot["jobs"]
    candidates = []
    for c in point["candidates"]:
        job = jobs[c["job"]]
        after = sum(min(p for _, p in alts) for alts in job["operations"][1:])
        due = job.get("due_date")
        candidates.append(
            JobCandidate(
                id=int(c["job"]),
                family="",
                processing_time=float(c["processing_time"]),
                remaining_work=float(after + c["processing_time"]),
                remaining_ops=len(job["operations"]),
                due_date=math.inf if due is None else float(due),
                arrival_time=float(job.get("release_date", 0)),
                queue_entry_time=float(job["ready"]),
            )
        )
    index = get_rule(rule).dispatch(candidates, float(snapshot["time"]), None)
    chosen = point["candidates"][index]
    return {
        "kind": "dispatch",
        "machine": int(point["machine"]),
        "job": int(chosen["job"]),
        "operation": int(jobs[chosen["job"]]["next_op"]),
        "start": chosen["start"],
    }


def policy_decision(loaded: LoadedPolicy, snapshot: dict[str, Any]) -> PolicyAnswer:
    """``encode -> act -> decode`` (blocking; the caller bounds its time).

    Raises:
        PolicyUnusable: with the reason the fallback will report.
    """
    if loaded.rule is not None:  # a rule served as the policy: the fallback's own code
        config = loaded.config.model_copy(update={"fallback_rule": loaded.rule})
        return PolicyAnswer(None, rule_decision(snapshot, config), loaded.version)
    kind, trained_on = snapshot_kind(snapshot), loaded.bundle.env_id
    if (kind == "jobshop") != (trained_on == JOBSHOP_ID):
        raise PolicyUnusable(
            "env_mismatch", f"a {kind} snapshot, but the policy was trained on {trained_on}"
        )
    expected = loaded.bundle.spec_hash
    if expected and snapshot.get("spec_hash") != expected:
        raise PolicyUnusable(
            "spec_mismatch",
            f"spec_hash: policy trained on {expected!r}, snapshot is {snapshot.get('spec_hash')!r}",
        )
    max_queue = getattr(loaded.codec, "max_queue", None)
    point = snapshot["decision"]
    if max_queue is not None and point["kind"] == "dispatch":
        queue = next(s["queue"] for s in snapshot["stations"] if s["name"] == point["station"])
        if len(queue) > max_queue:
            raise PolicyUnusable(
                "out_of_range",
                f"{len(queue)} jobs wait at {point['station']!r}; the policy sees at most "
                f"{max_queue} (its max_queue)",
            )
    try:
        obs, mask = loaded.codec.encode(snapshot)
    except (TaktlineError, ValueError, KeyError, IndexError) as exc:
        raise PolicyUnusable("out_of_range", f"{type(exc).__name__}: {exc}") from exc
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise PolicyUnusable("out_of_range", "the encoded mask allows no action")
    action = loaded.bundle.act_one(obs, mask)
    if not (0 <= action < mask.shape[0] and mask[action]):
        raise PolicyUnusable("masked_action", f"policy chose masked action {action}")
    return PolicyAnswer(action, loaded.codec.decode(snapshot, action), loaded.version)


class DecisionService:
    """Answers ``/decide`` and ``/act`` for the store's policies."""

    def __init__(self, settings: Settings, store: ModelStore, metrics: ServingMetrics) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics

    async def _run_policy(self, loaded: LoadedPolicy | None, snapshot: dict[str, Any]) -> Any:
        if loaded is None:
            raise PolicyUnusable("policy_unavailable", "no version of the policy is loaded")
        timeout = self.settings.decision_timeout_s
        try:
            mode = self.settings.policy_execution
            if mode == "inline" or (mode == "auto" and loaded.fast):
                start = time.perf_counter()
                answer = policy_decision(loaded, snapshot)
                if time.perf_counter() - start > timeout:
                    raise TimeoutError
                return answer
            with anyio.fail_after(timeout):
                return await anyio.to_thread.run_sync(
                    policy_decision, loaded, snapshot, abandon_on_cancel=True
                )
        except TimeoutError as exc:
            raise PolicyUnusable("timeout", f"no answer within {timeout} s") from exc
        except PolicyUnusable:
            raise
        except Exception as exc:
            log.exception("policy %s failed", loaded.name)
            raise PolicyUnusable("internal_error", f"{type(exc).__name__}: {exc}") from exc

    async def decide(self, name: str, snapshot: dict[str, Any]) -> DecideResponse:
        """The decision for ``snapshot`` by policy ``name`` (or its fallback rule)."""
        config = self.settings.policies[name]
        loaded = self.store.get(name)
        _check_fits_the_line(loaded, snapshot)
        if config.shadow:
            return await self._decide_shadow(name, config, loaded, snapshot)
        try:
            answer: PolicyAnswer = await self._run_policy(loaded, snapshot)
        except PolicyUnusable as exc:
            rule = self._rule_name(snapshot, config)
            self.metrics.fallbacks.labels(name, exc.reason, rule).inc()
            self.metrics.decided(name, "fallback")
            log.warning("policy %s: fallback to %s (%s: %s)", name, rule, exc.reason, exc)
            return DecideResponse(
                policy=name,
                decision=Decision(**rule_decision(snapshot, config)),
                served_by=f"rule:{rule}",
                model_version=loaded.version if loaded else None,
                rule=rule,
                action=None,
                fallback=True,
                fallback_reason=f"{exc.reason}: {exc}",
            )
        self.metrics.decided(name, "policy")
        return DecideResponse(
            policy=name,
            decision=Decision(**answer.decision),
            served_by=f"policy:{name}@{answer.version}",
            model_version=answer.version,
            rule=None,
            action=answer.action,
            fallback=False,
        )

    async def _decide_shadow(
        self,
        name: str,
        config: PolicyConfig,
        loaded: LoadedPolicy | None,
        snapshot: dict[str, Any],
    ) -> DecideResponse:
        served = rule_decision(snapshot, config)
        rule = self._rule_name(snapshot, config)
        try:
            answer: PolicyAnswer = await self._run_policy(loaded, snapshot)
            shadow = ShadowResult(
                decision=Decision(**answer.decision),
                action=answer.action,
                model_version=answer.version,
                agrees=_same(answer.decision, served),
            )
        except PolicyUnusable as exc:
            shadow = ShadowResult(
                decision=None,
                action=None,
                model_version=loaded.version if loaded else None,
                agrees=None,
                error=f"{exc.reason}: {exc}",
            )
        self.metrics.shadow.labels(name, str(shadow.agrees).lower()).inc()
        self.metrics.decided(name, "shadow_rule")
        shadow_log.info(
            json.dumps(
                {
                    "policy": name,
                    "time": snapshot["time"],
                    "served": served,
                    "rule": rule,
                    "shadow": shadow.model_dump(),
                }
            )
        )
        return DecideResponse(
            policy=name,
            decision=Decision(**served),
            served_by=f"rule:{rule}",
            model_version=loaded.version if loaded else None,
            rule=rule,
            action=None,
            fallback=False,
            shadow=shadow,
        )

    @staticmethod
    def _rule_name(snapshot: dict[str, Any], config: PolicyConfig) -> str:
        kind = snapshot["decision"]["kind"]
        return config.fallback_release if kind == "release" else config.fallback_rule

    # ---- /act ----------------------------------------------------------------------------
    async def act(self, name: str, request: ActRequest) -> ActResponse:
        """Actions for a batch of encoded observations; every action respects its mask."""
        loaded = self.store.get(name)
        if loaded is None:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                f"policy {name!r} has no loaded version: {self.store.errors.get(name)}",
            )
        if loaded.rule is not None:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"policy {name!r} serves the rule {loaded.rule}, which decides from snapshots: "
                f"POST /v1/policies/{name}/decide (a rule has no observation interface for /act)",
            )
        obs, masks = self._check_batch(loaded, request)
        try:
            with anyio.fail_after(self.settings.act_timeout_s):
                actions = await anyio.to_thread.run_sync(
                    _act, loaded, obs, masks, request.deterministic, abandon_on_cancel=True
                )
        except TimeoutError as exc:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                f"policy {name!r} gave no answer within {self.settings.act_timeout_s} s",
            ) from exc
        replaced: list[int] = []
        if masks is not None:
            n = masks.shape[1]
            rows = np.arange(len(actions))
            ok = (actions >= 0) & (actions < n)
            ok[ok] = masks[rows[ok], actions[ok]]
            replaced = [int(i) for i in np.flatnonzero(~ok)]
            for i in replaced:  # e.g. NaN logits: serve the first feasible action instead
                actions[i] = int(np.argmax(masks[i]))
            if replaced:
                self.metrics.fallbacks.labels(name, "masked_action", "first_feasible").inc(
                    len(replaced)
                )
        self.metrics.actions.labels(name).inc(len(actions))
        return ActResponse(
            policy=name,
            model_version=loaded.version,
            actions=[int(a) for a in actions],
            masked_rows_replaced=replaced,
        )

    def _check_batch(
        self, loaded: LoadedPolicy, request: ActRequest
    ) -> tuple[np.ndarray, np.ndarray | None]:
        rows = request.observations
        if len(rows) > self.settings.max_batch:
            _invalid(("observations",), f"at most {self.settings.max_batch} rows, got {len(rows)}")
        shape = loaded.obs_shape
        width = len(rows[0]) if loaded.size_agnostic else int(np.prod(shape))
        for i, row in enumerate(rows):
            if len(row) != width:
                _invalid(
                    ("observations", i),
                    f"expected {width} values (observation shape {list(shape)}, flattened; "
                    f"every row alike), got {len(row)}",
                )
        if width == 0:
            _invalid(("observations", 0), "an observation needs at least one value")
        with np.errstate(over="ignore"):
            obs = np.asarray(rows, dtype=np.float32)
        if not loaded.size_agnostic:
            obs = obs.reshape((len(rows), *shape))
        space = loaded.flat_space
        low = np.asarray(getattr(space, "low", -np.inf), dtype=np.float32)
        high = np.asarray(getattr(space, "high", np.inf), dtype=np.float32)
        if loaded.size_agnostic:  # bounds are per position only for a fixed width
            low, high = np.asarray(low.min()), np.asarray(high.max())
        bad = ~np.isfinite(obs) | (obs < low) | (obs > high)
        if bad.any():
            i = int(np.flatnonzero(bad.reshape(len(rows), -1).any(axis=1))[0])
            _invalid(
                ("observations", i),
                "values must be finite float32 within the observation space bounds "
                f"[{float(low.min())}, {float(high.max())}]",
            )
        if request.masks is None:
            return obs, None
        n = loaded.n_actions
        if len(request.masks) != len(rows):
            _invalid(("masks",), f"expected {len(rows)} rows (one per observation)")
        for i, m in enumerate(request.masks):
            if len(m) != n:
                _invalid(("masks", i), f"expected {n} booleans (one per action), got {len(m)}")
            if not any(m):
                _invalid(("masks", i), "no feasible action: at least one entry must be true")
        return obs, np.asarray(request.masks, dtype=bool)


def _check_fits_the_line(loaded: LoadedPolicy | None, snapshot: dict[str, Any]) -> None:
    """422 when a line snapshot that claims the policy's line (its ``spec_hash``) names a
    station, machine or product that line does not have: neither the policy nor the rule
    may answer for a line that cannot exist. A snapshot of another line is left to the
    policy path, which falls back to the rule for it (``spec_mismatch``).

    Raises:
        RequestValidationError: naming the field.
    """
    if loaded is None or snapshot_kind(snapshot) != "line":
        return
    spec = getattr(loaded.codec, "spec", None)  # a line codec's; a rule has none
    if not isinstance(spec, LineSpec) or snapshot.get("spec_hash") != loaded.bundle.spec_hash:
        return
    problem = line_spec_problem(snapshot, spec)
    if problem is not None:
        _invalid(*problem)


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two decisions do the same thing (ignoring how they were reached)."""
    keys = ("kind", "station", "machine", "job", "operation", "count")
    return all(a.get(k) == b.get(k) for k in keys)


def _act(
    loaded: LoadedPolicy, obs: np.ndarray, masks: np.ndarray | None, deterministic: bool
) -> np.ndarray:
    return np.asarray(loaded.bundle.act(obs, masks, deterministic=deterministic), dtype=np.int64)


def _invalid(loc: tuple[str | int, ...], msg: str) -> NoReturn:
    raise RequestValidationError(
        [{"loc": ("body", *loc), "msg": msg, "type": "value_error", "input": None}]
    )
