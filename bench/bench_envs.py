"""Benchmark: complete JobShop-v0 episodes per second on ta01 vs JSSEnv, and line env steps/s.

Both job-shop envs play Taillard's ta01 (15 jobs x 15 machines) with random feasible actions
drawn the same way (uniform over the mask's feasible actions from one numpy generator). The
two are measured in alternating rounds in the same process, so machine load hits both alike.
JSSEnv (``jssenv``, a dev dependency) counts as a peer with a 7-feature-per-job observation;
taktline's observation has 11 features per job, 4 per machine and 4 global ones.

The line envs (LineDispatch-v0, LineRelease-v0 on the body shop) print their steps/s and what
decoding each action on a snapshot (``codec.decode(env.snapshot(), action)``, the served path)
would add to a step: the envs decode on the twin instead while that costs more than ~15%.

    python bench/bench_envs.py [--seconds 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

Runner = Callable[[float], tuple[int, int]]


def taktline_jobshop(skip_forced: bool) -> tuple[Runner, int]:
    from taktline.envs.env_jobshop import JobShopEnv

    env = JobShopEnv(instance="ta01", skip_forced=skip_forced)
    rng = np.random.default_rng(0)
    seed = [0]

    def run(seconds: float) -> tuple[int, int]:
        episodes = steps = 0
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            env.reset(seed=seed[0])
            seed[0] += 1
            done = False
            while not done:
                action = rng.choice(np.flatnonzero(env.action_masks()))
                _, _, done, _, _ = env.step(action)
                steps += 1
            episodes += 1
        return episodes, steps

    return run, int(np.prod(env.observation_space.shape))


def jssenv_jobshop() -> tuple[Runner, int]:
    import JSSEnv.envs.jss_env as jss

    path = Path(jss.__file__).parent / "instances" / "ta01"
    env = jss.JssEnv({"instance_path": path})
    rng = np.random.default_rng(0)

    def run(seconds: float) -> tuple[int, int]:
        episodes = steps = 0
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            out: Any = env.reset()
            obs = out[0] if isinstance(out, tuple) else out  # old and new reset APIs
            done = False
            while not done:
                action = rng.choice(np.flatnonzero(obs["action_mask"]))
                result = env.step(action)
                obs, done = result[0], bool(result[2] or (len(result) == 5 and result[3]))
                steps += 1
            episodes += 1
        return episodes, steps

    return run, int(np.prod(env.observation_space["real_obs"].shape))


def line_steps(env: Any, seconds: float) -> tuple[float, float]:
    """Steps/s of a line env with random feasible actions, and the seconds per step that
    ``codec.decode(env.snapshot(), action)`` takes (timed apart, not applied)."""
    rng = np.random.default_rng(0)
    steps, seed, decode_s = 0, 0, 0.0
    start = time.perf_counter()
    end = start + seconds
    while time.perf_counter() < end:
        env.reset(seed=seed)
        seed += 1
        done = False
        while not done and time.perf_counter() < end:
            action = int(rng.choice(np.flatnonzero(env.action_masks())))
            t0 = time.perf_counter()
            env.codec.decode(env.snapshot(), action)
            decode_s += time.perf_counter() - t0
            _, _, term, trunc, _ = env.step(action)
            done = term or trunc
            steps += 1
    step_s = (time.perf_counter() - start - decode_s) / steps
    return 1.0 / step_s, decode_s / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per env and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--lines-only", action="store_true", help="only the line envs (skip the job shops)"
    )
    args = parser.parse_args()
    if not args.lines_only:
        jobshops(args)
    line_envs(args.seconds)


def jobshops(args: argparse.Namespace) -> None:
    """JobShop-v0 (and JSSEnv when installed) on ta01, in alternating rounds."""

    runners: dict[str, tuple[Runner, int]] = {
        "taktline JobShop-v0": taktline_jobshop(skip_forced=True),
        "taktline JobShop-v0 (skip_forced=False)": taktline_jobshop(skip_forced=False),
    }
    try:
        runners["JSSEnv jss-v1"] = jssenv_jobshop()
    except Exception as exc:  # the peer is optional: say why it did not run
        print(f"JSSEnv could not run: {type(exc).__name__}: {exc}")
    totals: dict[str, list[float]] = {name: [0, 0, 0.0] for name in runners}
    for _ in range(args.rounds):
        for name, (run, _) in runners.items():
            t0 = time.perf_counter()
            eps, steps = run(args.seconds)
            totals[name][0] += eps
            totals[name][1] += steps
            totals[name][2] += time.perf_counter() - t0

    print(f"ta01 (15x15), random feasible actions, {args.rounds} x {args.seconds:g} s per env")
    print(f"{'env':<42}{'episodes/s':>12}{'steps/s':>10}{'obs floats':>12}")
    rate: dict[str, float] = {}
    for name, (n_eps, n_steps, secs) in totals.items():
        rate[name] = n_eps / secs
        print(f"{name:<42}{n_eps / secs:>12.1f}{n_steps / secs:>10.0f}{runners[name][1]:>12}")
    if "JSSEnv jss-v1" in rate and rate["JSSEnv jss-v1"] > 0:
        peer = rate["JSSEnv jss-v1"]
        for name in rate:
            if name.startswith("taktline"):
                print(f"ratio {name} / JSSEnv: {rate[name] / peer:.2f}x")


def line_envs(seconds: float) -> None:
    """LineDispatch-v0 (job and rule actions) and LineRelease-v0 on the body shop."""
    from taktline.envs.env_line import LineDispatchEnv, LineReleaseEnv

    for name, env in (
        ("LineDispatch-v0", LineDispatchEnv(line="bodyshop")),
        ("LineDispatch-v0 (rule)", LineDispatchEnv(line="bodyshop", action_mode="rule")),
        ("LineRelease-v0", LineReleaseEnv(line="bodyshop")),
    ):
        rate, decode = line_steps(env, seconds)
        print(
            f"{name} on bodyshop: {rate:.0f} steps/s; decoding on a snapshot would add "
            f"{decode * 1e6:.0f} us per step ({decode * rate:.0%} of a step)"
        )


if __name__ == "__main__":
    main()
