"""Deterministic cases match hand-computed schedules exactly."""

from __future__ import annotations

from typing import Any

import pytest

from taktline.agents.rules import get_rule
from taktline.envs.spec import parse_spec
from taktline.envs.twin import Twin


def _orders_spec(
    stations: list[dict[str, Any]], products: list[dict[str, Any]], orders: list[dict[str, Any]]
) -> Any:
    return parse_spec(
        {
            "name": "exact",
            "stations": stations,
            "products": products,
            "arrivals": {"kind": "orders", "orders": orders},
        }
    )


def _run(spec: Any, rule: str = "FIFO") -> Twin:
    twin = Twin(spec, seed=0, dispatch=get_rule(rule), log_events=True)
    twin.run()
    return twin


def _departures(twin: Twin) -> list[float]:
    return [e["time"] for e in twin.events() if e["event"] == "departure"]


def test_two_station_flow_line_matches_hand_schedule() -> None:
    spec = _orders_spec(
        [{"name": "a"}, {"name": "b"}],
        [
            {
                "name": "p",
                "routing": [
                    {"station": "a", "processing_time": 2},
                    {"station": "b", "processing_time": 3},
                ],
            }
        ],
        [{"product": "p", "quantity": 3}],
    )
    twin = _run(spec)
    k = twin.kpis()
    assert _departures(twin) == [5.0, 8.0, 11.0]
    assert k.makespan == 11.0
    assert k.flow_time == pytest.approx(8.0)
    assert k.stations[0].utilization == pytest.approx(6 / 11)
    assert k.stations[1].utilization == pytest.approx(9 / 11)
    assert k.wip == pytest.approx((5 + 8 + 11) / 11)  # Little: area / window


def test_blocking_after_service_with_zero_buffer() -> None:
    spec = _orders_spec(
        [{"name": "a"}, {"name": "b", "buffer_capacity": 0}],
        [
            {
                "name": "p",
                "routing": [
                    {"station": "a", "processing_time": 1},
                    {"station": "b", "processing_time": 3},
                ],
            }
        ],
        [{"product": "p", "quantity": 3}],
    )
    twin = _run(spec)
    k = twin.kpis()
    assert _departures(twin) == [4.0, 7.0, 10.0]
    assert k.stations[0].blocked_share == pytest.approx(4 / 10)  # blocked 2-4 and 5-7
    starts = [(e["time"], e["station"]) for e in twin.events() if e["event"] == "start"]
    assert starts == [(0.0, "a"), (1.0, "a"), (1.0, "b"), (4.0, "a"), (4.0, "b"), (7.0, "b")]


@pytest.mark.parametrize(("rule", "makespan", "setups"), [("FIFO", 6.0, 2), ("SAME", 5.0, 1)])
def test_sequence_dependent_setups(rule: str, makespan: float, setups: int) -> None:
    spec = _orders_spec(
        [{"name": "m", "setups": {"default": 1.0, "matrix": {"a": {"b": 2.0}}}}],
        [
            {"name": "a", "routing": [{"station": "m", "processing_time": 1}]},
            {"name": "b", "routing": [{"station": "m", "processing_time": 1}]},
        ],
        [{"product": "a"}, {"product": "b"}, {"product": "a"}],
    )
    twin = _run(spec, rule)
    k = twin.kpis()
    assert k.makespan == makespan
    assert k.setups == setups


@pytest.mark.parametrize(
    ("basis", "makespan", "downtime"), [("calendar", 24.0, 9.0), ("busy", 26.0, 3.0)]
)
def test_failures_in_calendar_and_busy_time(basis: str, makespan: float, downtime: float) -> None:
    # ttf 4, ttr 3, processing 3; orders at 0 and 20.
    # calendar: down 4-7, 11-14, 18-21 -> job 2 runs 21-24.
    # busy: 3 busy units before t=3, the 4th busy unit ends at 21 -> down 21-24, done at 26.
    spec = _orders_spec(
        [{"name": "m", "failures": {"time_to_failure": 4, "time_to_repair": 3, "basis": basis}}],
        [{"name": "p", "routing": [{"station": "m", "processing_time": 3}]}],
        [{"product": "p"}, {"product": "p", "release_time": 20}],
    )
    twin = _run(spec)
    k = twin.kpis()
    assert k.makespan == makespan
    assert k.stations[0].availability == pytest.approx(1 - downtime / makespan)


def test_energy_and_profit_follow_machine_states() -> None:
    spec = parse_spec(
        {
            "name": "energy",
            "time_unit": "h",
            "stations": [{"name": "m", "power": {"idle_kw": 1.0, "busy_kw": 10.0}}],
            "products": [
                {
                    "name": "p",
                    "revenue": 100.0,
                    "due_date_allowance": 1.0,
                    "routing": [{"station": "m", "processing_time": 2}],
                }
            ],
            "arrivals": {"kind": "orders", "orders": [{"product": "p", "release_time": 1.0}]},
            "costs": {
                "energy_price_per_kwh": 0.5,
                "tardiness_cost_per_time": 7.0,
                "wip_cost_per_job_time": 3.0,
            },
        }
    )
    twin = _run(spec)
    k = twin.kpis()
    assert k.energy_kwh == pytest.approx(1.0 * 1 + 10.0 * 2)  # idle 0-1, busy 1-3
    assert k.total_tardiness == pytest.approx(1.0)  # due 2, done 3
    assert k.profit == pytest.approx(100 - 0.5 * 21 - 7 * 1 - 3 * 2)


def test_same_seed_gives_same_trajectory_bit_for_bit() -> None:
    from taktline.envs.spec import load_spec

    spec = load_spec("bodyshop")
    a = Twin(spec, 7, get_rule("ATC"), log_events=True)
    b = Twin(spec, 7, get_rule("ATC"), log_events=True)
    a.run(400.0)
    b.run(400.0)
    assert a.log == b.log
    c = Twin(spec, 8, get_rule("ATC"), log_events=True)
    c.run(400.0)
    assert c.log != a.log


def test_common_random_numbers_give_every_rule_the_same_orders() -> None:
    from taktline.envs.spec import load_spec

    spec = load_spec("machining")
    arrivals = []
    for rule in ("FIFO", "SPT", "EDD"):
        twin = Twin(spec, 3, get_rule(rule), log_events=True)
        twin.run(600.0)
        arrivals.append([(e["time"], e["job"]) for e in twin.events() if e["event"] == "arrival"])
    assert arrivals[0] == arrivals[1] == arrivals[2]


# ---- twin.apply(decision): what a plant does with a decision ----------------------------------
def _waiting(seed: int = 0) -> Twin:
    from taktline.envs.spec import load_spec

    twin = Twin(load_spec("bodyshop"), seed, external_release=True, review_period=5.0)
    while (req := twin.run_until_decision(500.0)) is not None:
        if req.kind == "dispatch" and len(req.candidates) >= 3:
            return twin
        twin.dispatch(0) if req.kind == "dispatch" else twin.release(len(twin.pool))
    raise AssertionError("no dispatch decision with 3 waiting jobs")  # pragma: no cover


@pytest.mark.parametrize("as_dict", [False, True])
def test_apply_starts_the_job_the_decision_names_as_dispatch_job_does(as_dict: bool) -> None:
    from taktline.envs.decision import Decision

    a, b = _waiting(), _waiting()
    req = a.pending
    assert req is not None
    job = req.candidates[2]
    decision = Decision(
        kind="dispatch",
        station=a.stations[req.station].name,
        machine=a.machines[req.machine].name,
        job=job.name,
    )
    a.apply(decision.model_dump() if as_dict else decision)
    b.dispatch_job(job.id)
    assert a.snapshot() == b.snapshot()
    assert a.machines[req.machine].job is job


def test_apply_releases_the_count_of_a_release_decision() -> None:
    twin = Twin(
        _waiting().spec, 3, dispatch=get_rule("FIFO"), external_release=True, review_period=5.0
    )
    while (req := twin.run_until_decision(500.0)) is not None and len(twin.pool) < 2:
        twin.release(0)
    assert req is not None and req.kind == "release"
    pool, wip = len(twin.pool), twin.wip
    twin.apply({"kind": "release", "count": 1})
    assert (len(twin.pool), twin.wip) == (pool - 1, wip + 1)


@pytest.mark.parametrize(
    ("decision", "error", "words"),
    [
        ({"kind": "release", "count": 1}, "PolicyError", "decision.kind: got 'release'"),
        ({"kind": "dispatch"}, "PolicyError", "decision.job"),
        ({"kind": "dispatch", "job": "J-99999"}, "InfeasibleActionError", "J-99999"),
        ({"kind": "dispatch", "job": "press-3"}, "InfeasibleActionError", "'press-3'"),
        ({"kind": "dispatch", "machine": "x.M9", "job": "J-1"}, "PolicyError", "'x.M9'"),
        ({"kind": "pause"}, "PolicyError", "decision.kind"),
    ],
)
def test_apply_refuses_a_decision_that_does_not_answer_the_request(
    decision: dict[str, Any], error: str, words: str
) -> None:
    import taktline.errors

    twin = _waiting()
    before = twin.snapshot()
    with pytest.raises(getattr(taktline.errors, error)) as info:
        twin.apply(decision)
    assert words in str(info.value)
    assert twin.snapshot() == before  # nothing was done


def test_apply_refuses_a_release_without_a_count_or_below_zero() -> None:
    from taktline.errors import InfeasibleActionError, PolicyError

    twin = Twin(
        _waiting().spec, 3, dispatch=get_rule("FIFO"), external_release=True, review_period=5.0
    )
    assert twin.run_until_decision(500.0) is not None
    with pytest.raises(PolicyError, match=r"decision\.count"):
        twin.apply({"kind": "release"})
    with pytest.raises(InfeasibleActionError, match="count must be >= 0"):
        twin.apply({"kind": "release", "count": -1})


def test_inline_fifo_breaks_a_tie_at_the_head_of_a_queue_as_the_rule_does() -> None:
    """J-1 and J-0 enter c at t=3 in that order (a's start was scheduled first); FIFO's
    tie-break (earliest entry, then lowest id) starts J-0 first, inline as when asked."""
    spec = _orders_spec(
        [{"name": "a"}, {"name": "b"}, {"name": "c"}],
        [
            {
                "name": "P",
                "routing": [
                    {"station": "b", "processing_time": 3},
                    {"station": "c", "processing_time": 1},
                ],
            },
            {
                "name": "Q",
                "routing": [
                    {"station": "a", "processing_time": 3},
                    {"station": "c", "processing_time": 1},
                ],
            },
            {"name": "R", "routing": [{"station": "c", "processing_time": 10}]},
        ],
        [{"product": p, "release_time": 0.0} for p in ("P", "Q", "R")],
    )
    twin = _run(spec, "FIFO")
    at_c = [e["job"] for e in twin.events() if e["event"] == "start" and e["station"] == "c"]
    assert at_c == ["J-2", "J-0", "J-1"]
    queued = [j for j in twin.log or () if j[1] == "finish" and j[0] == 3.0]
    assert [j[2] for j in queued] == [1, 0]  # premise: J-1 entered c's queue first
