"""Turning snapshots and observations into decisions, safely.

The policy path is ``encode -> act -> decode`` with the codec of the policy's environment (the
same functions as in training). Whatever goes wrong on it — no loaded version, another line
(spec hash), a snapshot outside what the policy was trained for (e.g. more waiting jobs than its
padding), an exception, a timeout, a masked action — the configured rule decides instead, and
the answer says so (``fallback: true`` with a reason) and ``taktline_fallbacks`` counts it.

The fallback is :meth:`taktline.agents.policies.RulePolicy.decide` on the same snapshot: the
rule code a policy was evaluated against, not a copy of it.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import TYPE_CHECKING, NoReturn

import anyio
import numpy as np
from fastapi import HTTPException, status
from fastapi.exceptions import RequestValidationError

from taktline.agents.policies import RulePolicy
from taktline.envs.encoding import JOBSHOP_ID, Codec
from taktline.envs.snapshot import JobShopSnapshot, LineSnapshot, Snapshot, pending_dispatch
from taktline.envs.spec import LineSpec
from taktline.errors import InfeasibleActionError, TaktlineError
from taktline.serving.metrics import ServingMetrics
from taktline.serving.schemas import (
    ActRequest,
    ActResponse,
    DecideResponse,
    Decision,
    ShadowResult,
    line_spec_problem,
)
from taktline.serving.settings import ServedPolicy, Settings
from taktline.serving.store import LoadedPolicy, ModelStore

if TYPE_CHECKING:
    from taktline.agents.lookahead import LookaheadPolicy
    from taktline.serving.ui import DecisionFeed

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
    decision: Decision
    version: str


@lru_cache(maxsize=256)
def rule_policy(rule: str, release: str) -> RulePolicy:
    """``RulePolicy(rule, release=release)``, built once (the settings name few rules)."""
    return RulePolicy(rule, release=release)


def rule_decision(snapshot: Snapshot, config: ServedPolicy, rule: str | None = None) -> Decision:
    """The decision of ``config``'s rules (``rule``, if given, instead of its fallback
    dispatching rule): :meth:`RulePolicy.decide`; needs no model, never fails on a valid
    snapshot."""
    return rule_policy(rule or config.fallback_rule, config.fallback_release).decide(snapshot)


def rule_label(snapshot: Snapshot, config: ServedPolicy, rule: str | None = None) -> str:
    """The rule :func:`rule_decision` answers ``snapshot`` with, as configured (``SPT``,
    ``CONWIP(12)``): served by, metrics and logs name it."""
    point = snapshot.decision
    if point is not None and point.kind == "release":
        return config.fallback_release
    return rule or config.fallback_rule


@lru_cache(maxsize=16)
def lookahead_policy(ref: str, budget_ms: float) -> LookaheadPolicy:
    """The lookahead a ``rule:LOOKAHEAD(...)`` reference names, built once per reference, with
    a per-decision budget inside the server's decision timeout unless the reference sets one."""
    from taktline.agents.lookahead import LookaheadPolicy, parse_config

    config = parse_config(ref)
    if not config.budget_ms:
        config = replace(config, budget_ms=budget_ms)
    return LookaheadPolicy(config)


def lookahead_decision(ref: str, snapshot: Snapshot, timeout_s: float) -> Decision:
    """The lookahead's decision on the posted snapshot (restored with ``Twin.from_snapshot``);
    out of budget it answers with its base rule and says so in ``decision.note``."""
    budget_ms = 700.0 * timeout_s  # 70% of the decision timeout: the rest is restore and I/O
    try:
        return lookahead_policy(ref, budget_ms).decide(snapshot)
    except TaktlineError as exc:
        raise PolicyUnusable("out_of_range", str(exc)) from exc


def policy_decision(
    loaded: LoadedPolicy, snapshot: Snapshot, timeout_s: float = 1.0
) -> PolicyAnswer:
    """The policy's own decide path, :meth:`NeuralPolicy.decide_action` (``encode -> act ->
    decode``), or the rule's (blocking; the caller bounds its time).

    Raises:
        PolicyUnusable: with the reason the fallback will report.
    """
    if loaded.rule is not None and loaded.rule.startswith("LOOKAHEAD("):
        decision = lookahead_decision(loaded.rule, snapshot, timeout_s)
        return PolicyAnswer(None, decision, loaded.version)
    if loaded.rule is not None:  # a rule served as the policy: the fallback's own code
        return PolicyAnswer(
            None, rule_decision(snapshot, loaded.config, loaded.rule), loaded.version
        )
    bundle, codec = loaded.network
    is_shop, trained_on = isinstance(snapshot, JobShopSnapshot), bundle.env_id
    if is_shop != (trained_on == JOBSHOP_ID):
        kind = "jobshop" if is_shop else "line"
        raise PolicyUnusable(
            "env_mismatch", f"a {kind} snapshot, but the policy was trained on {trained_on}"
        )
    expected = bundle.spec_hash
    if expected and isinstance(snapshot, LineSnapshot) and snapshot.spec_hash != expected:
        raise PolicyUnusable(
            "spec_mismatch",
            f"spec_hash: policy trained on {expected!r}, snapshot is {snapshot.spec_hash!r}",
        )
    _check_padding(codec, snapshot)
    assert loaded.policy is not None  # a network policy always has one (ModelStore._load)
    try:
        action, decision = loaded.policy.decide_action(snapshot)
    except InfeasibleActionError as exc:  # decode refused the action: the mask was not kept
        raise PolicyUnusable("masked_action", str(exc)) from exc
    except (TaktlineError, ValueError, KeyError, IndexError) as exc:
        raise PolicyUnusable("out_of_range", f"{type(exc).__name__}: {exc}") from exc
    return PolicyAnswer(action, decision, loaded.version)


def _check_padding(codec: Codec, snapshot: Snapshot) -> None:
    """Out of range when more jobs wait at the deciding station than the policy sees (its
    codec's ``max_queue``): the jobs past it would be invisible to it."""
    max_queue = getattr(codec, "max_queue", None)
    point = snapshot.decision
    if max_queue is None or not isinstance(snapshot, LineSnapshot) or point is None:
        return
    if point.kind == "dispatch":
        station, _ = pending_dispatch(snapshot)
        if len(station.queue) > max_queue:
            raise PolicyUnusable(
                "out_of_range",
                f"{len(station.queue)} jobs wait at {station.name!r}; the policy sees at most "
                f"{max_queue} (its max_queue)",
            )


class DecisionService:
    """Answers ``/decide`` and ``/act`` for the store's policies."""

    def __init__(self, settings: Settings, store: ModelStore, metrics: ServingMetrics) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        # the plant view's ring buffer (taktline.serving.ui): every answer, either path
        self.feed: DecisionFeed | None = None

    async def _run_policy(self, loaded: LoadedPolicy | None, snapshot: Snapshot) -> PolicyAnswer:
        if loaded is None:
            raise PolicyUnusable("policy_unavailable", "no version of the policy is loaded")
        timeout = self.settings.decision_timeout_s
        try:
            mode = self.settings.policy_execution
            if mode == "inline" or (mode == "auto" and loaded.fast):
                start = time.perf_counter()
                answer = policy_decision(loaded, snapshot, timeout)
                if time.perf_counter() - start > timeout:
                    raise TimeoutError
                return answer
            with anyio.fail_after(timeout):
                return await anyio.to_thread.run_sync(
                    policy_decision, loaded, snapshot, timeout, abandon_on_cancel=True
                )
        except TimeoutError as exc:
            raise PolicyUnusable("timeout", f"no answer within {timeout} s") from exc
        except PolicyUnusable:
            raise
        except Exception as exc:
            log.exception("policy %s failed", loaded.name)
            raise PolicyUnusable("internal_error", f"{type(exc).__name__}: {exc}") from exc

    async def decide(self, name: str, snapshot: Snapshot) -> DecideResponse:
        """The decision for ``snapshot`` by policy ``name`` (or its fallback rule).

        The routes and the fast path both answer through here, so the plant view's
        :attr:`feed` sees every decision served, with its latency.
        """
        start = time.perf_counter()
        response = await self._decide(name, snapshot)
        if self.feed is not None:
            self.feed.record(name, snapshot, response, time.perf_counter() - start)
        return response

    async def _decide(self, name: str, snapshot: Snapshot) -> DecideResponse:
        config = self.settings.policies[name]
        loaded = self.store.get(name)
        _check_decidable(snapshot)
        _check_fits_the_line(loaded, snapshot)
        if config.shadow:
            return await self._decide_shadow(name, config, loaded, snapshot)
        try:
            answer = await self._run_policy(loaded, snapshot)
        except PolicyUnusable as exc:
            rule = rule_label(snapshot, config)
            self.metrics.fallbacks.labels(name, exc.reason, rule).inc()
            self.metrics.decided(name, "fallback")
            log.warning("policy %s: fallback to %s (%s: %s)", name, rule, exc.reason, exc)
            return DecideResponse(
                policy=name,
                decision=rule_decision(snapshot, config),
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
            decision=answer.decision,
            served_by=f"policy:{name}@{answer.version}",
            model_version=answer.version,
            rule=None,
            action=answer.action,
            fallback=False,
        )

    async def _decide_shadow(
        self,
        name: str,
        config: ServedPolicy,
        loaded: LoadedPolicy | None,
        snapshot: Snapshot,
    ) -> DecideResponse:
        rule = rule_label(snapshot, config)
        served = rule_decision(snapshot, config)
        try:
            answer = await self._run_policy(loaded, snapshot)
            shadow = ShadowResult(
                decision=answer.decision,
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
                    "time": snapshot.time,
                    "served": served.model_dump(exclude_none=True),
                    "rule": rule,
                    "shadow": shadow.model_dump(),
                }
            )
        )
        return DecideResponse(
            policy=name,
            decision=served,
            served_by=f"rule:{rule}",
            model_version=loaded.version if loaded else None,
            rule=rule,
            action=None,
            fallback=False,
            shadow=shadow,
        )

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


def _check_decidable(snapshot: Snapshot) -> None:
    """422 for a snapshot that waits for no decision (a valid state, but nothing to decide).

    Raises:
        RequestValidationError: naming ``decision``.
    """
    if snapshot.decision is None:
        what = (
            "the schedule is complete"
            if isinstance(snapshot, JobShopSnapshot)
            else ("the line waits for no decision")
        )
        _invalid(
            ("decision",),
            f"{what}; there is nothing to decide (post the snapshot of a decision point)",
        )


def _check_fits_the_line(loaded: LoadedPolicy | None, snapshot: Snapshot) -> None:
    """422 when a line snapshot that claims the policy's line (its ``spec_hash``) names a
    station, machine or product that line does not have: neither the policy nor the rule
    may answer for a line that cannot exist. A snapshot of another line is left to the
    policy path, which falls back to the rule for it (``spec_mismatch``).

    Raises:
        RequestValidationError: naming the field.
    """
    if loaded is None or loaded.bundle is None or not isinstance(snapshot, LineSnapshot):
        return  # a rule has no line of its own
    spec = getattr(loaded.codec, "spec", None)  # a line codec's
    if not isinstance(spec, LineSpec) or snapshot.spec_hash != loaded.bundle.spec_hash:
        return
    problem = line_spec_problem(snapshot, spec)
    if problem is not None:
        _invalid(*problem)


_ACTION = {"kind", "station", "machine", "job", "operation", "count"}


def _same(a: Decision, b: Decision) -> bool:
    """Whether two decisions do the same thing (ignoring how they were reached)."""
    return a.model_dump(include=_ACTION) == b.model_dump(include=_ACTION)


def _act(
    loaded: LoadedPolicy, obs: np.ndarray, masks: np.ndarray | None, deterministic: bool
) -> np.ndarray:
    bundle, _ = loaded.network
    return np.asarray(bundle.act(obs, masks, deterministic=deterministic), dtype=np.int64)


def _invalid(loc: tuple[str | int, ...], msg: str) -> NoReturn:
    raise RequestValidationError(
        [{"loc": ("body", *loc), "msg": msg, "type": "value_error", "input": None}]
    )
