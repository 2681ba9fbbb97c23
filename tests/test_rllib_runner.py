"""The lean RLlib env runner: the same envs, episodes and action distribution as RLlib's own.

``MaskedEnvRunner`` replaces RLlib's sampling loop and vector env for speed
(``bench/bench_training.py`` measures it). These tests pin what must not change: the vector env
steps exactly as gymnasium's ``SyncVectorEnv`` + ``DictInfoToList``; actions are drawn from the
masked softmax of the actor's logits; the episodes carry the logits and log-probabilities the
PPO learner reads, consistent with the module's own torch forward pass; chunks continue across
``sample`` calls; and what the lean loop does not handle goes through RLlib's loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.wrappers.vector import DictInfoToList
from scipy import stats

from taktline.agents.networks import MASKED_LOGIT
from tests.ray_support import TINY_ENV, tiny_config

ENV_ID = "taktline/LineDispatch-v0"
# a short horizon so episodes end (and auto-reset) within the tests
SHORT_ENV = {**TINY_ENV, "horizon": 150.0}


def _make_env() -> gym.Env[Any, Any]:
    from taktline.training.rllib_module import make_env

    return make_env({"env_id": ENV_ID, "env_kwargs": dict(SHORT_ENV)})


def test_gumbel_sample_draws_from_the_masked_softmax() -> None:
    from taktline.training.rllib_runner import gumbel_sample

    logits = np.array(
        [[0.0, 1.0, MASKED_LOGIT, -0.5], [2.0, MASKED_LOGIT, MASKED_LOGIT, 2.0]], np.float32
    )
    draws = 20_000
    rng = np.random.default_rng(3)
    batch = np.repeat(logits, draws, axis=0)
    actions, logp = gumbel_sample(batch, rng, explore=True)
    log_softmax = torch.log_softmax(torch.from_numpy(batch), dim=1).numpy()
    assert np.allclose(logp, log_softmax[np.arange(len(batch)), actions], atol=1e-5)
    for row in range(len(logits)):
        chosen = actions[row * draws : (row + 1) * draws]
        probs = np.exp(log_softmax[row * draws])
        counts = np.bincount(chosen, minlength=logits.shape[1])
        assert counts[logits[row] == MASKED_LOGIT].sum() == 0
        feasible = logits[row] != MASKED_LOGIT
        # chi-square goodness of fit over the feasible actions, fixed seed
        p_value = stats.chisquare(counts[feasible], draws * probs[feasible]).pvalue
        assert p_value > 1e-3, (counts, draws * probs)
    greedy, _ = gumbel_sample(logits, rng, explore=False)
    assert greedy.tolist() == [1, 0]


def test_lean_vector_env_steps_exactly_as_gymnasium_sync_vector_env() -> None:
    from taktline.training.rllib_runner import LeanVectorEnv

    n = 3
    lean = LeanVectorEnv([_make_env() for _ in range(n)])
    ref = DictInfoToList(gym.vector.SyncVectorEnv([_make_env for _ in range(n)]))
    try:
        obs_a, info_a = lean.reset(seed=11)
        obs_b, info_b = ref.reset(seed=11)
        rng = np.random.default_rng(0)
        resets = 0
        for _ in range(400):
            for key in obs_b:
                assert np.array_equal(obs_a[key], obs_b[key]), key
            assert info_a == info_b
            masks = obs_b["action_mask"]
            # an ended env shows an empty mask; its next action is ignored (it resets)
            actions = np.array([rng.choice(np.flatnonzero(m)) if m.any() else 0 for m in masks])
            obs_a, rew_a, term_a, trunc_a, info_a = lean.step(actions)
            obs_b, rew_b, term_b, trunc_b, info_b = ref.step(actions)
            assert np.array_equal(rew_a, rew_b)
            assert np.array_equal(term_a, term_b) and np.array_equal(trunc_a, trunc_b)
            resets += int(np.sum(term_b | trunc_b))
        assert resets >= n, "no episode ended: the test did not see an autoreset"
        assert lean.single_observation_space == ref.single_observation_space
        assert lean.single_action_space == ref.single_action_space
    finally:
        lean.close()
        ref.close()


@pytest.fixture(scope="module")
def runner() -> Iterator[Any]:
    import ray

    from taktline.training import rllib_backend
    from taktline.training.config import validate_config
    from taktline.training.rllib_module import register_env
    from taktline.training.rllib_runner import MaskedEnvRunner

    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        cfg = validate_config(
            tiny_config(
                "runner",
                **{"env.kwargs": dict(SHORT_ENV), "hyperparameters.num_envs_per_env_runner": 3},
            )
        )
        register_env()
        probe = _make_env()
        spec = rllib_backend.network_spec(
            cfg, probe.observation_space["observations"], int(probe.action_space.n)
        )
        config = rllib_backend.ppo_config(cfg, spec, 1)
        assert config.env_runner_cls is MaskedEnvRunner
        made = MaskedEnvRunner(config=config, worker_index=1, num_workers=1)
        yield made
        made.stop()
    finally:
        ray.shutdown()


def _check_episode(runner: Any, episode: Any) -> None:
    from ray.rllib.core.columns import Columns

    episode.validate()
    obs = episode.get_observations(slice(0, len(episode)))
    actions = episode.get_actions(slice(0, len(episode)))
    logits = episode.get_extra_model_outputs(Columns.ACTION_DIST_INPUTS, slice(0, len(episode)))
    logp = episode.get_extra_model_outputs(Columns.ACTION_LOGP, slice(0, len(episode)))
    masks = obs["action_mask"] > 0.5
    assert masks[np.arange(len(actions)), actions].all(), "an infeasible action was sampled"
    with torch.inference_mode():
        torch_logits = runner.module.pi(
            torch.from_numpy(obs["observations"]).float(), torch.from_numpy(masks)
        )
    assert np.allclose(logits, torch_logits.numpy(), atol=1e-4)
    expected = torch.log_softmax(torch_logits, dim=1).numpy()[np.arange(len(actions)), actions]
    assert np.allclose(logp, expected, atol=1e-4)


def test_runner_episodes_carry_the_actors_logits_and_log_probabilities(runner: Any) -> None:
    first = runner.sample(num_timesteps=600)
    steps = sum(len(e) for e in first)
    assert 600 <= steps < 600 + runner.num_envs
    assert any(e.is_done for e in first), "no episode ended within the sample"
    for episode in first:
        _check_episode(runner, episode)
    # the ongoing chunks go on in the next call: same ids, starting where they stopped
    open_chunks = {e.id_: e.t for e in first if not e.is_done}
    second = runner.sample(num_timesteps=60)
    continued = {e.id_: e.t_started for e in second if e.id_ in open_chunks}
    assert continued and all(open_chunks[i] == t for i, t in continued.items())
    timing = runner.timing()
    assert timing["steps"] >= steps + 60
    assert 0 < timing["env_s"] < timing["sample_s"]


def test_runner_samples_whole_episodes_and_greedy_actions(runner: Any) -> None:
    episodes = runner.sample(num_episodes=2, explore=False)
    assert len(episodes) >= 2 and all(e.is_done for e in episodes)
    from ray.rllib.core.columns import Columns

    for episode in episodes:
        logits = episode.get_extra_model_outputs(Columns.ACTION_DIST_INPUTS, slice(0, len(episode)))
        assert np.array_equal(episode.get_actions(slice(0, len(episode))), logits.argmax(axis=1))


def test_random_actions_go_through_rllibs_own_loop(runner: Any) -> None:
    episodes = runner.sample(num_timesteps=40, random_actions=True, force_reset=True)
    assert sum(len(e) for e in episodes) >= 40
    # and the lean loop goes on afterwards
    for episode in runner.sample(num_timesteps=30, force_reset=True):
        _check_episode(runner, episode)


def test_the_env_runner_is_chosen_by_name_and_a_wrong_name_is_refused() -> None:
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

    from taktline.errors import SpecError
    from taktline.training import rllib_backend
    from taktline.training.config import validate_config

    probe = _make_env()
    obs_space, n = probe.observation_space["observations"], int(probe.action_space.n)

    def config_with(name: str) -> Any:
        cfg = validate_config(tiny_config("pick", **{"hyperparameters.env_runner_cls": name}))
        return rllib_backend.ppo_config(cfg, rllib_backend.network_spec(cfg, obs_space, n), 1)

    assert config_with("rllib").env_runner_cls is SingleAgentEnvRunner
    with pytest.raises(SpecError) as err:
        config_with("fast")
    text = str(err.value)
    assert "hyperparameters.env_runner_cls" in text and "'fast'" in text and "'lean'" in text
