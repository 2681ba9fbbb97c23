"""Complete ta01 schedules built per second from random feasible decisions.

Peers, measured in the same run on the same instance:

* **JSSEnv** (``JSSEnv.envs.JssEnv``, Tassel et al. 2021): a random legal action from the
  env's ``action_mask`` at each step until ``done``.
* **job-shop-lib** (``job_shop_lib.dispatching.Dispatcher``): a random operation among
  ``available_operations()``, both without a filter (cheapest) and with the
  dominated/non-immediate filters job-shop-lib's rule solver uses by default.
* **taktline** (``JobShopState``): a random candidate job, active (Giffler–Thompson) and
  non-delay schemes; and ``JobShopBatch``, the same builder vectorised over 1024 schedules
  with numpy (rate = schedules completed per second).

Each builder is reset between schedules (``env.reset()``, ``Dispatcher.reset()``,
``JobShopState.reset()``) and every random pick is ``seq[int(random() * len(seq))]``.

Run: ``python bench/bench_jobshop.py [--seconds 3]``. Prints schedules/s and the ratio of
taktline (active) to the faster peer. Not a test: timings vary by machine.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from taktline.envs.jobshop import JobShopState, load_bundled

BATCH = 1024


def _rate(build: Callable[[], None], seconds: float) -> float:
    build()  # warm-up
    n = 0
    t0 = time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        build()
        n += 1
    return n / elapsed


def _taktline(scheme: str) -> Callable[[], None]:
    state = JobShopState(load_bundled("ta01"), scheme)
    rnd = random.Random(0).random

    def build() -> None:
        state.reset()
        while not state.done:
            cands = state.candidate_jobs
            state.apply(cands[int(rnd() * len(cands))])

    return build


def _taktline_batch(scheme: str, size: int) -> Callable[[], None]:
    import numpy as np

    from taktline.envs.jobshop.batch import JobShopBatch

    batch = JobShopBatch(load_bundled("ta01"), size, scheme)
    rng = np.random.default_rng(0)

    def build() -> None:
        batch.reset()
        while not batch.done:
            batch.apply(batch.random_decisions(rng))

    return build


def _jssenv() -> Callable[[], None]:
    import numpy as np
    from JSSEnv.envs.jss_env import JssEnv

    path = Path(str(resources.files("JSSEnv"))) / "envs" / "instances" / "ta01"
    env = JssEnv({"instance_path": path})
    rnd = random.Random(0).random

    def build() -> None:
        obs = env.reset()
        done = False
        while not done:
            legal = np.flatnonzero(obs["action_mask"])
            obs, _, done, *_ = env.step(int(legal[int(rnd() * len(legal))]))

    return build


def _job_shop_lib(filtered: bool) -> Callable[[], None]:
    from job_shop_lib.benchmarking import load_benchmark_instance
    from job_shop_lib.dispatching import Dispatcher, create_composite_operation_filter

    inst = load_benchmark_instance("ta01")
    filt = (
        create_composite_operation_filter(["dominated_operations", "non_immediate_operations"])
        if filtered
        else None
    )
    dispatcher = Dispatcher(inst, ready_operations_filter=filt)
    rnd = random.Random(0).random

    def build() -> None:
        dispatcher.reset()
        for _ in range(inst.num_operations):
            ops = dispatcher.available_operations()
            dispatcher.dispatch(ops[int(rnd() * len(ops))])

    return build


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    args = parser.parse_args()

    peers: dict[str, float] = {}
    rows: list[tuple[str, float | None, str]] = []
    for label, factory in (
        ("JSSEnv 1.1 (gymnasium)", _jssenv),
        ("job-shop-lib Dispatcher, no filter", lambda: _job_shop_lib(False)),
        ("job-shop-lib Dispatcher, default filters", lambda: _job_shop_lib(True)),
    ):
        try:
            rate = _rate(factory(), args.seconds)
        except Exception as exc:  # a peer that cannot run here is reported, not fatal
            rows.append((label, None, f"could not run: {type(exc).__name__}: {exc}"))
            continue
        peers[label] = rate
        rows.append((label, rate, ""))
    ours = {s: _rate(_taktline(s), args.seconds) for s in ("active", "non-delay")}
    batch = {
        s: BATCH * _rate(_taktline_batch(s, BATCH), args.seconds) for s in ("active", "non-delay")
    }
    best_peer = max(peers.values()) if peers else float("nan")

    print(f"ta01 (15x15), random feasible decisions, {args.seconds:g} s per row")
    print(f"{'builder':44s} {'schedules/s':>12s} {'taktline active / this':>24s}")
    for label, peer_rate, note in rows:
        if peer_rate is None:
            print(f"{label:44s} {'-':>12s}   {note}")
            continue
        print(f"{label:44s} {peer_rate:12.1f} {ours['active'] / peer_rate:23.1f}x")
    for scheme, ours_rate in ours.items():
        print(f"{'taktline JobShopState, ' + scheme:44s} {ours_rate:12.1f}")
    for scheme, ours_rate in batch.items():
        print(f"{f'taktline JobShopBatch x{BATCH}, ' + scheme:44s} {ours_rate:12.1f}")
    print(
        f"vs the faster peer ({best_peer:.1f}/s): JobShopState {ours['active'] / best_peer:.1f}x "
        f"(active) {ours['non-delay'] / best_peer:.1f}x (non-delay); JobShopBatch "
        f"{batch['active'] / best_peer:.1f}x (active) {batch['non-delay'] / best_peer:.1f}x "
        "(non-delay); target >= 5x"
    )


if __name__ == "__main__":
    main()
