"""Registers taktline's environments with Gymnasium (done on ``import taktline.envs``).

>>> import gymnasium as gym
>>> import taktline.envs
>>> env = gym.make("taktline/JobShop-v0", instance="ft06")
>>> env.action_space
Discrete(6)

A fresh process (an ``SubprocVecEnv`` worker started by forkserver or spawn, a Ray worker) has
not imported ``taktline.envs``; name the module in the id and Gymnasium imports it first:
``gym.make("taktline.envs:taktline/JobShop-v0")``.
"""

from __future__ import annotations

import inspect
from typing import Any

import gymnasium as gym

from taktline.envs.encoding import ENV_IDS, JOBSHOP_ID, LINE_DISPATCH_ID, LINE_RELEASE_ID

ENTRY_POINTS: dict[str, str] = {
    JOBSHOP_ID: "taktline.envs.env_jobshop:JobShopEnv",
    LINE_DISPATCH_ID: "taktline.envs.env_line:LineDispatchEnv",
    LINE_RELEASE_ID: "taktline.envs.env_line:LineReleaseEnv",
}

DEFAULT_KWARGS: dict[str, dict[str, Any]] = {
    JOBSHOP_ID: {"instance": "ft06"},
    LINE_DISPATCH_ID: {"line": "bodyshop"},
    LINE_RELEASE_ID: {"line": "bodyshop"},
}


def register_envs() -> None:
    """Register every taktline env id (idempotent)."""
    for env_id in ENV_IDS:
        if env_id in gym.registry:
            continue
        gym.register(
            id=env_id,
            entry_point=ENTRY_POINTS[env_id],
            kwargs=dict(DEFAULT_KWARGS[env_id]),
            disable_env_checker=False,
        )


def env_info(env_id: str, **kwargs: Any) -> dict[str, Any]:
    """Id, kwargs and spaces of a registered env (what ``taktline envs`` prints)."""
    if env_id not in gym.registry:
        raise gym.error.UnregisteredEnv(f"{env_id} is not registered; import taktline.envs")
    spec = gym.registry[env_id]
    kw = {**spec.kwargs, **kwargs}
    env = gym.make(env_id, **kw).unwrapped
    params = {
        name: p.default
        for name, p in inspect.signature(type(env).__init__).parameters.items()
        if name != "self" and p.default is not inspect.Parameter.empty
    }
    try:
        return {
            "id": env_id,
            "entry_point": spec.entry_point,
            "kwargs": kw,
            "parameters": {
                k: v if isinstance(v, str | int | float | bool | None) else list(v)
                for k, v in params.items()
            },
            "observation_space": str(env.observation_space),
            "action_space": str(env.action_space),
            "doc": (type(env).__doc__ or "").strip().splitlines()[0],
        }
    finally:
        env.close()
