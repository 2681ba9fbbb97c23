"""Replays for the plant view: the twin run under each policy on one seed, as frames.

A frame is what the view draws at one moment: per station its buffer (families of the waiting
jobs, capacity) and its machines (state, family of the job held), the clock and the running
KPIs. It is cut from :meth:`Twin.snapshot` (:func:`line_frame`), the same typed value a plant
posts to ``/decide``, so a replayed line and a served one are drawn by the same code.

A policy runs on the twin the way the project runs it everywhere: a rule inline as the twin's
dispatcher (the fast path ``taktline simulate`` uses), any other policy through its one
``decide(snapshot)`` with :meth:`Twin.apply` (the path serving and the lookahead use). Frames
are cut every ``frame_step`` time units, computed on demand and kept, so a viewer that pauses,
seeks back or changes speed is served from memory.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from taktline.errors import PolicyError, SpecError

if TYPE_CHECKING:
    from taktline.agents.policies import Policy
    from taktline.envs.snapshot import LineSnapshot
    from taktline.envs.spec import LineSpec
    from taktline.envs.twin import Twin

UNIT_SECONDS = {"s": 1.0, "sec": 1.0, "min": 60.0, "h": 3600.0, "hour": 3600.0, "d": 86400.0}
"""Seconds per time unit of a spec's ``time_unit`` (what "100x real time" is measured in)."""

MAX_QUEUE_CHIPS = 24
"""Waiting jobs drawn as chips per buffer; the count says how many more wait."""


def line_frame(snapshot: LineSnapshot, families: dict[str, int]) -> dict[str, Any]:
    """The drawable part of a line snapshot: compact, JSON-ready.

    Args:
        snapshot: A line snapshot (the twin's, or one posted to ``/decide``).
        families: Family name -> colour index (an unknown family gets -1).
    """
    stations = []
    for s in snapshot.stations:
        machines = []
        for m in s.machines:
            job = m.in_process
            machines.append(
                {
                    "id": m.id,
                    "state": str(m.state),
                    "job": m.job,
                    "family": families.get(job.family, -1) if job is not None else -1,
                }
            )
        stations.append(
            {
                "name": s.name,
                "capacity": s.buffer_capacity,
                "waiting": len(s.queue),
                "chips": [families.get(j.family, -1) for j in s.queue[:MAX_QUEUE_CHIPS]],
                "machines": machines,
            }
        )
    decision = snapshot.decision
    return {
        "time": snapshot.time,
        "line": snapshot.line,
        "wip": snapshot.wip,
        "pool": len(snapshot.pool),
        "decision": None if decision is None else decision.model_dump(exclude_none=True),
        "stations": stations,
    }


@dataclass
class ReplayRun:
    """One policy on the twin: frames ``0, 1, ...`` at times ``k * frame_step``."""

    spec: LineSpec
    seed: int
    ref: str
    frame_step: float
    horizon: float
    families: dict[str, int]
    frames: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        from taktline.agents.policies import RulePolicy, load_policy
        from taktline.envs.twin import Twin

        policy = load_policy(self.ref, seed=self.seed)
        self.name = getattr(policy, "name", None) or self.ref
        self.policy: Policy | None = policy
        if isinstance(policy, RulePolicy) and policy.dispatch_rule is not None:
            # a rule runs inline as the twin's dispatcher: the same trajectory as decide+apply
            self.twin: Twin = Twin(self.spec, self.seed, policy.dispatch_rule, policy.release_rule)
            self.policy = None
        elif isinstance(policy, RulePolicy):
            raise PolicyError(
                f"--policy: {self.ref!r} is a release rule, and a replay needs a dispatching"
                " policy; give a rule such as SAME, a bundle or models:/NAME@ALIAS"
            )
        else:
            self.twin = Twin(self.spec, self.seed)

    @property
    def n_frames(self) -> int:
        """Frames up to and including the horizon."""
        return math.floor(self.horizon / self.frame_step + 1e-9) + 1

    def frame(self, index: int) -> dict[str, Any]:
        """Frame ``index`` (computed, with those before it, when first asked for)."""
        if not 0 <= index < self.n_frames:
            raise SpecError(f"frame: index must be in 0..{self.n_frames - 1}, got {index}")
        with self._lock:  # one twin, advanced by one thread at a time
            while len(self.frames) <= index:
                self.frames.append(self._next_frame(len(self.frames) * self.frame_step))
            return self.frames[index]

    def advance(self, until: float) -> None:
        """Run the twin to ``until`` under the policy (decisions taken as they fall due)."""
        twin = self.twin
        while (req := twin.run_until_decision(until)) is not None:
            if self.policy is not None and req.kind == "dispatch":
                twin.apply(self.policy.decide(twin.snapshot()))
            elif twin.releaser is not None:  # as Twin.run releases
                twin.release(twin.releaser.release(len(twin.pool), twin.wip, twin.now))
            else:
                twin.release(len(twin.pool))

    def _next_frame(self, t: float) -> dict[str, Any]:
        self.advance(t)
        frame = line_frame(self.twin.snapshot(), self.families)
        k = self.twin.kpis()
        frame["kpis"] = {
            "throughput": k.throughput,
            "wip": k.wip,
            "total_tardiness": k.total_tardiness,
            "profit": k.profit,
        }
        return frame


class Replay:
    """Every policy of a ``taktline view`` on one line and seed, frame for frame.

    Args:
        spec: The line.
        seed: The common seed (common random numbers: the policies see the same orders).
        refs: Policy references as ``load_policy`` reads them (rules, bundles, ``models:/``).
        frame_step: Simulated time between frames (default: 5 s of real time, so 20 frames a
            second at 100x real time; at most 20,000 frames).
        horizon: Simulated time to replay (default: the spec's horizon).
    """

    def __init__(
        self,
        spec: LineSpec,
        seed: int,
        refs: list[str],
        frame_step: float | None = None,
        horizon: float | None = None,
    ) -> None:
        if not refs:
            raise PolicyError("--policy: give at least one policy to replay, e.g. -p SAME")
        until = horizon if horizon is not None else spec.horizon
        if until is None or not (until > 0 and math.isfinite(until)):
            raise SpecError(
                f"--horizon: line {spec.name!r} has no finite horizon; give one, e.g. --horizon 480"
            )
        unit_s = UNIT_SECONDS.get(spec.time_unit.strip().lower(), 1.0)
        # default: 20 frames a second at 100x real time, at most 20,000 frames
        step = frame_step if frame_step is not None else max(5.0 / unit_s, until / 20_000)
        if not (step > 0 and math.isfinite(step)) or step > until:
            raise SpecError(f"--frame-step: must be in (0, {until:g}], got {step!r}")
        self.spec = spec
        self.seed = seed
        self.horizon = until
        self.frame_step = step
        names = sorted({p.family_name for p in spec.products})
        self.families = {f: i for i, f in enumerate(names)}
        self.runs = [ReplayRun(spec, seed, r, step, until, self.families) for r in refs]

    @property
    def n_frames(self) -> int:
        return self.runs[0].n_frames

    @property
    def unit_seconds(self) -> float:
        """Real seconds per simulated time unit (1 for an unknown unit)."""
        return UNIT_SECONDS.get(self.spec.time_unit.strip().lower(), 1.0)

    def info(self) -> dict[str, Any]:
        """What the page needs before the first frame: the layout and the policies."""
        return {
            "line": self.spec.name,
            "seed": self.seed,
            "time_unit": self.spec.time_unit,
            "unit_seconds": self.unit_seconds,
            "horizon": self.horizon,
            "frame_step": self.frame_step,
            "n_frames": self.n_frames,
            "families": list(self.families),
            "policies": [r.name for r in self.runs],
            "stations": [
                {"name": s.name, "machines": s.machines, "capacity": s.buffer_capacity}
                for s in self.spec.stations
            ],
        }

    def frames(self, index: int) -> list[dict[str, Any]]:
        """Frame ``index`` of every policy."""
        return [r.frame(index) for r in self.runs]
