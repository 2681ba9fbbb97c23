"""The twin agrees with queueing theory (tolerances from the replication variance).

Each check runs R independent replications with fixed seeds and accepts the theoretical value
when it lies within 4 standard errors of the replication mean (plus 1% for the finite-horizon
bias of a warm-up-deleted estimate). A wrong engine — a lost event, a double-counted wait, a
mis-sampled distribution — moves the estimate by far more than that.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from taktline.agents.rules import get_rule
from taktline.envs.kpis import estimate
from taktline.envs.spec import parse_spec
from taktline.envs.twin import Twin

FIFO = get_rule("FIFO")


def _spec(
    stations: list[dict[str, Any]],
    routing: list[dict[str, Any]],
    arrivals: dict[str, Any],
    **extra: Any,
) -> Any:
    return parse_spec(
        {
            "name": "theory",
            "stations": stations,
            "products": [{"name": "p", "routing": routing}],
            "arrivals": arrivals,
            **extra,
        }
    )


def _replicate(spec: Any, reps: int, horizon: float, warmup: float, kpi: Any) -> np.ndarray:
    vals = []
    for seed in range(reps):
        twin = Twin(spec, seed=1000 + seed, dispatch=FIFO, warmup=warmup)
        twin.run(until=horizon)
        vals.append(kpi(twin.kpis()))
    return np.asarray(vals)


def _assert_agrees(values: np.ndarray, theory: float, what: str) -> None:
    mean = float(values.mean())
    se = float(values.std(ddof=1) / math.sqrt(len(values)))
    tol = 4 * se + 0.01 * abs(theory)
    assert abs(mean - theory) <= tol, (
        f"{what}: simulated {mean:.4f} ± {se:.4f} (se) vs theory {theory:.4f}; "
        f"off by {abs(mean - theory):.4f} > tolerance {tol:.4f}"
    )
    # the tolerance must be tight enough to mean something
    assert tol < 0.15 * abs(theory), f"{what}: tolerance {tol:.4f} too loose for {theory:.4f}"


def test_open_tandem_of_mm1_stations_matches_jackson_flow_time() -> None:
    lam, mus = 0.6, (1.0, 1.2, 0.9, 1.5)
    spec = _spec(
        [{"name": f"s{i}"} for i in range(len(mus))],
        [
            {"station": f"s{i}", "processing_time": {"dist": "exponential", "mean": 1 / m}}
            for i, m in enumerate(mus)
        ],
        {"kind": "poisson", "rate": lam},
    )
    theory = sum(1 / (m - lam) for m in mus)
    flows = _replicate(spec, 12, 6000.0, 600.0, lambda k: k.flow_time)
    _assert_agrees(flows, theory, "Jackson tandem mean flow time")
    thr = _replicate(spec, 6, 6000.0, 600.0, lambda k: k.throughput)
    _assert_agrees(thr, lam, "tandem throughput")


def test_mmc_station_matches_erlang_c_waiting_time() -> None:
    lam, mu, c = 2.4, 1.0, 3
    rho = lam / (c * mu)
    a = lam / mu
    tail = a**c / math.factorial(c) / (1 - rho)
    p_wait = tail / (sum(a**k / math.factorial(k) for k in range(c)) + tail)
    wq = p_wait / (c * mu - lam)
    spec = _spec(
        [{"name": "m", "machines": c}],
        [{"station": "m", "processing_time": {"dist": "exponential", "mean": 1 / mu}}],
        {"kind": "poisson", "rate": lam},
    )
    waits = _replicate(spec, 10, 15000.0, 1000.0, lambda k: k.stations[0].mean_wait)
    _assert_agrees(waits, wq, "M/M/3 mean wait in queue (Erlang C)")
    util = _replicate(spec, 6, 5000.0, 500.0, lambda k: k.stations[0].utilization)
    _assert_agrees(util, rho, "M/M/3 utilization")


def test_mg1_station_matches_pollaczek_khinchine() -> None:
    lam = 0.7
    low, high = 0.5, 1.5  # uniform service: E[S] = 1, E[S^2] = var + 1 = 1/12 + 1
    es, es2 = 1.0, 1.0 + (high - low) ** 2 / 12
    rho = lam * es
    wq = lam * es2 / (2 * (1 - rho))
    spec = _spec(
        [{"name": "m"}],
        [{"station": "m", "processing_time": {"dist": "uniform", "low": low, "high": high}}],
        {"kind": "poisson", "rate": lam},
    )
    waits = _replicate(spec, 12, 6000.0, 600.0, lambda k: k.stations[0].mean_wait)
    _assert_agrees(waits, wq, "M/G/1 mean wait (Pollaczek-Khinchine)")
    lq = _replicate(spec, 12, 6000.0, 600.0, lambda k: k.stations[0].mean_queue)
    _assert_agrees(lq, lam * wq, "M/G/1 mean queue length (Little)")


def _mva(service: list[float], n: int) -> tuple[float, float]:
    q = [0.0] * len(service)
    x = r_tot = 0.0
    for k in range(1, n + 1):
        r = [s * (1 + qi) for s, qi in zip(service, q, strict=True)]
        r_tot = sum(r)
        x = k / r_tot
        q = [x * ri for ri in r]
    return x, r_tot


def test_closed_conwip_loop_matches_mean_value_analysis() -> None:
    service = [1.0, 1.25, 0.8, 0.5]
    for wip in (2, 6):
        spec = _spec(
            [{"name": f"s{i}"} for i in range(len(service))],
            [
                {"station": f"s{i}", "processing_time": {"dist": "exponential", "mean": s}}
                for i, s in enumerate(service)
            ],
            {"kind": "closed", "wip": wip},
        )
        x, cycle = _mva(service, wip)
        thr = _replicate(spec, 10, 5000.0, 500.0, lambda k: k.throughput)
        _assert_agrees(thr, x, f"CONWIP w={wip} throughput (MVA)")
        ct = _replicate(spec, 10, 5000.0, 500.0, lambda k: k.flow_time)
        _assert_agrees(ct, cycle, f"CONWIP w={wip} cycle time (MVA)")
        wips = _replicate(spec, 3, 2000.0, 200.0, lambda k: k.wip)
        assert np.allclose(wips, wip), f"closed loop must hold exactly {wip} jobs, got {wips}"


def test_factory_physics_best_case_is_exact_for_deterministic_balanced_line() -> None:
    # best case: TH = min(w / T0, r_b), CT = max(T0, w / r_b) (Hopp & Spearman, Law 7.1)
    t = 2.0
    n = 4
    r_b, t0 = 1 / t, n * t
    for wip in (1, 2, 4, 6, 9):
        spec = _spec(
            [{"name": f"s{i}"} for i in range(n)],
            [{"station": f"s{i}", "processing_time": t} for i in range(n)],
            {"kind": "closed", "wip": wip},
        )
        twin = Twin(spec, seed=0, dispatch=FIFO, warmup=200.0)
        twin.run(until=2200.0)
        k = twin.kpis()
        best_th = min(wip / t0, r_b)
        best_ct = max(t0, wip / r_b)
        assert math.isclose(k.throughput, best_th, rel_tol=5e-3), (wip, k.throughput, best_th)
        assert math.isclose(k.flow_time, best_ct, rel_tol=1e-6), (wip, k.flow_time, best_ct)


def test_exponential_balanced_line_matches_practical_worst_case() -> None:
    # PWC (Hopp & Spearman): TH = w / (W0 + w - 1) * r_b for balanced single-machine lines
    # with exponential times — the case MVA solves exactly.
    t, n, wip = 1.0, 4, 5
    spec = _spec(
        [{"name": f"s{i}"} for i in range(n)],
        [
            {"station": f"s{i}", "processing_time": {"dist": "exponential", "mean": t}}
            for i in range(n)
        ],
        {"kind": "closed", "wip": wip},
    )
    r_b, w0 = 1 / t, n
    pwc = wip / (w0 + wip - 1) * r_b
    thr = _replicate(spec, 10, 5000.0, 500.0, lambda k: k.throughput)
    _assert_agrees(thr, pwc, "practical-worst-case throughput")
    # variability costs throughput: the whole 95% CI lies strictly between the worst case
    # (one job at a time, w / (w * T0)) and the best case of the same line, min(w / T0, r_b)
    ci = estimate(thr.tolist())
    worst, best = 1 / (n * t), min(wip / (n * t), r_b)
    assert worst < ci.low and ci.high < best, (worst, ci, best)
