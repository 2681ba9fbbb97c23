"""Benchmark: training throughput of SB3 and RLlib on the body-shop env, against the bare env.

Every figure is measured in this one run, so the machine's load hits all of them alike:

* **bare env**: one process steps ``LineDispatch-v0`` (the config ``bodyshop_dispatch``'s env,
  dict observations as RLlib sees them) with uniform feasible actions; measured before and after
  the rest and averaged. Every "vs bare" ratio divides by it.
* **RLlib** (PPO, new API stack, built by ``training.rllib_backend.ppo_config``) with 1 and 2 env
  runners and 1/4/16 envs per runner, on taktline's lean runner (``env_runner_cls=lean``, the
  default) and, as the peer, on RLlib's own ``SingleAgentEnvRunner`` (``env_runner_cls=rllib``):
  - *sampled/s*: env steps the runners return per second of wall time (the runners sample in
    parallel; the steps are counted from the episodes they return);
  - *env share*: seconds inside the envs over the runners' wall time while sampling (lean runner
    only: it times its env steps; ``MaskedEnvRunner.timing``);
  - *grad/s*: minibatch updates per second of the learner (RLlib's ``learner_update_timer`` of
    one ``algo.train()`` iteration; updates = epochs x batch / minibatch);
  - *train/s*: env steps per second of that whole iteration (``batch`` steps sampled, then
    learned from).
* **SB3** MaskablePPO (``training.sb3_backend``'s vec env and policy) with ``DummyVecEnv``
  (in this process) and ``SubprocVecEnv`` (a process per env), 1/4/16 envs: *sampled/s* over the
  rollout phases, *env share* of the whole ``learn`` (time inside the vec env, with the pipe round
  trips for subprocesses: ``TimedVecEnv``), *grad/s* over the update phases, *train/s* overall.

All configs update on the same batch (``--batch`` env steps, minibatch 256, 5 epochs), so the
gradient work per iteration is the same everywhere. Two runners can reach 2x one runner only
where two cores are free (the driver sleeps while they sample).

    python bench/bench_training.py [--quick] [--seconds 4] [--address HOST:PORT]
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import numpy as np

ENV_ID = "taktline/LineDispatch-v0"
MINIBATCH = 256
EPOCHS = 5


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
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        action = int(rng.choice(np.flatnonzero(obs["action_mask"])))
        obs, _, term, trunc, _ = env.step(action)
        steps += 1
        if term or trunc:
            obs, _ = env.reset()
    return steps / (time.perf_counter() - start)


def _steps(parts: list[Any]) -> int:
    return sum(len(e) for part in parts for e in (part if isinstance(part, list) else [part]))


def rllib_row(runner: str, runners: int, per_runner: int, batch: int, seconds: float) -> dict:
    """One RLlib configuration's figures (see the module docstring)."""
    import gymnasium as gym

    from taktline.training import rllib_backend
    from taktline.training.config import load_config
    from taktline.training.rllib_module import make_env, register_env

    cfg = load_config(
        "bodyshop_dispatch",
        [
            f"hyperparameters.env_runner_cls={runner}",
            f"hyperparameters.num_env_runners={runners}",
            f"hyperparameters.num_envs_per_env_runner={per_runner}",
            f"hyperparameters.train_batch_size_per_learner={batch}",
            f"hyperparameters.batch_size={MINIBATCH}",
            f"hyperparameters.n_epochs={EPOCHS}",
            "progress=false",
        ],
    )
    register_env()
    probe = make_env({"env_id": ENV_ID, "env_kwargs": dict(cfg.env.kwargs)})
    assert isinstance(probe.action_space, gym.spaces.Discrete)
    spec = rllib_backend.network_spec(
        cfg, probe.observation_space["observations"], int(probe.action_space.n)
    )
    algo = rllib_backend.ppo_config(cfg, spec, rllib_backend.cluster_cpus()).build_algo()
    group = algo.env_runner_group

    def timings() -> list[dict[str, float]] | None:
        out = group.foreach_env_runner(
            lambda r: r.timing() if hasattr(r, "timing") else None, local_env_runner=False
        )
        return None if any(t is None for t in out) else out

    def sample_round() -> int:
        return _steps(group.foreach_env_runner(lambda r: r.sample(), local_env_runner=False))

    try:
        sample_round()  # warm-up: env creation, first resets
        before, steps, start = timings(), 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            steps += sample_round()
        wall = time.perf_counter() - start
        after = timings()
        share = None
        if before is not None and after is not None:
            env_s = sum(b["env_s"] - a["env_s"] for a, b in zip(before, after, strict=True))
            share = env_s / (wall * runners)
        start = time.perf_counter()
        result = algo.train()
        iteration_s = time.perf_counter() - start
        updates = EPOCHS * math.ceil(batch / MINIBATCH)
        learn_s = float(result.get("timers", {}).get("learner_update_timer") or float("nan"))
        return {
            "sampled": steps / wall,
            "share": share,
            "grad": updates / learn_s,
            "train": batch / iteration_s,
        }
    finally:
        algo.stop()


def sb3_row(vec: str, n_envs: int, batch: int) -> dict:
    """One SB3 configuration's figures: two rollout+update iterations of ``batch`` steps."""
    from stable_baselines3.common.callbacks import BaseCallback

    from taktline.training import sb3_backend
    from taktline.training.config import load_config
    from taktline.training.sb3_policies import sb3_policy_setup

    n_steps = max(1, batch // n_envs)
    cfg = load_config(
        "bodyshop_dispatch",
        [
            f"vec_env={vec}",
            f"n_envs={n_envs}",
            f"hyperparameters.n_steps={n_steps}",
            f"hyperparameters.batch_size={MINIBATCH}",
            f"hyperparameters.n_epochs={EPOCHS}",
            "progress=false",
        ],
    )
    venv = sb3_backend._vec_env(cfg, cfg.seed)
    timed = venv
    while not isinstance(timed, sb3_backend.TimedVecEnv):
        timed = timed.venv

    class Phases(BaseCallback):
        """Wall time of the rollout phases (the rest of ``learn`` is the updates)."""

        def __init__(self) -> None:
            super().__init__()
            self.collect = 0.0
            self._t = 0.0

        def _on_rollout_start(self) -> None:
            self._t = time.perf_counter()

        def _on_rollout_end(self) -> None:
            self.collect += time.perf_counter() - self._t

        def _on_step(self) -> bool:
            return True

    try:
        policy, policy_kwargs, _ = sb3_policy_setup(
            cfg.policy.network,
            cfg.policy.kwargs,
            venv.observation_space,
            venv.action_space,
            cfg.algorithm,
        )
        algo = sb3_backend._algorithm(cfg)
        model = algo(
            policy,
            venv,
            policy_kwargs=policy_kwargs,
            seed=cfg.seed,
            device="cpu",
            verbose=0,
            **cfg.hyperparameters,
        )
        model.learn(n_steps * n_envs)  # warm-up: first resets, torch's first update
        phases, env_before, steps_before = Phases(), timed.env_s, timed.steps
        start = time.perf_counter()
        model.learn(2 * n_steps * n_envs, callback=phases, reset_num_timesteps=False)
        wall = time.perf_counter() - start
        steps = timed.steps - steps_before
        updates = 2 * EPOCHS * math.ceil(n_steps * n_envs / MINIBATCH)
        return {
            "sampled": steps / phases.collect,
            "share": (timed.env_s - env_before) / wall,
            "grad": updates / (wall - phases.collect),
            "train": steps / wall,
        }
    finally:
        venv.close()


def main() -> None:
    """Print one table of rates and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer configurations, shorter")
    parser.add_argument("--seconds", type=float, default=4.0, help="sampling time per config")
    parser.add_argument("--batch", type=int, default=4096, help="env steps per update")
    parser.add_argument("--address", default=None, help="Ray cluster (default: local Ray)")
    args = parser.parse_args()

    import torch

    from taktline.training.rllib_backend import cluster_cpus, connect

    torch.set_num_threads(1)
    seconds = 2.0 if args.quick else args.seconds
    kwargs = env_kwargs()
    connect(args.address)
    print(
        f"body-shop dispatch ({ENV_ID}, {kwargs.get('action_mode')} actions); Ray with "
        f"{cluster_cpus()} CPUs; updates on {args.batch} steps, minibatch {MINIBATCH}, "
        f"{EPOCHS} epochs"
    )
    bare_before = bare_rate(kwargs, seconds)
    envs = (1, 16) if args.quick else (1, 4, 16)
    rows: list[tuple[str, int, int, dict]] = []
    peers = [(1, 1)] if args.quick else [(1, 1), (1, 16)]
    for runners, per in peers:
        rows.append(
            (
                "RLlib, RLlib's runner",
                runners,
                per,
                rllib_row("rllib", runners, per, args.batch, seconds),
            )
        )
    for runners in (1, 2):
        for per in envs:
            rows.append(
                (
                    "RLlib, lean runner",
                    runners,
                    per,
                    rllib_row("lean", runners, per, args.batch, seconds),
                )
            )
    for vec, counts in (("dummy", envs), ("subproc", tuple(n for n in envs if n > 1))):
        for n in counts:
            rows.append((f"SB3, {vec}", 1 if vec == "dummy" else n, n, sb3_row(vec, n, args.batch)))
    bare = (bare_before + bare_rate(kwargs, seconds)) / 2

    print(
        f"{'path':<24}{'procs':>6}{'envs':>6}{'sampled/s':>11}{'vs bare':>9}{'env share':>11}"
        f"{'grad/s':>8}{'train/s':>9}"
    )
    print(f"{'bare env (1 process)':<24}{1:>6}{1:>6}{bare:>11.0f}{1.0:>9.2f}{1.0:>11.2f}")
    for name, procs, per, r in rows:
        share = "n/a" if r["share"] is None else f"{r['share']:.2f}"
        print(
            f"{name:<24}{procs:>6}{per:>6}{r['sampled']:>11.0f}{r['sampled'] / bare:>9.2f}"
            f"{share:>11}{r['grad']:>8.1f}{r['train']:>9.0f}"
        )
    lean = {(p, e): r for n, p, e, r in rows if n == "RLlib, lean runner"}
    for per in envs:
        ratio = lean[(2, per)]["sampled"] / lean[(1, per)]["sampled"]
        print(f"lean runner, {per} env(s) each: 2 runners / 1 runner = {ratio:.2f}x")


if __name__ == "__main__":
    main()
