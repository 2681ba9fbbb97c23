"""The envs in Gymnasium and SB3 vector envs, and a short MaskablePPO run on each."""

from __future__ import annotations

from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from taktline.envs.encoding import ENV_IDS
from tests.envs_support import DISPATCH, JOBSHOP, RELEASE

SMALL: dict[str, dict[str, Any]] = {
    JOBSHOP: {"instance": {"generator": "taillard_like", "n_jobs": 5, "n_machines": 4}},
    DISPATCH: {"line": "serial5", "horizon": 60.0},
    RELEASE: {"line": "conwip_loop", "horizon": 40.0},
}


def _make(env_id: str) -> gym.Env[Any, Any]:
    return gym.make(env_id, **SMALL[env_id])


def _feasible(masks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.array([rng.choice(np.flatnonzero(m)) if m.any() else 0 for m in masks])


@pytest.mark.parametrize("vector", ["sync", "async"])
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_gymnasium_vector_env_runs_episodes_with_masks(env_id: str, vector: str) -> None:
    cls = gym.vector.SyncVectorEnv if vector == "sync" else gym.vector.AsyncVectorEnv
    envs = cls([partial(_make, env_id) for _ in range(2)])
    try:
        rng = np.random.default_rng(0)
        obs: Any
        obs, _ = envs.reset(seed=[1, 2])
        assert obs.shape[0] == 2
        ended = 0
        for _ in range(120):
            masks = np.stack(envs.call("action_masks"))
            obs, _, term, trunc, _ = envs.step(_feasible(masks, rng))
            ended += int(np.sum(term | trunc))
        assert ended >= 1
    finally:
        envs.close()


@pytest.mark.parametrize("vector", ["dummy", "subproc-fork"])
def test_sb3_vec_envs_step_every_env(vector: str) -> None:
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    for env_id in ENV_IDS:
        venv = make_vec_env(
            env_id,
            n_envs=2,
            seed=0,
            env_kwargs=SMALL[env_id],
            vec_env_cls=DummyVecEnv if vector == "dummy" else SubprocVecEnv,
            vec_env_kwargs={} if vector == "dummy" else {"start_method": "fork"},
        )
        try:
            _run_masked(venv, 80)
        finally:
            venv.close()


def test_sb3_subproc_vec_env_in_fresh_worker_processes() -> None:
    """forkserver workers start without taktline imported: the "module:id" form imports it."""
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import SubprocVecEnv

    venv = make_vec_env(
        f"taktline.envs:{JOBSHOP}",
        n_envs=2,
        seed=0,
        env_kwargs=SMALL[JOBSHOP],
        vec_env_cls=SubprocVecEnv,
        vec_env_kwargs={"start_method": "forkserver"},
    )
    try:
        _run_masked(venv, 40)
    finally:
        venv.close()


def _run_masked(venv: Any, steps: int) -> None:
    rng = np.random.default_rng(0)
    venv.reset()
    dones = 0
    for _ in range(steps):
        masks = np.stack(venv.env_method("action_masks"))
        _, _, done, infos = venv.step(_feasible(masks, rng))
        dones += int(done.sum())
        for d, info in zip(done, infos, strict=True):
            if d:
                assert "kpis" in info and "terminal_observation" in info
    assert dones >= 1


def _weights(model: Any) -> list[np.ndarray]:
    return [p.detach().clone().numpy() for p in model.policy.parameters()]


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_maskable_ppo_updates_its_weights_on_the_vec_env_and_acts_within_masks(
    env_id: str,
) -> None:
    """A few hundred steps cannot show learning; they show the training loop runs on the env
    (gradient steps change the weights) and the trained policy keeps to the masks."""
    from sb3_contrib import MaskablePPO
    from stable_baselines3.common.env_util import make_vec_env

    venv = make_vec_env(env_id, n_envs=2, seed=0, env_kwargs=SMALL[env_id])
    model = MaskablePPO(
        "MlpPolicy",
        venv,
        n_steps=64,
        batch_size=64,
        n_epochs=1,
        seed=0,
        policy_kwargs={"net_arch": [16]},
        device="cpu",
    )
    before = _weights(model)
    model.learn(total_timesteps=256)
    assert model.num_timesteps >= 256
    assert any(not np.array_equal(a, b) for a, b in zip(before, _weights(model), strict=True))
    env = _make(env_id)
    obs, _ = env.reset(seed=0)
    for _ in range(20):
        mask = env.unwrapped.action_masks()  # type: ignore[attr-defined]
        action, _ = model.predict(obs, action_masks=mask, deterministic=True)
        assert mask[int(action)]
        obs, _, term, trunc, _ = env.step(action)
        if term or trunc:
            break
    venv.close()


def test_maskable_ppo_reads_the_dict_observation_too() -> None:
    from sb3_contrib import MaskablePPO

    env = gym.make(JOBSHOP, instance="ft06", dict_obs=True)
    model = MaskablePPO(
        "MultiInputPolicy",
        env,
        n_steps=32,
        batch_size=32,
        n_epochs=1,
        seed=0,
        policy_kwargs={"net_arch": [8]},
        device="cpu",
    )
    before = _weights(model)
    model.learn(total_timesteps=64)
    assert any(not np.array_equal(a, b) for a, b in zip(before, _weights(model), strict=True))
    obs, _ = env.reset(seed=0)
    assert isinstance(obs, dict)
    mask = env.unwrapped.action_masks()  # type: ignore[attr-defined]
    action, _ = model.predict(obs, action_masks=mask, deterministic=True)
    assert mask[int(action)]
