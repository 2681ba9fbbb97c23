"""A lean RLlib env runner for taktline's masked envs: the sampling loop without its overhead.

Profiled on the body-shop dispatch env (``bench/bench_training.py`` measures it), RLlib's generic
``SingleAgentEnvRunner`` spent most of a runner's time outside the env: the env-to-module and
module-to-env connector pipelines (tree maps over dict observations, unbatching, tensor and
numpy conversions every step), a forward pass per step on as many torch threads as the machine
has (so two runners fight over the cores), and un-batching the vector env's observations into
per-env dicts before the forward pass. :class:`MaskedEnvRunner` keeps everything else of RLlib's
runner (env creation and vectorisation, env restarts, weight sync, episodes, callbacks, metrics,
fault tolerance) and replaces only the loop:

* the vector env's batched ``{"observations", "action_mask"}`` arrays go straight into the
  actor (:class:`~taktline.training.rllib_module.MaskedPolicyModule`'s taktline network) under
  ``torch.inference_mode`` on one torch thread per runner (each runner holds one CPU);
* the action is drawn in numpy from the masked logits by the Gumbel-max trick on a seeded
  generator, with its log-probability; the logits and log-probability are stored in the
  episodes as ``action_dist_inputs`` and ``action_logp``, exactly what PPO's learner reads;
* episodes are built with ``add_env_reset``/``add_env_step`` as RLlib's runner does (the learner
  and the metrics see the same episodes), cut and returned the same way.

Where the setup is not one this loop understands (random actions, a user's own connector
pipelines, another RLModule, non-dict observations) it hands the call to RLlib's loop, so the
runner is always correct and only sometimes faster.

:meth:`MaskedEnvRunner.timing` gives the seconds spent inside env steps and inside ``sample``,
for the share of a runner's time that is the env (logged as ``time.env_share``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.callbacks.utils import make_callback
from ray.rllib.core.columns import Columns
from ray.rllib.env.env_context import EnvContext
from ray.rllib.env.env_runner import ENV_STEP_FAILURE, NUM_ENV_STEP_FAILURES_LIFETIME
from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner
from ray.rllib.env.single_agent_episode import SingleAgentEpisode
from ray.rllib.utils.metrics import ENV_STEP_TIMER, WEIGHTS_SEQ_NO
from ray.tune.registry import ENV_CREATOR, _global_registry

from taktline.agents.networks import NumpyMLP
from taktline.training.rllib_module import MaskedPolicyModule

logger = logging.getLogger("ray.rllib")

ENV_SECONDS = "taktline_env_s"
"""Runner metric: seconds inside env steps and resets (summed over the iteration)."""
SAMPLE_SECONDS = "taktline_sample_s"
"""Runner metric: seconds inside ``sample`` (summed over the iteration)."""


def gumbel_sample(
    logits: np.ndarray, rng: np.random.Generator, explore: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Actions ``[B]`` drawn from ``softmax(logits)`` (argmax when not exploring) and their
    log-probabilities ``[B]`` (float32).

    Gumbel-max: ``argmax(logits + G)`` with standard Gumbel noise ``G`` is a draw from the
    softmax. Masked logits (``MASKED_LOGIT`` = -1e9) get probability zero: their exp underflows
    to 0 after the row maximum is subtracted, and no Gumbel draw lifts them over a feasible one.
    """
    top = logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(logits - top).sum(axis=1)) + top[:, 0]
    scores = logits + rng.gumbel(size=logits.shape).astype(np.float32) if explore else logits
    actions = scores.argmax(axis=1)
    logp = logits[np.arange(logits.shape[0]), actions] - log_norm
    return actions, logp.astype(np.float32, copy=False)


def numpy_episode(episode: SingleAgentEpisode) -> SingleAgentEpisode:
    """``episode.to_numpy()``, stacking dict observations key by key.

    RLlib stacks a list of dict observations with a tree map over all of them at once, which
    cost about as much per step as the env itself; stacking each key's arrays is the same
    result (keys in sorted order, as the tree map gives them).
    """
    buffer = episode.observations
    data = buffer.data
    if not buffer.finalized and data and isinstance(data[0], dict):
        buffer.data = {k: np.stack([item[k] for item in data]) for k in sorted(data[0])}
        buffer.finalized = True
    return episode.to_numpy()


class LeanVectorEnv(gym.vector.VectorEnv):  # type: ignore[misc]
    """``n`` envs stepped in this process, as gymnasium's ``SyncVectorEnv`` in its default
    next-step autoreset mode and RLlib's ``DictInfoToList``, without their per-step costs.

    The same semantics: ``reset(seed=s)`` seeds env ``i`` with ``s + i``; after an env ends,
    the next ``step`` resets it (its action is ignored; reward 0, not done). Observations come
    back as fresh arrays (one ``np.stack`` per key, nothing shared with the envs: RLlib keeps
    them in its episodes), infos as one dict per env. Gymnasium's vector env instead deep-copies
    its observation buffer and packs the infos into arrays that ``DictInfoToList`` unpacks again,
    which cost about a third of a body-shop step.
    """

    def __init__(self, envs: list[gym.Env[Any, Any]]) -> None:
        self.envs = envs
        self.num_envs = len(envs)
        first = envs[0]
        self.single_observation_space = first.observation_space
        self.single_action_space = first.action_space
        self.observation_space = gym.vector.utils.batch_space(
            first.observation_space, self.num_envs
        )
        self.action_space = gym.vector.utils.batch_space(first.action_space, self.num_envs)
        self.metadata = {
            **dict(first.metadata),
            "autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP,
        }
        self._dict_obs = isinstance(first.observation_space, gym.spaces.Dict)
        self._ended = np.zeros(self.num_envs, dtype=bool)

    def _batch(self, items: list[Any]) -> Any:
        if self._dict_obs:
            return {k: np.stack([ob[k] for ob in items]) for k in items[0]}
        return np.stack(items)

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, list[dict[str, Any]]]:
        if seed is None or isinstance(seed, int):
            seeds = [None if seed is None else seed + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
        pairs = [
            env.reset(seed=s, options=options) for env, s in zip(self.envs, seeds, strict=True)
        ]
        self._ended[:] = False
        return self._batch([p[0] for p in pairs]), [p[1] for p in pairs]

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, list[Any]]:
        n = self.num_envs
        obs: list[Any] = [None] * n
        infos: list[dict[str, Any]] = [{}] * n
        rewards = np.zeros(n, dtype=np.float64)
        terminated = np.zeros(n, dtype=bool)
        truncated = np.zeros(n, dtype=bool)
        for i, env in enumerate(self.envs):
            if self._ended[i]:
                obs[i], infos[i] = env.reset()
                continue
            obs[i], rewards[i], terminated[i], truncated[i], infos[i] = env.step(actions[i])
        np.logical_or(terminated, truncated, out=self._ended)
        return self._batch(obs), rewards, terminated, truncated, infos

    def close_extras(self, **kwargs: Any) -> None:
        for env in self.envs:
            env.close()


class MaskedEnvRunner(SingleAgentEnvRunner):  # type: ignore[misc]
    """RLlib's single-agent env runner with a lean sampling loop; see the module docstring."""

    def __init__(self, *, config: Any, **kwargs: Any) -> None:
        self._env_s = 0.0
        self._sample_s = 0.0
        self._steps = 0
        self._batched_obs: Any = None
        super().__init__(config=config, **kwargs)
        if self.worker_index:  # a remote runner owns one CPU; the driver keeps its setting
            torch.set_num_threads(1)
        seed = config.seed if config.seed is not None else None
        self._rng = np.random.default_rng(
            None if seed is None else [int(seed), int(self.worker_index or 0)]
        )
        self._kernel: NumpyMLP | None = None
        self._kernel_seq = -1

    # ---- what the fast loop understands -----------------------------------------------------
    def _fast_ok(self, random_actions: bool) -> bool:
        cfg = self.config
        return (
            not random_actions
            and isinstance(self.module, MaskedPolicyModule)
            and cfg._env_to_module_connector is None
            and cfg._module_to_env_connector is None
            and isinstance(self.env.single_observation_space, gym.spaces.Dict)
        )

    def timing(self) -> dict[str, float]:
        """Cumulative seconds inside env steps (``env_s``) and ``sample`` (``sample_s``), and
        env steps sampled (``steps``), since the runner started."""
        return {"env_s": self._env_s, "sample_s": self._sample_s, "steps": float(self._steps)}

    # ---- RLlib hooks -----------------------------------------------------------------------
    def make_env(self) -> None:
        """The envs as a :class:`LeanVectorEnv` when RLlib knows the env by a registered name
        and vectorises in this process; otherwise RLlib's own vector env."""
        cfg = self.config
        if not (
            isinstance(cfg.env, str)
            and _global_registry.contains(ENV_CREATOR, cfg.env)
            and str(cfg.gym_env_vectorize_mode).upper().endswith("SYNC")
            and not cfg.remote_worker_envs
        ):
            super().make_env()
            return
        if self.env is not None:
            self.env.close()
        creator = _global_registry.get(ENV_CREATOR, cfg.env)
        context = dict(cfg.env_config)
        envs = [
            creator(
                EnvContext(
                    context,
                    worker_index=self.worker_index,
                    num_workers=self.num_workers,
                    vector_index=i,
                )
            )
            for i in range(cfg.num_envs_per_env_runner)
        ]
        self.env = LeanVectorEnv(envs)
        self.num_envs = self.env.num_envs
        self._needs_initial_reset = True
        make_callback(
            "on_environment_created",
            callbacks_objects=self._callbacks,
            callbacks_functions=cfg.callbacks_on_environment_created,
            kwargs=dict(
                env_runner=self,
                metrics_logger=self.metrics,
                env=self.env.unwrapped,
                env_context=EnvContext(
                    context, worker_index=self.worker_index, num_workers=self.num_workers
                ),
            ),
        )

    def _try_env_reset(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        observations, infos = super()._try_env_reset(*args, **kwargs)
        self._account_env(time.perf_counter() - start)
        self._batched_obs = observations
        return observations, infos

    def _account_env(self, seconds: float) -> None:
        self._env_s += seconds
        self.metrics.log_value(ENV_SECONDS, seconds, reduce="sum")

    def _sample(
        self,
        *,
        num_timesteps: int | None = None,
        num_episodes: int | None = None,
        explore: bool,
        random_actions: bool = False,
        force_reset: bool = False,
    ) -> list[SingleAgentEpisode]:
        start = time.perf_counter()
        try:
            if not self._fast_ok(random_actions):
                kwargs: dict[str, Any] = {"explore": explore, "random_actions": random_actions}
                if num_timesteps is not None:
                    kwargs.update(num_timesteps=num_timesteps, force_reset=force_reset)
                else:
                    kwargs.update(num_episodes=num_episodes)
                out: list[SingleAgentEpisode] = super()._sample(**kwargs)
                self._steps += sum(len(e) for e in out)
                return out
            return self._lean_sample(num_timesteps, num_episodes, explore, force_reset)
        finally:
            took = time.perf_counter() - start
            self._sample_s += took
            self.metrics.log_value(SAMPLE_SECONDS, took, reduce="sum")

    # ---- the loop --------------------------------------------------------------------------
    def _step_envs(self, actions: np.ndarray) -> Any:
        """``env.step``, with RLlib's handling of a failing env (``_try_env_step``) but
        without its per-step timer and counter (the loop logs them once per call)."""
        try:
            return self.env.step(actions)
        except Exception as exc:
            self.metrics.log_value(NUM_ENV_STEP_FAILURES_LIFETIME, 1, reduce="lifetime_sum")
            if not self.config.restart_failed_sub_environments:
                raise RuntimeError(
                    f"env step failed ({type(exc).__name__}: {exc}); set "
                    "fault_tolerance(restart_failed_sub_environments=True) to recreate the env"
                ) from exc
            logger.exception("env step failed; recreating the env runner's envs")
            self.make_env()
            return ENV_STEP_FAILURE

    def _actor(self) -> NumpyMLP | None:
        """The numpy copy of the actor for the current weights (``None``: not an MLP)."""
        if self._kernel_seq != self._weights_seq_no:
            self._kernel = NumpyMLP.from_module(self.module.pi)
            self._kernel_seq = self._weights_seq_no
        return self._kernel

    def set_state(self, state: Any) -> None:
        super().set_state(state)
        self._kernel_seq = -1  # new weights (whatever their sequence number): copy them again

    def _act(self, explore: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Actions, their log-probabilities and the logits for the current batched obs."""
        obs = self._batched_obs
        x = np.asarray(obs["observations"], dtype=np.float32)
        mask = np.asarray(obs["action_mask"]) > 0.5
        kernel = self._actor()
        if kernel is not None:
            logits = kernel(x, mask)
        else:
            with torch.inference_mode():
                logits = self.module.pi(torch.from_numpy(x), torch.from_numpy(mask)).numpy()
        actions, logp = gumbel_sample(logits, self._rng, explore)
        return actions, logp, logits

    def _lean_sample(
        self,
        num_timesteps: int | None,
        num_episodes: int | None,
        explore: bool,
        force_reset: bool,
    ) -> list[SingleAgentEpisode]:
        """RLlib's ``_sample`` loop (same episodes, cuts, callbacks and metrics), lean."""
        ts = eps = env_calls = 0
        env_s = 0.0
        done: list[SingleAgentEpisode] = []
        if (
            force_reset
            or num_episodes is not None
            or self._needs_initial_reset
            or self._batched_obs is None
        ):
            self._reset_envs_and_episodes(explore)
        if num_episodes is not None:
            self._needs_initial_reset = True
        episodes = self._ongoing_episodes
        n = self.num_envs
        keys = ("observations", "action_mask")
        while (ts < num_timesteps) if num_timesteps is not None else (eps < num_episodes):
            actions, logp, logits = self._act(explore)
            started = time.perf_counter()
            results = self._step_envs(actions)
            env_s += time.perf_counter() - started
            env_calls += 1
            if results == ENV_STEP_FAILURE:
                ts = 0
                self._reset_envs_and_episodes(explore)
                episodes = self._ongoing_episodes
                continue
            observations, rewards, terminateds, truncateds, infos = results
            self._batched_obs = observations
            seq = self._weights_seq_no
            starting: list[int] = []
            for i in range(n):
                ob = {k: observations[k][i] for k in keys}
                episode = episodes[i]
                if not episode.is_reset:
                    # the vector env reset this env (autoreset): the step's action was ignored
                    episode.add_env_reset(observation=ob, infos=infos[i])
                    starting.append(i)
                    continue
                ts += 1
                episode.add_env_step(
                    observation=ob,
                    action=int(actions[i]),
                    reward=float(rewards[i]),
                    infos=infos[i],
                    terminated=bool(terminateds[i]),
                    truncated=bool(truncateds[i]),
                    extra_model_outputs={
                        Columns.ACTION_DIST_INPUTS: logits[i],
                        Columns.ACTION_LOGP: logp[i],
                        WEIGHTS_SEQ_NO: seq,
                    },
                )
            for i in range(n):
                if i in starting:
                    self._make_on_episode_callback("on_episode_start", i, episodes)
                    continue
                self._make_on_episode_callback("on_episode_step", i, episodes)
                if episodes[i].is_done:
                    eps += 1
                    self._make_on_episode_callback("on_episode_end", i, episodes)
                    finished = episodes[i]
                    done.append(numpy_episode(finished) if self.episodes_to_numpy else finished)
                    self._new_episode(i, episodes)
                    if num_episodes is not None and eps >= num_episodes:
                        break
        self._done_episodes_for_metrics.extend(done)
        ongoing: list[SingleAgentEpisode] = []
        if num_timesteps is not None:
            continuations = [
                e.cut(len_lookback_buffer=self.config.episode_lookback_horizon) for e in episodes
            ]
            for e in episodes:
                if e.t == 0:
                    continue
                e.validate()
                self._ongoing_episodes_for_metrics[e.id_].append(e)
                ongoing.append(numpy_episode(e) if self.episodes_to_numpy else e)
            self._ongoing_episodes = continuations
        self._account_env(env_s)
        if env_calls:
            # what RLlib's own env-step wrapper logs per step, logged once per call
            self.metrics.log_value(ENV_STEP_TIMER, env_s / env_calls)
            self._log_env_steps(metric=self._metrics_num_try_env_step, num_steps=env_calls)
        if ts > 0:
            self._log_env_steps(metric=self._metrics_num_env_steps_sampled, num_steps=ts)
        self._increase_sampled_metrics(ts, len(done))
        self._steps += ts
        return done + ongoing


RUNNERS: dict[str, type[SingleAgentEnvRunner]] = {
    "lean": MaskedEnvRunner,
    "rllib": SingleAgentEnvRunner,
}
"""The env runners ``hyperparameters.env_runner_cls`` names (default ``lean``)."""
