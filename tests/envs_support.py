"""Helpers of the environment tests: small env configurations and a random feasible player."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

import taktline.envs  # noqa: F401  (registers the ids)
from taktline.envs.kpis import Estimate, estimate

JOBSHOP = "taktline/JobShop-v0"
DISPATCH = "taktline/LineDispatch-v0"
RELEASE = "taktline/LineRelease-v0"

# Small but varied configurations: every line, both action modes, padding, generators, FJSP.
CASES: list[tuple[str, dict[str, Any]]] = [
    (JOBSHOP, {"instance": "ft06"}),
    (JOBSHOP, {"instance": "ft06", "skip_forced": False, "reward": "sparse"}),
    (JOBSHOP, {"instance": "la01", "max_jobs": 12, "max_machines": 6, "scheme": "non-delay"}),
    (
        JOBSHOP,
        {
            "instance": {"generator": "taillard_like", "n_jobs": 5, "n_machines": 4},
            "max_jobs": 8,
            "max_machines": 6,
        },
    ),
    (
        JOBSHOP,
        {"instance": {"generator": "flexible", "n_jobs": 4, "n_machines": 3}, "dict_obs": True},
    ),
    (DISPATCH, {"line": "serial5", "horizon": 120.0}),
    (DISPATCH, {"line": "bodyshop", "horizon": 120.0, "action_mode": "rule"}),
    (DISPATCH, {"line": "machining", "horizon": 400.0, "max_queue": 4, "dict_obs": True}),
    (DISPATCH, {"line": "conwip_loop", "horizon": 60.0, "warmup": 20.0}),
    (RELEASE, {"line": "bodyshop", "horizon": 150.0}),
    (RELEASE, {"line": "serial5", "horizon": 150.0, "action_mode": "wip_cap"}),
    (RELEASE, {"line": "conwip_loop", "horizon": 60.0, "dict_obs": True, "dispatch_rule": "SPT"}),
]


def case_id(case: tuple[str, dict[str, Any]]) -> str:
    env_id, kw = case
    return (
        env_id.split("/")[1]
        + "-"
        + "-".join(f"{k}={v if not isinstance(v, dict) else v['generator']}" for k, v in kw.items())
    )


def make(case: tuple[str, dict[str, Any]], **extra: Any) -> gym.Env[Any, Any]:
    env_id, kw = case
    return gym.make(env_id, **{**kw, **extra})


def flat(obs: Any) -> np.ndarray:
    return np.asarray(obs["observations"] if isinstance(obs, dict) else obs)


def play(
    env: gym.Env[Any, Any], seed: int, max_steps: int = 10_000
) -> Iterator[tuple[Any, float, bool, dict[str, Any], int]]:
    """Reset with ``seed`` and play random feasible actions; yields (obs, reward, done, info,
    action) after the reset (reward 0, action -1) and after every step."""
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    yield obs, 0.0, False, info, -1
    for _ in range(max_steps):
        mask = env.unwrapped.action_masks()  # type: ignore[attr-defined]
        action = int(rng.choice(np.flatnonzero(mask)))
        obs, reward, terminated, truncated, info = env.step(action)
        done = bool(terminated or truncated)
        yield obs, float(reward), done, info, action
        if done:
            return
    raise AssertionError(f"episode did not end within {max_steps} steps")


def episode(env: gym.Env[Any, Any], seed: int) -> tuple[float, dict[str, Any], int]:
    """Play one random feasible episode: (return, last info, steps)."""
    ret, steps = 0.0, 0
    last: dict[str, Any] = {}
    for _, reward, _, info, _ in play(env, seed):
        ret += reward
        steps += 1
        last = info
    return ret, last, steps - 1


def paired_difference(a: Sequence[float], b: Sequence[float]) -> Estimate:
    """Mean of ``a - b`` over paired replications (the same seeds: common random numbers) with
    the 95% CI half-width from the variance of the differences."""
    return estimate([x - y for x, y in zip(a, b, strict=True)])
