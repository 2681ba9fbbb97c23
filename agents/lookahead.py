"""Lookahead on twin forks: at a decision, try the candidates on sampled futures of the line.

At a dispatch decision the policy restores ``k`` twins from the snapshot
(:meth:`Twin.from_snapshot <taktline.envs.twin.Twin.from_snapshot>`, each with its own seed: a
*scenario* — what a plant cannot know, the remaining processing times, failure clocks and the
orders still to come, is drawn afresh, nothing is read off the true future), forks each scenario
once per candidate (the same random streams: common random numbers), carries the candidate out,
runs the line for ``horizon`` time units under the ``base`` rule and scores the window
(:func:`window_value`: its profit, with the revenue of the work done on unfinished jobs pro
rata and their tardiness charged as it accrued: what a changeover at a bottleneck costs shows
even when no job finishes inside the window).
The candidate with the best mean wins, but the base rule's own pick is kept unless the winner
beats it by more than ``margin`` standard errors of the paired difference: a search that
cannot tell two jobs apart does what the rule would.

Candidates are the jobs the rules would start (FIFO, SPT, LPT, EDD, MWKR, CR, ATC, SAME),
plus the first-come job of every family waiting (the switch-or-stay choice of setups), without
repeats and at most ``max_candidates``. Release decisions are answered by the base release rule.

The same code answers in three places, always on a :class:`~taktline.envs.snapshot.LineSnapshot`:
``decide(snapshot)`` (serving, and the twin under ``simulate -p 'LOOKAHEAD(...)'``) and
``choose(env, ...)`` in a ``LineDispatch-v0`` env (evaluation), which takes the env's snapshot.
A ``budget_ms`` per decision stops the search after the scenarios done by then (at least two);
when none is done, the base rule's pick is returned with ``note`` saying so. With ``workers > 1``
the scenarios are rolled out in parallel on Ray (the cluster of ``RAY_ADDRESS`` when set, else a
local one).

>>> from taktline.envs.spec import load_spec
>>> from taktline.envs.twin import Twin
>>> policy = LookaheadPolicy.parse("LOOKAHEAD(base=SAME,horizon=30,k=2)")
>>> twin = Twin(load_spec("bodyshop"), seed=3)
>>> _ = twin.run_until_decision()
>>> policy.decide(twin.snapshot()).kind
'dispatch'
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from taktline.agents.policies import (
    Policy,
    RulePolicy,
    _unwrapped,
    dispatch_action,
    line_spec_for,
)
from taktline.envs.decision import Decision
from taktline.envs.snapshot import (
    Candidate,
    LineSnapshot,
    Snapshot,
    as_snapshot,
    line_candidates,
    pending_dispatch,
)
from taktline.errors import PolicyError

if TYPE_CHECKING:
    import gymnasium as gym

    from taktline.envs.spec import LineSpec

DEFAULT_RULES = ("FIFO", "SPT", "LPT", "EDD", "MWKR", "CR", "ATC", "SAME")


@dataclass(frozen=True)
class LookaheadConfig:
    """What the lookahead tries and how hard (the fields of ``LOOKAHEAD(...)``)."""

    base: str = "SAME"
    """The rule that decides in the rollouts after the first decision (and the fallback)."""
    release: str = "IMMEDIATE"
    """The release rule of the rollouts (the line's own: IMMEDIATE, CONWIP(w))."""
    horizon: float = 60.0
    """Rollout length in the spec's time unit."""
    k: int = 8
    """Scenarios (restored twins) per decision; every candidate plays each of them."""
    mode: str = "jobs"
    """``jobs``: try jobs, roll out the base rule; ``rules``: try rules, each rolled out itself
    (the decision is the best rule's pick now)."""
    rules: str = "+".join(DEFAULT_RULES)
    """The rules tried in ``rules`` mode, joined by ``+`` (the base rule is always among them)."""
    objective: str = "work"
    """What a window is worth: ``profit``, ``cost`` (revenue left out) or ``work`` (profit with
    the revenue of work done on unfinished jobs pro rata); :func:`window_value`."""
    margin: float = 3.0
    """Standard errors of the paired difference by which a candidate must beat the base pick."""
    max_candidates: int = 6
    """At most this many distinct jobs are tried."""
    budget_ms: float = 0.0
    """Time budget per decision (0: none); scenarios done by then decide."""
    workers: int = 1
    """Ray tasks the scenarios are split over (1: in this process)."""
    seed: int = 0
    """Seed of the scenarios (each decision draws its own from it and the snapshot's clock)."""
    line: str = ""
    """The line spec (a bundled name or a file) for snapshots posted without an env or twin."""

    def __post_init__(self) -> None:
        checks = [
            ("horizon", self.horizon > 0 and math.isfinite(self.horizon), "a positive time"),
            ("k", self.k >= 1, "an integer >= 1"),
            ("margin", self.margin >= 0 and math.isfinite(self.margin), "a number >= 0"),
            ("objective", self.objective in ("profit", "cost", "work"), "profit, cost or work"),
            ("mode", self.mode in ("jobs", "rules"), "jobs or rules"),
            ("max_candidates", self.max_candidates >= 2, "an integer >= 2"),
            ("budget_ms", self.budget_ms >= 0, "a number >= 0 (0: no budget)"),
            ("workers", self.workers >= 1, "an integer >= 1"),
            ("seed", self.seed >= 0, "an integer >= 0"),
        ]
        for name, ok, want in checks:
            if not ok:
                raise PolicyError(f"LOOKAHEAD {name}: must be {want}, got {getattr(self, name)!r}")

    def label(self) -> str:
        """The reference that builds this config again (defaults left out)."""
        default = LookaheadConfig()
        parts = [
            f"{f.name}={getattr(self, f.name)}"
            for f in fields(self)
            if f.name in ("base", "horizon", "k")
            or getattr(self, f.name) != getattr(default, f.name)
        ]
        return f"LOOKAHEAD({','.join(parts)})"


def split_args(text: str) -> list[str]:
    """Split ``a=1,b=F(x=2,y=3)`` at the commas outside parentheses."""
    out: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
            continue
        depth += (ch == "(") - (ch == ")")
        cur.append(ch)
    if "".join(cur).strip():
        out.append("".join(cur).strip())
    return out


def parse_config(text: str) -> LookaheadConfig:
    """``LOOKAHEAD(base=SAME,horizon=60,k=8)`` -> :class:`LookaheadConfig`.

    Raises:
        PolicyError: naming the parameter, its value and the fix.
    """
    raw = text.strip()
    head, _, rest = raw.partition("(")
    if head.strip().upper() != "LOOKAHEAD" or (rest and not rest.endswith(")")):
        raise PolicyError(
            f"policy {text!r}: expected LOOKAHEAD(base=SAME,horizon=60,k=8), e.g. "
            "'LOOKAHEAD(base=SAME,horizon=60,k=8)'"
        )
    known = {f.name: f for f in fields(LookaheadConfig)}
    values: dict[str, Any] = {}
    for part in split_args(rest[:-1]) if rest else []:
        key, eq, val = part.partition("=")
        key = key.strip().lower()
        if not eq or key not in known:
            raise PolicyError(
                f"LOOKAHEAD: unknown parameter {part!r}; use key=value with keys {', '.join(known)}"
            )
        kind = type(getattr(LookaheadConfig(), key))
        try:
            values[key] = kind(val.strip()) if kind is not int else int(float(val))
        except ValueError:
            raise PolicyError(
                f"LOOKAHEAD {key}: expected a {kind.__name__}, got {val.strip()!r}"
            ) from None
    cfg = LookaheadConfig(**values)
    RulePolicy(cfg.base)  # an unknown base rule is refused here, naming it
    return cfg


# ---- the search: a pure function, so that Ray tasks can run slices of it ----------------------
def score_scenarios(
    spec: LineSpec,
    snapshot: LineSnapshot,
    decisions: Sequence[Decision],
    base: str,
    horizon: float,
    seeds: Sequence[int],
    deadline: float = math.inf,
    release: str = "IMMEDIATE",
    objective: str = "work",
    rollout_rules: Sequence[str] | None = None,
) -> np.ndarray:
    """:func:`window_value` of ``[t, t + horizon]`` after each decision (columns) on each
    scenario (rows), the line run by ``base`` (or by each column's ``rollout_rules``) after it.

    Rows of scenarios not started before ``deadline`` (``time.perf_counter()``) are absent: the
    result has as many rows as scenarios were finished (at least one unless the deadline had
    passed already).
    """
    from taktline.agents.rules import get_release_rule, get_rule
    from taktline.envs.twin import Twin

    names = list(rollout_rules) if rollout_rules is not None else [base] * len(decisions)
    rules = [get_rule(n) if RulePolicy(n).kind == "dispatch" else None for n in names]
    releaser = get_release_rule(release)
    until = snapshot.time + horizon
    rows: list[list[float]] = []
    for seed in seeds:
        if time.perf_counter() > deadline:
            break
        scenario = Twin.from_snapshot(spec, snapshot, seed=int(seed), release=releaser)
        if scenario.run_until_decision() is None:  # the snapshot's decision is gone
            raise PolicyError("snapshot.decision: the restored line waits for no decision")
        row = []
        for d, rule in zip(decisions, rules, strict=True):
            twin = scenario.fork()
            twin.apply(d)
            twin.dispatcher = rule
            twin.run(until)
            row.append(window_value(twin, objective))
        rows.append(row)
    return np.asarray(rows, dtype=float).reshape(len(rows), len(decisions))


def window_value(twin: Any, objective: str = "work") -> float:
    """What a rollout window is worth: its profit with the revenue of the work done on the jobs
    still in the line (``objective="work"``, the default), its profit alone (``"profit"``) or
    minus its costs (``"cost"``: WIP, setups, energy, tardiness); each less the tardiness the
    jobs still in the line have run up by the window's end.

    Tardiness is charged as it accrues, not at the finish only: else a rollout would gain by
    leaving a late job unfinished until the window ends. ``"work"`` also credits the unfinished
    jobs with their revenue in proportion to the work done on them, so time lost at an upstream
    bottleneck (a changeover) counts even when no job finishes in the window. Revenue counts
    what a bottleneck's lost time costs (jobs not finished in the window); ``"cost"`` leaves it
    out, for lines with capacity to spare where finishing short jobs first would only look
    better inside the window.
    """
    k = twin.kpis()
    rate = twin.spec.costs.tardiness_cost_per_time
    now = twin.now
    open_late = 0.0
    credit = 0.0  # "work": the revenue of the work done on jobs still in the line
    revenue_of = [p.revenue for p in twin.spec.products]
    for j in twin.jobs_in_line.values():
        if j.due_date < now:
            open_late += now - j.due_date
        if objective == "work" and j.remwork[0] > 0:
            left = j.remwork[min(j.step, len(j.remwork) - 1)]
            credit += revenue_of[j.product] * (1.0 - left / j.remwork[0])
    for j in twin.pool:
        if j.due_date < now:
            open_late += now - j.due_date
    revenue = k.revenue if objective == "cost" else 0.0
    return float(k.profit - revenue + credit - rate * open_late)


def pick(scores: np.ndarray, base_col: int, margin: float) -> int:
    """The column to take: the best mean, if it beats ``base_col`` by ``margin`` paired standard
    errors; else ``base_col``.

    >>> pick(np.array([[1.0, 3.0], [2.0, 4.1], [1.5, 3.4]]), base_col=0, margin=1.0)
    1
    >>> pick(np.array([[1.0, 3.0], [2.0, 0.0]]), base_col=0, margin=1.0)
    0
    """
    if scores.shape[0] == 0:
        return base_col
    means = scores.mean(axis=0)
    best = int(np.argmax(means))
    if best == base_col:
        return base_col
    d = scores[:, best] - scores[:, base_col]
    if len(d) < 2:
        return best if margin == 0 and d[0] > 0 else base_col
    se = float(np.std(d, ddof=1) / math.sqrt(len(d)))
    return best if float(d.mean()) > margin * se else base_col


def candidate_jobs(
    cands: Sequence[Candidate], now: float, family: str | None, base: str, limit: int
) -> list[int]:
    """Indices of the jobs worth trying: the base rule's pick first, then each rule's pick and
    the first job of each family, without repeats, at most ``limit``."""
    from taktline.agents.rules import get_rule

    picks = [get_rule(base).dispatch(cands, now, family)]
    for name in DEFAULT_RULES:
        picks.append(get_rule(name).dispatch(cands, now, family))
    seen_families: set[str] = set()
    for i, c in enumerate(cands):  # queue order: the first of each family
        if c.family not in seen_families:
            seen_families.add(c.family)
            picks.append(i)
    out: list[int] = []
    for i in picks:
        if i not in out:
            out.append(i)
    return out[:limit]


class LookaheadPolicy(Policy):
    """Chooses by rolling candidates out on restored twins; see the module docstring.

    Args:
        config: What to try and how hard.
        spec: The line; else ``config.line`` is loaded when a snapshot comes without an env.
    """

    def __init__(self, config: LookaheadConfig | None = None, spec: LineSpec | None = None) -> None:
        self.config = config or LookaheadConfig()
        self.spec = spec
        self.base = RulePolicy(self.config.base)
        self.name = self.config.label()
        self.stats = {"decisions": 0, "searched": 0, "changed": 0, "deadline": 0}
        self.last_gain = 0.0
        """The last decision's estimated gain over the base rule's job (the mean objective over
        the scenarios; 0 where it kept the base rule's job): imitation weights by it."""

    @classmethod
    def parse(cls, text: str, spec: LineSpec | None = None) -> LookaheadPolicy:
        """The policy ``LOOKAHEAD(base=...,horizon=...,k=...)`` names."""
        return cls(parse_config(text), spec)

    def with_spec(self, spec: LineSpec) -> LookaheadPolicy:
        """This policy for the line ``spec`` (a copy when it had another)."""
        if self.spec is not None and self.spec.spec_hash() == spec.spec_hash():
            return self
        return LookaheadPolicy(self.config, spec)

    def _spec_for(self, snap: LineSnapshot) -> LineSpec:
        self.spec = line_spec_for(
            snap,
            self.spec,
            self.config.line or snap.line,
            "pass LOOKAHEAD(line=path/to/line.yaml), the spec the snapshot is of",
        )
        return self.spec

    # -- the decide path -----------------------------------------------------------------
    def decide(self, snapshot: Snapshot | Mapping[str, Any]) -> Decision:
        return self._decide(as_snapshot(snapshot), None)

    def _decide(self, snap: Snapshot, limit: int | None) -> Decision:
        if not isinstance(snap, LineSnapshot):
            raise PolicyError("LOOKAHEAD: decides on line snapshots; job shops use cpsat or rules")
        if snap.decision is None or snap.decision.kind != "dispatch":
            return self.base.decide(snap)
        start = time.perf_counter()
        cfg = self.config
        self.last_gain = 0.0
        station, machine = pending_dispatch(snap)
        cands = line_candidates(snap)[:limit]
        names: list[str] | None = None
        if cfg.mode == "rules":
            from taktline.agents.rules import get_rule

            names = [cfg.base, *[r for r in cfg.rules.split("+") if r and r != cfg.base]]
            idx = [get_rule(r).dispatch(cands, snap.time, machine.family) for r in names]
        else:
            idx = candidate_jobs(cands, snap.time, machine.family, cfg.base, cfg.max_candidates)
        self.stats["decisions"] += 1

        def decision(i: int, rule: str) -> Decision:
            return Decision(
                kind="dispatch",
                station=station.name,
                machine=machine.id,
                job=cands[i].name,
                rule=rule,
            )

        if len(set(idx)) == 1:  # every candidate starts the same job now
            return decision(idx[0], self.name)
        spec = self._spec_for(snap)
        # the scenarios' seeds follow from the policy's seed and the decision point alone, so
        # the same snapshot always gets the same answer (determinism, replays, tests)
        where = zlib.crc32(f"{machine.id}@{snap.time!r}".encode())
        base_seed = np.random.SeedSequence([cfg.seed, where])
        seeds = [int(s) for s in base_seed.generate_state(cfg.k)]
        deadline = start + cfg.budget_ms / 1000 if cfg.budget_ms else math.inf
        tries = [decision(i, self.name) for i in idx]
        scores = self._score(spec, snap, tries, seeds, deadline, names)
        self.stats["searched"] += 1
        if scores.shape[0] == 0:
            self.stats["deadline"] += 1
            out = decision(idx[0], self.base.name)
            return out.model_copy(update={"note": "lookahead: no scenario within budget_ms"})
        col = pick(scores, 0, cfg.margin)
        self.stats["changed"] += col != 0
        self.last_gain = float(scores[:, col].mean() - scores[:, 0].mean())
        return tries[col]

    def _score(
        self,
        spec: LineSpec,
        snap: LineSnapshot,
        tries: list[Decision],
        seeds: list[int],
        deadline: float,
        names: list[str] | None = None,
    ) -> np.ndarray:
        cfg = self.config
        if cfg.workers <= 1:
            return score_scenarios(
                spec,
                snap,
                tries,
                cfg.base,
                cfg.horizon,
                seeds,
                deadline,
                cfg.release,
                cfg.objective,
                names,
            )
        return _score_on_ray(spec, snap, tries, cfg, seeds, deadline, names)

    def run(self, twin: Any, until: float | None) -> None:
        """Run ``twin`` (built without an inline dispatcher) to ``until``, answering each of its
        decisions with :meth:`decide` on its snapshot and carrying it out (``twin.apply``)."""
        end = math.inf if until is None else until
        while twin.run_until_decision(end) is not None:
            twin.apply(self.decide(twin.snapshot()))
        if until is not None:
            twin.run(until)

    # -- in an env: the same decision on the env's snapshot ---------------------------------
    def choose(self, env: gym.Env[Any, Any], obs: Any, mask: np.ndarray) -> int:
        base = _unwrapped(env)
        twin = getattr(base, "twin", None)
        if twin is not None and self.spec is None:
            self.spec = twin.spec
        snap = as_snapshot(base.snapshot())
        if not isinstance(snap, LineSnapshot) or getattr(base.codec, "action_mode", "") != "job":
            raise PolicyError(
                "LOOKAHEAD: plays LineDispatch-v0 with action_mode='job' (it picks jobs)"
            )
        if snap.decision is None or snap.decision.kind != "dispatch":
            return self.base.choose(env, obs, mask)
        return dispatch_action(snap, self._decide(snap, len(mask)))


def _score_on_ray(
    spec: LineSpec,
    snap: LineSnapshot,
    tries: list[Decision],
    cfg: LookaheadConfig,
    seeds: list[int],
    deadline: float,
    names: list[str] | None = None,
) -> np.ndarray:
    """:func:`score_scenarios` with the seeds split over ``cfg.workers`` Ray tasks."""
    import ray

    from taktline.raycluster import attach

    attach()
    remote = ray.remote(num_cpus=1)(score_scenarios)
    # the deadline is a local clock; each task gets the time left
    left = deadline - time.perf_counter()
    chunks = [list(c) for c in np.array_split(seeds, cfg.workers) if len(c)]
    refs = [
        remote.remote(
            spec,
            snap,
            tries,
            cfg.base,
            cfg.horizon,
            c,
            math.inf,
            cfg.release,
            cfg.objective,
            names,
        )
        for c in chunks
    ]
    timeout = None if math.isinf(left) else max(left, 0.0)
    ready, pending = ray.wait(refs, num_returns=len(refs), timeout=timeout)
    for ref in pending:
        ray.cancel(ref)
    parts = [ray.get(r) for r in ready]
    return np.concatenate(parts) if parts else np.zeros((0, len(tries)))
