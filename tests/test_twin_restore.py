"""Restoring a line twin from a snapshot (``Twin.from_snapshot``, envs/restore.py) and the
conditional samplers it draws remaining times from (envs/distributions.py).

The statistical tests use fixed seeds; each asserts a property of the restore (p > 0.01) and,
with the same test, that a deliberately wrong restore is caught (p < 0.01), so neither can pass
for want of power.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from scipy import integrate, stats

from taktline.agents.rules import get_rule
from taktline.envs.distributions import (
    Deterministic,
    Empirical,
    Exponential,
    Gamma,
    Lognormal,
    Triangular,
    TruncatedNormal,
    Uniform,
    Weibull,
)
from taktline.envs.restore import snapshot_job_ids
from taktline.envs.snapshot import LineSnapshot
from taktline.envs.spec import LineSpec, load_spec
from taktline.envs.twin import ARRIVAL, Twin

FIFO = get_rule("FIFO")
T0 = 300.0  # snapshot time: after the body shop's warm-up (120), mid-run
H = 30.0  # horizon after the snapshot: short, so that the state at T0 still matters
N = 60  # replications per sample


@pytest.fixture(scope="module")
def bodyshop() -> LineSpec:
    return load_spec("bodyshop")


def _snapshot_at(spec: LineSpec, seed: int, t: float = T0) -> tuple[Twin, LineSnapshot]:
    twin = Twin(spec, seed=seed, dispatch=FIFO)
    twin.run(until=t)
    return twin, twin.snapshot()


# ---- the state is restored exactly --------------------------------------------------------
def test_restored_twin_reports_the_snapshot_it_was_restored_from(bodyshop: LineSpec) -> None:
    states: set[str] = set()
    for seed in range(3):
        twin = Twin(bodyshop, seed=seed, dispatch=FIFO)
        for k in range(30):
            twin.run(until=200.0 + 10 * k)
            snap = twin.snapshot()
            states |= {m.state.value for s in snap.stations for m in s.machines}
            restored = Twin.from_snapshot(bodyshop, snap, seed=99, dispatch=FIFO)
            assert restored.snapshot() == snap
    # premise: the snapshots held every machine state (down and setup included)
    assert states == {"idle", "setup", "busy", "blocked", "down"}


def test_a_dict_restores_as_its_model_does(bodyshop: LineSpec) -> None:
    _, snap = _snapshot_at(bodyshop, 3)
    a = Twin.from_snapshot(bodyshop, snap, seed=5, dispatch=FIFO)
    b = Twin.from_snapshot(bodyshop, snap.model_dump(mode="json"), seed=5, dispatch=FIFO)
    a.run(until=T0 + 200)
    b.run(until=T0 + 200)
    assert a.kpis() == b.kpis()


def test_restored_twin_waits_for_the_decision_of_the_snapshot(bodyshop: LineSpec) -> None:
    twin = Twin(bodyshop, seed=4)
    for _ in range(40):  # some decisions in, then snapshot at one
        req = twin.run_until_decision(until=1e9)
        assert req is not None and req.kind == "dispatch"
        twin.dispatch(0)
    req = twin.run_until_decision(until=1e9)
    assert req is not None
    snap = twin.snapshot()
    restored = Twin.from_snapshot(bodyshop, snap, seed=8)
    again = restored.run_until_decision(until=1e9)
    assert again is not None
    assert (again.kind, again.station, again.machine) == (req.kind, req.station, req.machine)
    assert [j.id for j in again.candidates] == [j.id for j in req.candidates]
    assert restored.now == twin.now


def test_restored_jobs_keep_their_ids_and_new_orders_do_not_collide(bodyshop: LineSpec) -> None:
    _, snap = _snapshot_at(bodyshop, 6)
    ids = snapshot_job_ids(snap)
    assert all(ids[name] == int(name[2:]) for name in ids)  # every id is a J-<n>
    restored = Twin.from_snapshot(bodyshop, snap, seed=1, dispatch=FIFO, log_events=True)
    assert set(restored.jobs_in_line) | {j.id for j in restored.pool} == set(ids.values())
    restored.run(until=T0 + 120)
    arrivals = [e["job"] for e in restored.events() if e["event"] == "arrival"]
    assert arrivals, "premise: orders arrived after the restore"
    assert len(set(arrivals)) == len(arrivals)
    assert not set(arrivals) & set(ids)
    assert min(int(a[2:]) for a in arrivals) == max(ids.values()) + 1


def test_a_plant_job_id_gets_a_free_twin_number(bodyshop: LineSpec) -> None:
    _, snap = _snapshot_at(bodyshop, 6)
    body = snap.model_dump(mode="json")
    queue = next(s["queue"] for s in body["stations"] if s["queue"])
    queue[0]["id"] = "ORDER-4711"
    plant = LineSnapshot.model_validate(body)
    ids = snapshot_job_ids(plant)
    biggest = max(v for k, v in ids.items() if k != "ORDER-4711")
    assert ids["ORDER-4711"] == biggest + 1
    restored = Twin.from_snapshot(bodyshop, plant, seed=1, dispatch=FIFO)
    assert ids["ORDER-4711"] in restored.jobs_in_line


def test_remaining_times_given_in_the_snapshot_are_kept(bodyshop: LineSpec) -> None:
    _, snap = _snapshot_at(bodyshop, 2)
    body = snap.model_dump(mode="json")
    busy = _busy(body)
    busy["remaining"] = 7.25  # longer than any operation of the line: not a draw
    down = _first(body, "underbody")["machines"][1]
    assert down["id"] != busy["id"], "premise: two different machines"
    down.update(state="down", remaining=3.5, elapsed=1.0)
    restored = Twin.from_snapshot(bodyshop, body, seed=1, dispatch=FIFO, log_events=True)
    restored.run(until=T0 + 10.0)
    events = restored.events()
    first_finish = next(e for e in events if e["machine"] == busy["id"] and e["event"] == "finish")
    first_repair = next(e for e in events if e["machine"] == down["id"] and e["event"] == "repair")
    assert first_finish["time"] == pytest.approx(T0 + 7.25)
    assert first_repair["time"] == pytest.approx(T0 + 3.5)


def test_the_next_renewal_arrival_is_drawn_given_the_time_since_the_last() -> None:
    spec = load_spec("machining")  # gamma(2, 2.6) interarrival times
    twin = Twin(spec, seed=1, dispatch=FIFO)
    twin.run(until=400.0)
    body = twin.snapshot().model_dump(mode="json")
    since = 6.0
    ref = stats.gamma(2.0, scale=2.6)

    def cdf(y: np.ndarray) -> np.ndarray:
        return (ref.cdf(since + y) - ref.cdf(since)) / ref.sf(since)

    def next_gaps(last: float | None) -> np.ndarray:
        gaps = []
        for seed in range(200):
            restored = Twin.from_snapshot(spec, {**body, "last_arrival": last}, seed=seed)
            # the one pending arrival event (time, seq, kind, machine, token) on the heap
            gaps.append(min(e[0] for e in restored._heap if e[2] == ARRIVAL) - twin.now)
        return np.array(gaps)

    assert stats.kstest(next_gaps(twin.now - since), cdf).pvalue > 0.01
    assert stats.kstest(next_gaps(None), cdf).pvalue < 0.01  # power: a fresh gap is caught


@pytest.mark.parametrize("line", ["serial5", "machining", "conwip_loop"])
def test_other_bundled_lines_restore_exactly(line: str) -> None:
    spec = load_spec(line)
    twin = Twin(spec, seed=2, dispatch=FIFO)
    twin.run(until=(spec.warmup or 0) + 150.0)
    snap = twin.snapshot()
    restored = Twin.from_snapshot(spec, snap, seed=3, dispatch=FIFO)
    assert restored.snapshot() == snap
    restored.run(until=twin.now + 300.0)
    assert restored.kpis().completed > 0


def test_an_order_list_continues_with_the_orders_still_due(bodyshop: LineSpec) -> None:
    body = bodyshop.model_dump(mode="json", by_alias=True)
    body["arrivals"] = {
        "kind": "orders",
        "orders": [
            {"product": p, "release_time": 10.0 * k, "quantity": 2}
            for k, p in enumerate(["sedan", "suv", "wagon"] * 10)
        ],
    }
    body["horizon"], body["warmup"] = None, 0.0  # run() ends when the last order has left
    spec = LineSpec.model_validate(body)
    twin = Twin(spec, seed=1, dispatch=FIFO)
    twin.run(until=150.0)
    done = twin.completed
    restored = Twin.from_snapshot(spec, twin.snapshot(), seed=2, dispatch=FIFO)
    restored.run()
    assert restored.finished
    assert done + restored.completed == 60


# ---- running on is statistically indistinguishable ----------------------------------------
def _window_kpis(twin: Twin) -> tuple[float, float, float]:
    """Cumulative (completed, WIP area, profit) since the statistics started."""
    k = twin.kpis()
    return k.completed, k.wip * k.window, k.profit


def _continued(spec: LineSpec, seed: int) -> np.ndarray:
    """Throughput, mean WIP and profit of the original twin over [T0, T0 + H]."""
    twin = Twin(spec, seed=seed, dispatch=FIFO)
    twin.run(until=T0)
    c0 = _window_kpis(twin)
    twin.run(until=T0 + H)
    c1 = _window_kpis(twin)
    return np.array([(c1[0] - c0[0]) / H, (c1[1] - c0[1]) / H, c1[2] - c0[2]])


def _restored(spec: LineSpec, snap: Any, seed: int) -> np.ndarray:
    twin = Twin.from_snapshot(spec, snap, seed=seed, dispatch=FIFO)
    twin.run(until=T0 + H)
    k = twin.kpis()
    assert k.window == pytest.approx(H)  # statistics start at the snapshot
    return np.array([k.completed / H, k.wip, k.profit])


def _without_queues(snap: LineSnapshot) -> dict[str, Any]:
    body = snap.model_dump(mode="json")
    for s in body["stations"]:
        body["wip"] -= len(s["queue"])
        s["queue"] = []
    return body


def test_running_on_from_a_restored_snapshot_matches_continuing_the_original(
    bodyshop: LineSpec,
) -> None:
    # two independent samples: originals continued (seeds 0..N-1) vs snapshots of other
    # originals (seeds N..2N-1) restored with fresh seeds
    original = np.array([_continued(bodyshop, s) for s in range(N)])
    snaps = [_snapshot_at(bodyshop, N + s)[1] for s in range(N)]
    restored = np.array([_restored(bodyshop, snap, 10_000 + i) for i, snap in enumerate(snaps)])
    emptied = np.array(
        [_restored(bodyshop, _without_queues(s), 10_000 + i) for i, s in enumerate(snaps)]
    )
    report = {}
    for j, kpi in enumerate(["throughput", "wip", "profit"]):
        report[kpi] = (
            stats.ttest_ind(original[:, j], restored[:, j], equal_var=False).pvalue,
            stats.ttest_ind(original[:, j], emptied[:, j], equal_var=False).pvalue,
        )
    ks_ok = stats.ks_2samp(original[:, 1], restored[:, 1]).pvalue
    ks_bad = stats.ks_2samp(original[:, 1], emptied[:, 1]).pvalue
    shown = ", ".join(f"{k} {a:.3g} / {b:.2g}" for k, (a, b) in report.items())
    print(f"Welch p restored / emptied queues: {shown}; KS on WIP {ks_ok:.3g} / {ks_bad:.2g}")
    for kpi, (p_ok, _) in report.items():
        assert p_ok > 0.01, f"{kpi}: restored differs from the original (Welch p = {p_ok:.3g})"
    assert ks_ok > 0.01
    # power: the same tests catch a restore that drops the waiting jobs
    assert report["wip"][1] < 0.01
    assert ks_bad < 0.01


# ---- the conditional samplers --------------------------------------------------------------
def _lognormal_ref(mean: float, std: float) -> Any:
    s2 = math.log1p((std / mean) ** 2)
    return stats.lognorm(math.sqrt(s2), scale=math.exp(math.log(mean) - s2 / 2))


CONDITIONAL = [  # (distribution, elapsed, the same law in scipy)
    (Exponential(mean=240.0), 500.0, stats.expon(scale=240.0)),
    (Weibull(shape=1.5, scale=300.0), 200.0, stats.weibull_min(1.5, scale=300.0)),
    (Weibull(shape=0.7, scale=50.0), 120.0, stats.weibull_min(0.7, scale=50.0)),
    (Gamma(shape=2.0, scale=4.0), 10.0, stats.gamma(2.0, scale=4.0)),
    (Gamma(shape=2.0, scale=4.0), 80.0, stats.gamma(2.0, scale=4.0)),  # the envelope path
    (Gamma(shape=0.5, scale=4.0), 60.0, stats.gamma(0.5, scale=4.0)),  # the envelope path
    (Lognormal(mean=8.0, std=5.0), 12.0, _lognormal_ref(8.0, 5.0)),
    (Lognormal(mean=0.8, std=0.3), 2.5, _lognormal_ref(0.8, 0.3)),
    (TruncatedNormal(mu=3.0, sigma=0.3), 3.4, stats.truncnorm(-10.0, np.inf, 3.0, 0.3)),
    (TruncatedNormal(mu=3.0, sigma=0.3), 4.9, stats.truncnorm(-10.0, np.inf, 3.0, 0.3)),
    (TruncatedNormal(mu=1.0, sigma=1.0), 0.2, stats.truncnorm(-1.0, np.inf, 1.0, 1.0)),
    (Triangular(low=1.0, mode=1.6, high=2.6), 1.2, stats.triang(0.375, 1.0, 1.6)),
    (Triangular(low=1.0, mode=1.6, high=2.6), 2.0, stats.triang(0.375, 1.0, 1.6)),
    (Uniform(low=2.0, high=3.0), 2.7, stats.uniform(2.0, 1.0)),
    (Uniform(low=2.0, high=3.0), 0.5, stats.uniform(2.0, 1.0)),
]


def _ids(cases: list[tuple[Any, ...]]) -> list[str]:
    return [f"{c[0].dist}-{i}" for i, c in enumerate(cases)]


@pytest.mark.parametrize(("dist", "elapsed", "ref"), CONDITIONAL, ids=_ids(CONDITIONAL))
def test_remaining_time_follows_the_conditional_law(dist: Any, elapsed: float, ref: Any) -> None:
    rng = np.random.default_rng(7)
    left = np.array([dist.sample_remaining(rng, elapsed) for _ in range(2000)])
    sf_e = ref.sf(elapsed)

    def cdf(y: np.ndarray) -> np.ndarray:  # P(X - e <= y | X > e)
        return (ref.cdf(elapsed + y) - ref.cdf(elapsed)) / sf_e

    assert left.min() >= 0
    assert stats.kstest(left, cdf).pvalue > 0.01
    if not isinstance(dist, Exponential):  # power: ignoring the elapsed time is caught
        fresh = dist.draw(np.random.default_rng(8), 2000)
        assert stats.kstest(fresh, cdf).pvalue < 0.01


RESIDUAL = [
    (Weibull(shape=1.5, scale=300.0), stats.weibull_min(1.5, scale=300.0)),
    (Gamma(shape=2.0, scale=4.0), stats.gamma(2.0, scale=4.0)),
    (Lognormal(mean=8.0, std=5.0), _lognormal_ref(8.0, 5.0)),
    (Triangular(low=3.5, mode=4.0, high=5.0), stats.triang(1 / 3, 3.5, 1.5)),
    (Exponential(mean=400.0), stats.expon(scale=400.0)),
]


@pytest.mark.parametrize(("dist", "ref"), RESIDUAL, ids=_ids(RESIDUAL))
def test_residual_follows_the_equilibrium_law(dist: Any, ref: Any) -> None:
    rng = np.random.default_rng(11)
    left = np.sort([dist.sample_residual(rng) for _ in range(1000)])
    # the equilibrium CDF (1/mean) * integral of the survival function, on a fine grid
    grid = np.linspace(0.0, ref.ppf(1 - 1e-12), 200_001)
    area = integrate.cumulative_trapezoid(ref.sf(grid), grid, initial=0.0)

    def cdf(x: np.ndarray) -> np.ndarray:
        return np.interp(x, grid, area / ref.mean())

    assert stats.kstest(left, cdf).pvalue > 0.01
    if not isinstance(dist, Exponential):  # power: a fresh draw is not the equilibrium law
        fresh = dist.draw(np.random.default_rng(12), 1000)
        assert stats.kstest(fresh, cdf).pvalue < 0.01


def test_point_and_empirical_laws_condition_exactly() -> None:
    rng = np.random.default_rng(3)
    assert Deterministic(value=5.0).sample_remaining(rng, 2.0) == 3.0
    assert Deterministic(value=5.0).sample_remaining(rng, 9.0) == 0.0  # overdue: ends now
    assert Uniform(low=2.0, high=3.0).sample_remaining(rng, 4.0) == 0.0
    emp = Empirical(samples=(1.0, 2.0, 3.0, 4.0, 4.0))
    left = [emp.sample_remaining(rng, 2.5) for _ in range(3000)]
    assert set(left) == {0.5, 1.5}
    share = left.count(1.5) / len(left)  # 2 of the 3 samples above 2.5 are 4.0
    assert share == pytest.approx(2 / 3, abs=4 * math.sqrt(2 / 9 / len(left)))
    assert emp.sample_remaining(rng, 4.0) == 0.0


@pytest.mark.parametrize("elapsed", [-1.0, math.nan, math.inf])
def test_a_bad_elapsed_time_is_refused(elapsed: float) -> None:
    with pytest.raises(ValueError, match="elapsed"):
        Weibull(shape=1.5, scale=3.0).sample_remaining(np.random.default_rng(0), elapsed)


# ---- bad snapshots --------------------------------------------------------------------------
def _first(body: dict[str, Any], station: str) -> dict[str, Any]:
    return next(s for s in body["stations"] if s["name"] == station)


def _busy(body: dict[str, Any]) -> dict[str, Any]:
    return next(m for s in body["stations"] for m in s["machines"] if m["state"] == "busy")


def _queued(body: dict[str, Any]) -> dict[str, Any]:
    return next(j for s in body["stations"] for j in s["queue"])


BAD = [
    ("stations[0].name", lambda b: b["stations"][0].update(name="paint")),
    ("stations[1].machines[0].id", lambda b: _first(b, "framing")["machines"][0].update(
        id="framing.M9")),
    ("product", lambda b: _queued(b).update(product="truck")),
    ("stations: station 'inspection'", lambda b: b["stations"].pop()),
    ("queue", lambda b: _queued(b).update(step=_queued(b)["step"] + 1)),
    ("state: machine 'hemming.M1' is down", lambda b: _first(b, "hemming")["machines"][0].update(
        state="down", job=None, in_process=None)),
    ("state: machine 'respot.M1' is in setup", lambda b: _first(b, "respot")["machines"][0].update(
        state="setup")),
    ("in_process", lambda b: _busy(b).update(in_process=None)),
    ("wip", lambda b: b.update(wip=b["wip"] + 1)),
    ("family", lambda b: _queued(b).update(family="coupe")),
]  # fmt: skip


@pytest.mark.parametrize(("field", "break_it"), BAD, ids=[f for f, _ in BAD])
def test_a_snapshot_that_does_not_fit_the_line_is_refused_naming_the_field(
    bodyshop: LineSpec, field: str, break_it: Any
) -> None:
    _, snap = _snapshot_at(bodyshop, 1)
    body = snap.model_dump(mode="json")
    break_it(body)
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        Twin.from_snapshot(bodyshop, body, seed=0)
