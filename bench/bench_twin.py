"""Benchmark: the open tandem line in taktline vs the same model in SimPy.

Five exponential single-machine stations (service rates 1.0, 1.1, 1.2, 1.0, 1.3), Poisson
arrivals at rate 0.9, unbounded buffers, FIFO; 100,000 jobs each. taktline runs its full engine
(KPIs, event log and an event hook on). Prints jobs simulated per second and the ratio.

    python bench/bench_twin.py [--jobs 100000] [--repeats 3]

When the installed twin is compiled (``make install``), the pure-Python source beside it is
measured in the same run too. Last, ``Twin.fork()`` at a decision point of the body shop
(mid-run, under SPT) is timed against building a body-shop twin (target: a tenth or less, since
the lookahead forks at every decision).
"""

from __future__ import annotations

import argparse
import sys
import time
import timeit
from pathlib import Path
from typing import Any

import numpy as np

RATES = (1.0, 1.1, 1.2, 1.0, 1.3)
ARRIVAL_RATE = 0.9


def tandem_spec():  # type: ignore[no-untyped-def]
    from taktline.envs.spec import parse_spec

    return parse_spec(
        {
            "name": "tandem",
            "stations": [{"name": f"s{i}"} for i in range(5)],
            "products": [
                {
                    "name": "p",
                    "routing": [
                        {
                            "station": f"s{i}",
                            "processing_time": {"dist": "exponential", "mean": 1 / r},
                        }
                        for i, r in enumerate(RATES)
                    ],
                }
            ],
            "arrivals": {"kind": "poisson", "rate": ARRIVAL_RATE},
        }
    )


def twin_builds() -> dict[str, Any]:
    """The installed twin module, and the pure-Python one beside it when that is compiled."""
    import importlib.util

    import taktline.envs.twin as installed

    if installed.__file__ is None or installed.__file__.endswith(".py"):
        return {"python": installed}
    source = Path(installed.__file__).with_name("twin.py")
    spec = importlib.util.spec_from_file_location("taktline_twin_python", source)
    assert spec is not None and spec.loader is not None
    pure = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = pure  # dataclasses look their module up there
    spec.loader.exec_module(pure)
    return {"compiled (mypyc)": installed, "python": pure}


def run_taktline(n_jobs: int, seed: int, module: Any) -> tuple[float, float]:
    from taktline.agents.rules import get_rule

    Twin = module.Twin
    spec = tandem_spec()
    count = [0]

    def hook(t: float, kind: str, job: int, station: int, machine: int) -> None:
        count[0] += 1

    start = time.perf_counter()
    twin = Twin(spec, seed, get_rule("FIFO"), log_events=True)
    twin.hooks.append(hook)
    # run until n_jobs have departed: horizon by expected time, then top up
    t = n_jobs / ARRIVAL_RATE
    twin.run(until=t)
    while twin.kpis().completed < n_jobs:
        t += 100.0
        twin.run(until=t)
    elapsed = time.perf_counter() - start
    return twin.kpis().completed / elapsed, twin.kpis().flow_time


def run_simpy(n_jobs: int, seed: int) -> tuple[float, float]:
    import simpy

    rng = np.random.default_rng(seed)
    env = simpy.Environment()
    servers = [simpy.Resource(env, capacity=1) for _ in RATES]
    flows: list[float] = []

    def job(env: simpy.Environment) -> object:
        t0 = env.now
        for res, rate in zip(servers, RATES, strict=True):
            with res.request() as req:
                yield req
                yield env.timeout(rng.exponential(1 / rate))
        flows.append(env.now - t0)

    def source(env: simpy.Environment) -> object:
        for _ in range(n_jobs):
            yield env.timeout(rng.exponential(1 / ARRIVAL_RATE))
            env.process(job(env))

    start = time.perf_counter()
    env.process(source(env))
    env.run()
    elapsed = time.perf_counter() - start
    return len(flows) / elapsed, float(np.mean(flows))


def fork_vs_build(module: Any, repeats: int) -> tuple[float, float]:
    """Seconds per ``Twin(bodyshop)`` and per ``fork()`` of a body-shop twin at a decision
    point mid-run (best of ``repeats`` rounds)."""
    from taktline.envs.priorities import rule_choice
    from taktline.envs.spec import load_spec

    spec = load_spec("bodyshop")
    twin = module.Twin(spec, 0)
    while twin.now < 480.0:  # half a shift, SPT at every dispatch: a line full of work
        req = twin.run_until_decision()
        family = twin.machines[req.machine].last_family
        twin.dispatch(rule_choice("SPT", req.candidates, twin.now, family))
    twin.run_until_decision()
    build = min(timeit.repeat(lambda: module.Twin(spec, 1), number=50, repeat=repeats)) / 50
    fork = min(timeit.repeat(twin.fork, number=500, repeat=repeats)) / 500
    return build, fork


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    builds = twin_builds()
    best: dict[str, float] = {}
    sp = []
    for r in range(args.repeats):
        for name, module in builds.items():
            rate, flow = run_taktline(args.jobs, r, module)
            best[name] = max(best.get(name, 0.0), rate)
            print(f"repeat {r}: taktline {name} {rate:,.0f} jobs/s (flow {flow:.2f})")
        b, fb = run_simpy(args.jobs, r)
        sp.append(b)
        print(f"repeat {r}: simpy {b:,.0f} jobs/s (flow {fb:.2f})")
    theory = sum(1 / (m - ARRIVAL_RATE) for m in RATES)
    best_sp = max(sp)
    print(f"Jackson mean flow time: {theory:.2f}")
    print(f"simpy: {best_sp:,.0f} jobs/s")
    for name, rate in best.items():
        print(
            f"taktline {name}: {rate:,.0f} jobs/s   ratio taktline/simpy: {rate / best_sp:.2f}x"
            " (target >= 3x)"
        )
    for name, module in builds.items():
        build, fork = fork_vs_build(module, max(args.repeats, 3))
        print(
            f"taktline {name}: body shop build {build * 1e3:.3f} ms, fork {fork * 1e3:.3f} ms"
            f"   ratio fork/build: {fork / build:.3f} (target <= 0.1)"
        )
    if "compiled (mypyc)" not in builds:
        print("(the installed twin is pure Python: `make install` compiles it)")


if __name__ == "__main__":
    main()
