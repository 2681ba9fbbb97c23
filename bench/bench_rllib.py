"""Benchmark: env steps/s sampled by RLlib with 1 and 2 env runners vs the bare env.

The body-shop dispatch line (the config ``bodyshop_dispatch.yaml``'s env) is stepped three ways
in the same run, so machine load hits all alike:

* **bare**: one process steps the env (dict observations, as RLlib sees them) with uniform
  feasible actions - the peer every RLlib figure is divided by;
* **RLlib, N env runners** (N = 1, 2): ``synchronous_parallel_sample`` on the env runners of a
  PPO algorithm built by :func:`taktline.training.rllib_backend.ppo_config` (the masking
  RLModule chooses the actions, as in training), after one warm-up round.

A ratio below 1 with one runner is the overhead of the distributed path (the RLModule's forward
pass, connectors, episode bookkeeping, object transfer); the gain from 1 to 2 runners is bounded
by the machine's free cores.

    python bench/bench_rllib.py [--steps 4000] [--seconds 5] [--address HOST:PORT]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

ENV_ID = "taktline/LineDispatch-v0"


def env_kwargs() -> dict[str, Any]:
    """The body-shop env of the example training config."""
    from taktline.training.config import load_config

    return dict(load_config("bodyshop_dispatch").env.kwargs)


def bare_rate(kwargs: dict[str, Any], seconds: float) -> float:
    """Env steps/s of one process stepping the env with uniform feasible actions."""
    from taktline.training.rllib_module import make_env

    env = make_env({"env_id": ENV_ID, "env_kwargs": kwargs})
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    steps, end = 0, time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < end:
        action = int(rng.choice(np.flatnonzero(obs["action_mask"])))
        obs, _, term, trunc, _ = env.step(action)
        steps += 1
        if term or trunc:
            obs, _ = env.reset()
    return steps / (time.perf_counter() - start)


def rllib_rate(kwargs: dict[str, Any], runners: int, steps: int, per_runner: int = 1) -> float:
    """Env steps/s sampled by ``runners`` RLlib env runners (``per_runner`` envs each)."""
    import gymnasium as gym
    from ray.rllib.execution.rollout_ops import synchronous_parallel_sample
    from ray.tune.registry import register_env

    from taktline.training import rllib_backend
    from taktline.training.config import load_config
    from taktline.training.rllib_module import make_env

    cfg = load_config(
        "bodyshop_dispatch",
        [
            f"hyperparameters.num_env_runners={runners}",
            f"hyperparameters.num_envs_per_env_runner={per_runner}",
            f"n_envs={runners}",
            "progress=false",
        ],
    )
    register_env(rllib_backend.ENV_NAME, make_env)
    probe = make_env({"env_id": ENV_ID, "env_kwargs": kwargs})
    obs_space = probe.observation_space["observations"]
    assert isinstance(probe.action_space, gym.spaces.Discrete)
    spec = rllib_backend.network_spec(cfg, obs_space, int(probe.action_space.n))
    config = rllib_backend.ppo_config(cfg, spec, rllib_backend.cluster_cpus())
    algo = config.build_algo()
    try:
        group = algo.env_runner_group

        def sample() -> None:
            synchronous_parallel_sample(
                worker_set=group, max_env_steps=steps, _uses_new_env_runners=True, concat=False
            )

        sample()  # warm-up: env creation, first resets, connector setup
        start = time.perf_counter()
        sample()
        return steps / (time.perf_counter() - start)
    finally:
        algo.stop()


def main() -> None:
    """Print the table of rates and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4000, help="steps per RLlib measurement")
    parser.add_argument("--seconds", type=float, default=5.0, help="bare env measurement")
    parser.add_argument("--address", default=None, help="Ray cluster (default: local Ray)")
    parser.add_argument("--envs-per-runner", type=int, default=1, help="vectorized envs each")
    args = parser.parse_args()

    from taktline.training.rllib_backend import cluster_cpus, connect

    kwargs = env_kwargs()
    connect(args.address)
    print(
        f"body-shop dispatch ({ENV_ID}, {kwargs.get('action_mode')} actions); Ray with "
        f"{cluster_cpus()} CPUs"
    )
    bare_before = bare_rate(kwargs, args.seconds)
    rates = {n: rllib_rate(kwargs, n, args.steps, args.envs_per_runner) for n in (1, 2)}
    bare = (bare_before + bare_rate(kwargs, args.seconds)) / 2  # before and after, averaged
    print(f"{'path':<22}{'env steps/s':>12}{'vs bare':>10}")
    print(f"{'bare env (1 process)':<22}{bare:>12.0f}{1.0:>10.2f}")
    for n, rate in rates.items():
        print(
            f"{f'RLlib, {n} env runner' + ('s' if n > 1 else ''):<22}{rate:>12.0f}"
            f"{rate / bare:>10.2f}"
        )
    print(f"2 runners / 1 runner: {rates[2] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
