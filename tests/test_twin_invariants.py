"""Invariants of the engine on random specs (hypothesis): jobs are conserved, time never goes
back, buffers never exceed capacity, a machine holds at most one job, routing order holds."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from taktline.agents.rules import DISPATCH_RULES, get_rule
from taktline.envs.priorities import rule_choice
from taktline.envs.spec import parse_spec
from taktline.envs.twin import BLOCKED, Twin

DISTS = st.one_of(
    st.floats(0.1, 3.0).map(lambda v: {"dist": "deterministic", "value": v}),
    st.floats(0.2, 2.0).map(lambda m: {"dist": "exponential", "mean": m}),
    st.tuples(st.floats(0.1, 1.0), st.floats(0.0, 2.0)).map(
        lambda t: {"dist": "uniform", "low": t[0], "high": t[0] + t[1]}
    ),
)


@st.composite
def line_specs(draw: Any) -> dict[str, Any]:
    n_st = draw(st.integers(1, 4))
    stations = []
    for i in range(n_st):
        station: dict[str, Any] = {
            "name": f"s{i}",
            "machines": draw(st.integers(1, 3)),
            "buffer_capacity": draw(st.one_of(st.none(), st.integers(0, 3))),
        }
        if draw(st.booleans()):
            station["failures"] = {
                "time_to_failure": draw(DISTS),
                "time_to_repair": draw(DISTS),
                "basis": draw(st.sampled_from(["busy", "calendar"])),
            }
        if draw(st.booleans()):
            station["setups"] = {"default": draw(DISTS)}
        stations.append(station)
    products = []
    for p in range(draw(st.integers(1, 3))):
        route = draw(st.lists(st.integers(0, n_st - 1), min_size=1, max_size=5))
        products.append(
            {
                "name": f"p{p}",
                "family": f"f{draw(st.integers(0, 1))}",
                "due_date_allowance": draw(st.floats(1.0, 30.0)),
                "routing": [{"station": f"s{r}", "processing_time": draw(DISTS)} for r in route],
            }
        )
    kind = draw(st.sampled_from(["orders", "closed", "renewal"]))
    if kind == "orders":
        arrivals: dict[str, Any] = {
            "kind": "orders",
            "orders": [
                {
                    "product": f"p{draw(st.integers(0, len(products) - 1))}",
                    "release_time": draw(st.floats(0, 20)),
                }
                for _ in range(draw(st.integers(1, 12)))
            ],
        }
    elif kind == "closed":
        arrivals = {"kind": "closed", "wip": draw(st.integers(1, 8))}
    else:
        arrivals = {"kind": "renewal", "interarrival_time": draw(DISTS)}
    # keep open lines with unbounded buffers stable enough to be accepted
    for s in stations:
        if kind == "renewal" and s["buffer_capacity"] is None:
            s["buffer_capacity"] = 5
    return {"name": "random", "stations": stations, "products": products, "arrivals": arrivals}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=line_specs(), rule=st.sampled_from(DISPATCH_RULES), seed=st.integers(0, 2**16))
def test_engine_invariants_hold_on_random_lines(data: dict[str, Any], rule: str, seed: int) -> None:
    spec = parse_spec(data)
    twin = Twin(spec, seed, get_rule(rule), log_events=True)
    last = [0.0]
    violations: list[str] = []

    def check(t: float, kind: str, job: int, station: int, machine: int) -> None:
        if t < last[0]:
            violations.append(f"time went back from {last[0]} to {t} at {kind}")
        last[0] = t
        for s in twin.stations:
            # a buffer may hold capacity + (machines free at this instant) for zero time
            if len(s.buffer) > s.capacity + len(s.machines):
                violations.append(f"{s.name}: {len(s.buffer)} jobs > capacity {s.capacity}")

    twin.hooks.append(check)
    twin.run(until=150.0)
    assert not violations, violations[:3]
    # every buffer at a decision-free instant respects its capacity
    for s in twin.stations:
        assert len(s.buffer) <= s.capacity or any(m.state == 0 for m in s.machines)
    # conservation: created = in pool + in line + departed
    log = twin.events()
    created = sum(1 for e in log if e["event"] == "arrival")
    departed = sum(1 for e in log if e["event"] == "departure")
    places: list[int] = [j.id for j in twin.pool]
    for s in twin.stations:
        places.extend(j.id for j in s.buffer)
    for m in twin.machines:
        if m.job is not None:
            places.append(m.job.id)
        if m.state == BLOCKED:
            assert m.job is not None
    assert len(places) == len(set(places)), "a job is in two places at once"
    assert created == len(places) + departed
    assert twin.wip == len(places) - len(twin.pool)
    # routing order: the stations where a job in the line started are a prefix of its routing;
    # a departed job started at every station of one product's routing, in order
    routes = {j.id: j.route for j in twin.jobs_in_line.values()}
    started: dict[str, list[str]] = {}
    for e in log:
        if e["event"] == "start":
            started.setdefault(e["job"], []).append(e["station"])
    names = [s.name for s in twin.stations]
    for jid, route in routes.items():
        seq = started.get(f"J-{jid}", [])
        assert seq == [names[r] for r in route[: len(seq)]]
    full_routes = [[p.station for p in product.routing] for product in spec.products]
    departures = [e["job"] for e in log if e["event"] == "departure"]
    for job in departures:
        assert started.get(job) in full_routes, (job, started.get(job), full_routes)
    assert len(set(departures)) == len(departures), "a job departed twice"
    # a machine holds at most one job, and a job is on at most one machine: a setup or start
    # only on a free machine (or the start that ends the same job's setup), a finish only of
    # the job the machine processes, on a machine of the event's station
    holding: dict[str, tuple[str, str]] = {}  # machine -> (job, "setup" | "busy")
    on_machine: dict[str, str] = {}  # job -> machine
    for e in log:
        kind, job, machine = e["event"], e["job"], e["machine"]
        if kind not in ("setup", "start", "finish"):
            continue
        assert machine.startswith(f"{e['station']}.M"), e
        if kind == "finish":
            assert holding.pop(machine, None) == (job, "busy"), e
            del on_machine[job]
            continue
        assert holding.get(machine) in (None, (job, "setup")), (e, holding.get(machine))
        assert on_machine.get(job) in (None, machine), (e, on_machine.get(job))
        holding[machine] = (job, kind if kind == "setup" else "busy")
        on_machine[job] = machine


# both machines of a station with a full buffer come back from repair at one instant while
# orders wait: a random run found the order releases logged before the second FIFO start when
# asked, after it inline (a repair freed room without pulling orders in; the first start did)
REPAIR_FREES_ROOM: dict[str, Any] = {
    "name": "repair-frees-room",
    "stations": [
        {
            "name": "s0",
            "machines": 2,
            "buffer_capacity": 5,
            "failures": {
                "time_to_failure": {"dist": "deterministic", "value": 3.0},
                "time_to_repair": {"dist": "deterministic", "value": 1.6},
                "basis": "calendar",
            },
        }
    ],
    "products": [
        {
            "name": "p0",
            "family": "f0",
            "due_date_allowance": 1.0,
            "routing": [
                {"station": "s0", "processing_time": {"dist": "deterministic", "value": 0.1}}
            ],
        }
    ],
    "arrivals": {"kind": "renewal", "interarrival_time": {"dist": "deterministic", "value": 0.125}},
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=line_specs(), rule=st.sampled_from(DISPATCH_RULES), seed=st.integers(0, 2**16))
@example(data=REPAIR_FREES_ROOM, rule="FIFO", seed=13)
def test_a_rule_inline_decides_as_the_rule_asked_at_every_decision(
    data: dict[str, Any], rule: str, seed: int
) -> None:
    """The kernel's own shortcuts (FIFO at a buffer's head) never change a rule's choice:
    inline it runs exactly as a twin that asks for every decision and answers with the rule."""
    spec = parse_spec(data)
    inline = Twin(spec, seed, get_rule(rule), log_events=True)
    inline.run(until=150.0)
    asked = Twin(spec, seed, log_events=True)
    while (req := asked.run_until_decision(150.0)) is not None:
        family = asked.machines[req.machine].last_family
        asked.dispatch(rule_choice(rule, req.candidates, asked.now, family))
    assert asked.log == inline.log


class _TwoAtATime:
    """A release controller that lets in two orders per release point (asked again, it
    releases two more): how often it is asked shows in the log."""

    name = "TWO"

    def release(self, pool_size: int, wip: int, now: float) -> int:
        return min(2, pool_size)


def test_after_a_decision_inline_the_release_due_comes_first_as_when_asked() -> None:
    """A start at an entry station is a release point; after a decision the twin takes the
    release due before the next machine's decision, whether the rule runs inline or is asked
    (inline used to serve the station's other machines first: fewer releases, other choices)."""
    data = {
        "name": "two-at-a-time",
        "stations": [
            {"name": "s0", "machines": 3, "buffer_capacity": 4},
            {"name": "s1", "machines": 1, "buffer_capacity": 2},
        ],
        "products": [
            {
                "name": "p0",
                "routing": [
                    {"station": "s0", "processing_time": {"dist": "deterministic", "value": 1}},
                    {"station": "s1", "processing_time": {"dist": "exponential", "mean": 0.3}},
                ],
            }
        ],
        "arrivals": {
            "kind": "orders",
            "orders": [{"product": "p0", "release_time": float(i // 6)} for i in range(30)],
        },
    }
    spec = parse_spec(data)
    for seed in range(3):
        inline = Twin(spec, seed, get_rule("SPT"), _TwoAtATime(), log_events=True)
        inline.run(until=100.0)
        asked = Twin(spec, seed, None, _TwoAtATime(), log_events=True)
        while (req := asked.run_until_decision(100.0)) is not None:
            asked.dispatch(rule_choice("SPT", req.candidates, asked.now, None))
        assert asked.log == inline.log


def test_a_repair_pulls_in_the_orders_and_blocked_jobs_its_machine_makes_room_for() -> None:
    """A machine back from repair is room for one more job, as when a finish frees it: the
    orders waiting enter at that instant, before any start, and a job blocked upstream of a
    station with no buffer moves on (it stayed blocked for good, the line deadlocked)."""
    twin = Twin(parse_spec(REPAIR_FREES_ROOM), 13, get_rule("FIFO"), log_events=True)
    twin.run(until=4.6)
    assert twin.log is not None
    # both machines down since 3.0, the buffer full (5), orders waiting: back at 4.6, each
    # machine is room for one more, so two orders enter before the two starts
    assert [(kind, job, m) for t, kind, job, _, m in twin.log if t == 4.6] == [
        ("repair", -1, 0),
        ("repair", -1, 1),
        ("release", 28, -1),
        ("release", 29, -1),
        ("start", 23, 0),
        ("start", 24, 1),
    ]
    no_buffer = {
        "name": "no-buffer-after-repair",
        "stations": [
            {"name": "a", "machines": 1, "buffer_capacity": 3},
            {
                "name": "b",
                "machines": 1,
                "buffer_capacity": 0,
                "failures": {
                    "time_to_failure": {"dist": "deterministic", "value": 0.6},
                    "time_to_repair": {"dist": "deterministic", "value": 0.5},
                    "basis": "calendar",
                },
            },
        ],
        "products": [
            {
                "name": "p",
                "routing": [
                    {"station": "a", "processing_time": {"dist": "deterministic", "value": 0.3}},
                    {"station": "b", "processing_time": {"dist": "deterministic", "value": 0.2}},
                ],
            }
        ],
        "arrivals": {"kind": "renewal", "interarrival_time": {"dist": "deterministic", "value": 1}},
    }
    twin = Twin(parse_spec(no_buffer), 0, get_rule("FIFO"), log_events=True)
    twin.run(until=30.0)
    # one order a time unit, 0.5 of work: every order but the last few leaves
    assert twin.kpis().completed >= 28
    assert twin.machines[0].state != BLOCKED


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=line_specs(), seed=st.integers(0, 2**16), k=st.integers(0, 30))
def test_a_fork_continues_bit_identically_on_random_lines(
    data: dict[str, Any], seed: int, k: int
) -> None:
    spec = parse_spec(data)
    twin = Twin(spec, seed, log_events=True)
    for _ in range(k):
        if twin.run_until_decision(150.0) is None:
            break
        twin.dispatch(len(twin.pending.candidates) - 1)  # type: ignore[union-attr]
    fork = twin.fork()
    for t in (twin, fork):
        while (req := t.run_until_decision(150.0)) is not None:
            t.dispatch(rule_choice("SPT", req.candidates, t.now, None))
    assert fork.log == twin.log
    assert fork.kpis() == twin.kpis()
