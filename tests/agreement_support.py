"""Helpers of the decide-agreement test: random lines and job shops, episode walks, a tally.

At a decision point three parties answer the same question, "which job starts next?":

* the **env**: ``LineDispatch-v0`` with ``action_mode="rule"`` dispatches what rule ``r`` picks
  when the action is ``r``'s index (read off the twin's own ``start``/``setup`` event);
  ``JobShop-v0`` schedules the job ``RulePolicy(r).choose`` picks on the live state;
* ``RulePolicy(r).decide(snapshot)`` on the env's snapshot;
* a live server (uvicorn over HTTP) asked with the snapshot's JSON.

In job shops the rule's own schedule builder
(:func:`taktline.agents.jobshop_dispatch.dispatch`) answers too. The walks here collect the
in-process answers; the test asks the server and compares them all.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from taktline.agents.jobshop_dispatch import dispatch
from taktline.agents.policies import RulePolicy
from taktline.envs.env_jobshop import JobShopEnv
from taktline.envs.env_line import LineDispatchEnv
from taktline.envs.jobshop import generators
from taktline.envs.jobshop.instance import JobShopInstance
from taktline.envs.spec import LineSpec, parse_spec
from taktline.errors import PolicyError

Key = tuple[Any, ...]
"""What makes two decisions the same: ``(station, machine, job)`` on a line,
``(machine, job, operation)`` in a job shop."""

LINE_KEYS = ("station", "machine", "job")
JOBSHOP_KEYS = ("machine", "job", "operation")


# ---- strategies ------------------------------------------------------------------------------
def _times(low: int, high: int) -> st.SearchStrategy[dict[str, Any]]:
    """Processing, setup or repair times; integer-valued constants make ties (the tie-break
    decides then), the others draw."""
    return st.one_of(
        st.integers(low, high).map(lambda v: {"dist": "deterministic", "value": float(v)}),
        st.integers(max(low, 1), high).map(lambda m: {"dist": "exponential", "mean": float(m)}),
        st.tuples(st.integers(low, high), st.integers(0, 3)).map(
            lambda t: {"dist": "uniform", "low": float(t[0]), "high": float(t[0] + t[1])}
        ),
        st.tuples(st.integers(low, high), st.integers(1, 3)).map(
            lambda t: {
                "dist": "triangular",
                "low": float(t[0]),
                "mode": t[0] + t[1] / 2,
                "high": float(t[0] + t[1]),
            }
        ),
    )


@st.composite
def _station(draw: st.DrawFn, name: str, families: list[str]) -> dict[str, Any]:
    station: dict[str, Any] = {
        "name": name,
        "machines": draw(st.integers(1, 3)),
        "buffer_capacity": draw(st.one_of(st.none(), st.integers(0, 6))),
    }
    if draw(st.booleans()):
        station["failures"] = {
            "time_to_failure": {"dist": "exponential", "mean": float(draw(st.integers(20, 200)))},
            "time_to_repair": draw(_times(1, 8)),
            "basis": draw(st.sampled_from(["busy", "calendar"])),
        }
    if draw(st.booleans()):
        matrix: dict[str, dict[str, Any]] = {}
        for a, b in ((a, b) for a in families for b in families if a != b):
            if not draw(st.booleans()):  # else the default applies to this change of family
                matrix.setdefault(a, {})[b] = draw(_times(0, 4))
        station["setups"] = {
            "default": draw(_times(0, 3)),
            "matrix": matrix,
            "first": draw(st.booleans()),
        }
    return station


@st.composite
def line_cases(draw: st.DrawFn) -> tuple[LineSpec, int]:
    """A random valid line and an episode seed: parallel machines, finite and unbounded
    buffers, breakdowns, sequence-dependent setups between families, due dates, and Poisson
    arrivals at 60-95 % of the bottleneck's rate (or a closed loop), so queues form."""
    families = [f"f{k}" for k in range(draw(st.integers(2, 3)))]
    n_stations = draw(st.integers(1, 4))
    stations = [draw(_station(f"s{i}", families)) for i in range(n_stations)]
    products = []
    for p in range(draw(st.integers(2, 4))):
        # a flow line: each product visits some stations in line order (no re-entry, so finite
        # buffers cannot deadlock)
        route = draw(
            st.lists(st.integers(0, n_stations - 1), min_size=1, max_size=n_stations, unique=True)
        )
        product: dict[str, Any] = {
            "name": f"p{p}",
            "family": families[p % len(families)],  # setups happen between products
            "routing": [
                {"station": f"s{i}", "processing_time": draw(_times(1, 6))} for i in sorted(route)
            ],
        }
        allowance = draw(st.one_of(st.none(), st.integers(5, 80)))
        if allowance is not None:
            product["due_date_allowance"] = float(allowance)
        products.append(product)
    data: dict[str, Any] = {"name": "agreement", "stations": stations, "products": products}
    mix = {p["name"]: float(draw(st.integers(1, 4))) for p in products}
    if draw(st.integers(0, 3)) == 0:
        data["arrivals"] = {"kind": "closed", "wip": draw(st.integers(2, 12)), "mix": mix}
    else:
        probe = parse_spec({**data, "arrivals": {"kind": "poisson", "rate": 1e-9, "mix": mix}})
        load = draw(st.integers(60, 95)) / 100
        rate = load * probe.bottleneck_rate()
        data["arrivals"] = {"kind": "poisson", "rate": rate, "mix": mix}
    return parse_spec(data), draw(st.integers(0, 2**16))


@st.composite
def jobshop_cases(draw: st.DrawFn) -> tuple[JobShopInstance, str]:
    """A random job shop and a scheme: classical (every machine once), random routings, or
    flexible with two machine alternatives per operation; sometimes with release and due
    dates."""
    kind = draw(st.sampled_from(["taillard_like", "random_routing", "flexible"]))
    n_jobs = draw(st.integers(3, 8))
    n_machines = draw(st.integers(2, 5))
    seed = draw(st.integers(0, 2**16))
    if kind == "taillard_like":
        inst = generators.taillard_like(n_jobs, n_machines, rng=seed, time_range=(1, 20))
    elif kind == "random_routing":
        inst = generators.random_routing(
            n_jobs, n_machines, rng=seed, time_range=(1, 20), recirculation=draw(st.booleans())
        )
    else:
        inst = flexible_shop(n_jobs, n_machines, seed)
    if draw(st.booleans()):
        inst = generators.with_release_and_due_dates(
            inst, rng=seed, release_span=draw(st.sampled_from([0.0, 0.5])), due_factor=1.5
        )
    return inst, draw(st.sampled_from(["active", "non-delay"]))


def flexible_shop(n_jobs: int, n_machines: int, seed: int) -> JobShopInstance:
    """A flexible job shop with exactly two machine alternatives per operation."""
    return generators.flexible(n_jobs, n_machines, rng=seed, machines_per_op=(2, 2))


# ---- walking episodes ------------------------------------------------------------------------
ENV = "env"
DECIDE = "RulePolicy.decide"
RUNNER = "jobshop_dispatch.dispatch"


@dataclass(frozen=True)
class Point:
    """One decision point: the env's snapshot (as it gave it) and each party's answer."""

    snapshot: Any
    answers: dict[str, Key]

    def body(self) -> dict[str, Any]:
        """The snapshot as the JSON body a plant would post."""
        snap = self.snapshot
        return snap.model_dump(mode="json") if hasattr(snap, "model_dump") else dict(snap)


def decision_key(decision: Any, keys: tuple[str, ...]) -> Key:
    """The fields of a decision (a dict or a model) that say what it does."""
    d = decision.model_dump() if hasattr(decision, "model_dump") else dict(decision)
    if d.get("kind") != "dispatch":
        return ("not a dispatch", d.get("kind"))
    return tuple(d.get(k) for k in keys)


def _decide_key(policy: RulePolicy, snapshot: Any, keys: tuple[str, ...]) -> Key:
    try:
        return decision_key(policy.decide(snapshot), keys)
    except Exception as exc:  # an error at a decision point is a disagreement, and counted
        return ("error", f"{type(exc).__name__}: {exc}")


def walk_line(spec: LineSpec, seed: int, rule: str, horizon: float, most: int) -> list[Point]:
    """The first ``most`` decision points of a ``LineDispatch-v0`` episode in which every
    action is ``rule``'s index; the env's answer is the job the twin starts on the action
    (none when no queue of two jobs forms before the horizon)."""
    env = LineDispatchEnv(line=spec, horizon=horizon, action_mode="rule")
    action = env.codec.rules.index(rule)
    policy = RulePolicy(rule)
    try:
        env.reset(seed=seed)
    except PolicyError as exc:  # a quiet line: no queue of two before the horizon
        if "no decision arises" in str(exc):
            return []
        raise
    twin = env.twin
    assert twin is not None
    started: list[Key] = []

    def on_event(t: float, kind: str, job: int, station: int, machine: int) -> None:
        if kind in ("setup", "start"):
            started.append((twin.stations[station].name, twin.machines[machine].name, f"J-{job}"))

    twin.hooks.append(on_event)
    points: list[Point] = []
    done = False
    while not done and len(points) < most:
        snapshot = env.snapshot()
        decided = _decide_key(policy, snapshot, LINE_KEYS)
        started.clear()
        _, _, terminated, truncated, _ = env.step(action)
        done = terminated or truncated
        env_key = started[0] if started else ("no job started",)
        points.append(Point(snapshot, {ENV: env_key, DECIDE: decided}))
    return points


def walk_jobshop(instance: JobShopInstance, scheme: str, rule: str) -> list[Point]:
    """Every decision point (two or more candidates) of a ``JobShop-v0`` episode in which
    ``RulePolicy(rule).choose`` picks each action.

    The env's answer is that job, on the decision machine, with its next operation. The rule
    also builds the schedule on the live state by itself
    (:func:`taktline.agents.jobshop_dispatch.dispatch`); while that schedule and the env's are
    the same so far, its next operation is a third answer (after they part, the states differ
    and it has nothing more to say: a parting counts once).
    """
    env = JobShopEnv(instance=instance, scheme=scheme)
    policy = RulePolicy(rule)
    runner = dispatch(instance, rule, scheme).schedule
    obs, _ = env.reset(seed=0)
    state = env.state
    assert state is not None
    points: list[Point] = []
    done = state.done  # every decision may have been forced
    while not done:
        snapshot = env.snapshot()
        answers = {DECIDE: _decide_key(policy, snapshot, JOBSHOP_KEYS)}
        so_far = state.schedule
        if runner[: len(so_far)] == so_far:
            nxt = runner[len(so_far)]
            answers[RUNNER] = (nxt.machine, nxt.job, nxt.op)
        job = policy.choose(env, obs, env.action_masks())
        answers[ENV] = (state.candidate_machine, job, state.next_op[job])
        obs, _, done, _, _ = env.step(job)
        points.append(Point(snapshot, answers))
    return points


# ---- counting ----------------------------------------------------------------------------------
@dataclass
class Tally:
    """Decisions and disagreements per (kind, rule), with the first few disagreements."""

    decisions: Counter[tuple[str, str]] = field(default_factory=Counter)
    disagreements: Counter[tuple[str, str]] = field(default_factory=Counter)
    parties: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def add(self, kind: str, rule: str, where: str, answers: dict[str, Key]) -> None:
        """Count one decision point; a disagreement when the answers are not all one (each
        party that differs from the env is counted too)."""
        self.decisions[kind, rule] += 1
        if len(set(answers.values())) == 1:
            return
        self.disagreements[kind, rule] += 1
        for party, key in answers.items():
            if key != answers[ENV]:
                self.parties[kind, rule, party] += 1
        if len(self.examples) < 8:
            said = ", ".join(f"{party} {key}" for party, key in answers.items())
            self.examples.append(f"{kind} {rule} {where}: {said}")

    def total(self, counter: Counter[Any], kind: str | None = None) -> int:
        """The sum of ``counter`` (over one ``kind`` if given)."""
        return sum(n for k, n in counter.items() if kind is None or k[0] == kind)

    def summary(self) -> str:
        """``agreement: lines N decisions, jobshops M decisions, disagreements K``."""
        return (
            f"agreement: lines {self.total(self.decisions, 'line')} decisions, jobshops "
            f"{self.total(self.decisions, 'jobshop')} decisions, disagreements "
            f"{self.total(self.disagreements)}"
        )

    def report(self) -> str:
        """The summary, the disagreements per kind and rule (and with whom), the first ones."""
        rows = []
        for (kind, rule), n in sorted(self.decisions.items()):
            bad = self.disagreements[kind, rule]
            if bad:
                who = ", ".join(
                    f"{party} {c}"
                    for (k, r, party), c in self.parties.items()
                    if (k, r) == (kind, rule)
                )
                rows.append(f"  {kind} {rule}: {bad} of {n} (differ from env: {who})")
        return "\n".join([self.summary(), *rows, *(f"  e.g. {e}" for e in self.examples)])
