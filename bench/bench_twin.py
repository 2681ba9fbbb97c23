"""Benchmark: the open tandem line in taktline vs the same model in SimPy.

Five exponential single-machine stations (service rates 1.0, 1.1, 1.2, 1.0, 1.3), Poisson
arrivals at rate 0.9, unbounded buffers, FIFO; 100,000 jobs each. taktline runs its full engine
(KPIs, event log and an event hook on). Prints jobs simulated per second and the ratio.

    python bench/bench_twin.py [--jobs 100000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

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


def run_taktline(n_jobs: int, seed: int) -> tuple[float, float]:
    from taktline.agents.rules import get_rule
    from taktline.envs.twin import Twin

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    tk, sp = [], []
    for r in range(args.repeats):
        a, fa = run_taktline(args.jobs, r)
        b, fb = run_simpy(args.jobs, r)
        tk.append(a)
        sp.append(b)
        print(
            f"repeat {r}: taktline {a:,.0f} jobs/s (flow {fa:.2f}), simpy {b:,.0f} jobs/s "
            f"(flow {fb:.2f})"
        )
    theory = sum(1 / (m - ARRIVAL_RATE) for m in RATES)
    best_tk, best_sp = max(tk), max(sp)
    print(f"Jackson mean flow time: {theory:.2f}")
    print(
        f"taktline: {best_tk:,.0f} jobs/s   simpy: {best_sp:,.0f} jobs/s   "
        f"ratio taktline/simpy: {best_tk / best_sp:.2f}x (target >= 3x)"
    )


if __name__ == "__main__":
    main()
