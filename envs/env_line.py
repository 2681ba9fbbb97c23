"""``taktline/LineDispatch-v0`` and ``taktline/LineRelease-v0``: thin Gymnasium faces on the twin.

Both run one twin per episode, seeded from the env's own generator, from an empty line to the
``horizon`` (then ``truncated=True``; an order-list line whose orders have all left ends with
``terminated=True``). The reward of a step is the **profit earned between two decisions**:
revenue of finished orders minus WIP holding, tardiness, setup and energy costs (the spec's
``costs``), so the return of an episode is the profit of the run (from the end of ``warmup``).
``info["kpis"]`` at the last step holds the run's KPIs (throughput, WIP, tardiness, profit...).

>>> env = LineDispatchEnv(line="serial5", horizon=200.0)
>>> obs, info = env.reset(seed=0)
>>> obs, reward, terminated, truncated, info = env.step(int(env.action_masks().argmax()))
>>> obs.shape == env.observation_space.shape
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from taktline.envs.encoding import resolve_line
from taktline.envs.encoding_line import LineDispatchCodec
from taktline.envs.encoding_release import LineReleaseCodec
from taktline.envs.priorities import DISPATCH_RULES, RuleDispatcher
from taktline.envs.snapshot import LineSnapshot
from taktline.envs.spaces import MaskedDiscrete, resolve_action
from taktline.envs.spec import LineSpec, OrderList
from taktline.envs.twin import Twin
from taktline.errors import InfeasibleActionError, PolicyError


class _LineEnv(gym.Env[Any, np.int64]):
    """The episode loop both line envs share; subclasses answer the twin's requests."""

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}  # noqa: RUF012
    codec: LineDispatchCodec | LineReleaseCodec

    def __init__(
        self,
        line: str | LineSpec,
        horizon: float | None,
        warmup: float,
        render_mode: str | None,
    ) -> None:
        self.spec_line = resolve_line(line)
        h = horizon if horizon is not None else self.spec_line.horizon
        if h is None and not isinstance(self.spec_line.arrivals, OrderList):
            raise PolicyError(
                f"horizon: line {self.spec_line.name!r} has endless arrivals and no default "
                "horizon; pass horizon=<time>"
            )
        if h is not None and h <= 0:
            raise PolicyError(f"horizon: must be > 0, got {h}")
        self.horizon = math.inf if h is None else float(h)
        if not 0 <= warmup < self.horizon:
            raise PolicyError(f"warmup: must be in [0, horizon={self.horizon}), got {warmup}")
        self.warmup = float(warmup)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise PolicyError(
                f"render_mode: expected one of {self.metadata['render_modes']}, got {render_mode!r}"
            )
        self.render_mode = render_mode
        self.twin: Twin | None = None
        self._mask = np.zeros(int(self.codec.action_space.n), dtype=np.bool_)
        self._profit = 0.0
        self._over = True
        self.decision_count = 0

    # -- subclass hook -----------------------------------------------------------------
    def _make_twin(self, seed: int) -> Twin:
        raise NotImplementedError

    # -- the Gymnasium API -------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        self.twin = self._make_twin(int(self.np_random.integers(2**31 - 1)))
        self._profit = 0.0
        self._over = False
        req = self.twin.run_until_decision(self.horizon)
        if req is None:
            raise PolicyError(
                f"line {self.spec_line.name!r}: no decision arises before the horizon "
                f"({self.horizon}); lengthen the horizon"
            )
        return self._observe(), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        twin = self.twin
        if twin is None or self._over:
            raise gym.error.ResetNeeded("call reset() before step() (the episode is over)")
        a = resolve_action(action, self._mask, self.decision_count)
        if a is None:
            # the codec words the error on the same data a served policy would see
            self.codec.decode(twin.snapshot(), int(action))
            raise InfeasibleActionError(f"action {action}: masked out")  # pragma: no cover
        # the one path of a decision, as in serving: decode, then apply (decoded on the twin:
        # building a snapshot per step would cost more than the rest of the step)
        twin.apply(self.codec.decode_twin(twin, a))
        req = twin.run_until_decision(self.horizon)
        reward = self._reward(twin)
        info: dict[str, Any] = {}
        terminated = truncated = False
        if req is None:
            self._over = True
            terminated = twin.finished
            truncated = not terminated
            info["kpis"] = twin.kpis().scalar()
        return self._observe(), reward, terminated, truncated, info

    def action_masks(self) -> np.ndarray:
        """The feasibility mask of the current decision (for sb3-contrib MaskablePPO)."""
        return self._mask.copy()

    def snapshot(self) -> LineSnapshot:
        """The twin's snapshot now (``encode`` of it is the observation)."""
        if self.twin is None:
            raise gym.error.ResetNeeded("call reset() first")
        return self.twin.snapshot()

    def render(self) -> Any:
        if self.render_mode is None:
            gym.logger.warn("render() without render_mode; pass render_mode='ansi' or 'rgb_array'")
            return None
        from taktline.envs.render import render_line_ansi, render_line_rgb

        snap = self.snapshot()
        return render_line_ansi(snap) if self.render_mode == "ansi" else render_line_rgb(snap)

    # -- internals ---------------------------------------------------------------------
    def _observe(self) -> Any:
        assert self.twin is not None
        obs, mask = self.codec.encode_twin(self.twin)
        self._mask = mask
        self.decision_count += 1
        return self.codec.observation(obs, mask)

    def _reward(self, twin: Twin) -> float:
        if twin.stats_start < self.warmup:  # still warming up: nothing counts yet
            return 0.0
        profit = twin.meter.profit(twin)
        reward = profit - self._profit
        self._profit = profit
        return float(reward)


class LineDispatchEnv(_LineEnv):
    """Dispatching at the stations of a line: which waiting job does the free machine start?

    Args:
        line: A bundled line name (``bodyshop``, ``machining``, ``serial5``, ``conwip_loop``),
            a spec file or a :class:`LineSpec`.
        horizon: Episode length in the spec's time unit (default: the spec's horizon).
        warmup: Rewards and KPIs count from this time (earlier steps earn 0).
        max_queue: Job slots; the first ``max_queue`` waiting jobs (queue order) can be chosen.
        action_mode: ``"job"`` (pick a slot) or ``"rule"`` (pick which rule of ``rules``
            decides).
        rules: Dispatching rules of ``action_mode="rule"`` (default: all built-in rules).
        dict_obs: Observations as ``{"observations", "action_mask"}`` (RLlib).
        render_mode: ``"ansi"`` or ``"rgb_array"`` (the line, buffer levels, machine states).
    """

    codec: LineDispatchCodec

    def __init__(
        self,
        line: str | LineSpec = "bodyshop",
        horizon: float | None = None,
        warmup: float = 0.0,
        max_queue: int = 10,
        action_mode: str = "job",
        rules: Sequence[str] = DISPATCH_RULES,
        dict_obs: bool = False,
        render_mode: str | None = None,
    ) -> None:
        spec = resolve_line(line)
        self.codec = LineDispatchCodec(spec, max_queue, action_mode, tuple(rules), dict_obs)
        self.observation_space = self.codec.observation_space
        self.action_space = MaskedDiscrete(int(self.codec.action_space.n), self)
        super().__init__(spec, horizon, warmup, render_mode)

    def _make_twin(self, seed: int) -> Twin:
        return Twin(self.spec_line, seed, warmup=self.warmup)


class LineReleaseEnv(_LineEnv):
    """Order release (WIP control): every ``review_period``, how many orders enter the line?

    Args:
        line: A bundled line name, a spec file or a :class:`LineSpec`.
        horizon: Episode length (default: the spec's horizon).
        warmup: Rewards and KPIs count from this time (earlier steps earn 0).
        review_period: Time between release decisions (default: half the mean total processing
            time of an order).
        action_mode: ``"count"`` (release ``a`` orders; more than wait is masked) or
            ``"wip_cap"`` (release until ``a`` jobs are in the line).
        max_release: Largest count or cap (the action space is ``0..max_release``).
        dispatch_rule: The rule that dispatches at the stations meanwhile.
        dict_obs: Observations as ``{"observations", "action_mask"}``.
        render_mode: ``"ansi"`` or ``"rgb_array"``.
    """

    codec: LineReleaseCodec

    def __init__(
        self,
        line: str | LineSpec = "bodyshop",
        horizon: float | None = None,
        warmup: float = 0.0,
        review_period: float | None = None,
        action_mode: str = "count",
        max_release: int = 8,
        dispatch_rule: str = "FIFO",
        dict_obs: bool = False,
        render_mode: str | None = None,
    ) -> None:
        spec = resolve_line(line)
        self.codec = LineReleaseCodec(spec, action_mode, max_release, dict_obs)
        self.observation_space = self.codec.observation_space
        self.action_space = MaskedDiscrete(int(self.codec.action_space.n), self)
        period = review_period if review_period is not None else spec.raw_process_time() / 2
        if not period > 0:
            raise PolicyError(f"review_period: must be > 0, got {review_period}")
        self.review_period = float(period)
        self.dispatcher = RuleDispatcher(dispatch_rule)
        super().__init__(spec, horizon, warmup, render_mode)

    def _make_twin(self, seed: int) -> Twin:
        return Twin(
            self.spec_line,
            seed,
            self.dispatcher,
            warmup=self.warmup,
            external_release=True,
            review_period=self.review_period,
        )
