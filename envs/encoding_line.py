"""Codec of ``taktline/LineDispatch-v0`` and what both line codecs share.

Line snapshot -> observation and mask, action -> decision (the release codec is in
:mod:`taktline.envs.encoding_release`).

Both codecs read a line snapshot (:mod:`taktline.envs.snapshot`) and nothing else, so a plant can
post its own snapshot to the serving API and get the observation a policy trained on. The
environments take a faster path straight from the twin (:meth:`LineDispatchCodec.encode_twin`)
that extracts the *same* numbers into a :class:`LineView`; one feature function turns a view
into an observation, and the tests check both paths agree at every step.

Observation layout (all float32, clipped to ``[-CLIP, CLIP]``; ``ts`` is the spec's mean total
processing time of an order, ``ws`` four times its machine count):

* global: ``wip / ws``, ``pool / ws``;
* per station: queue length over its buffer capacity (or 4x its machines when unbounded), and
  the share of its machines that are idle, in setup, busy, blocked and down, then 1 for the
  station of the pending dispatch decision;
* dispatch only: the deciding machine's last family (one-hot over the spec's families, then
  "none"), and ``max_queue`` slots, one per waiting job in queue order: valid, processing time
  / ts, remaining work / ts, remaining operations / longest routing, (due date - now) / ts
  (CLIP when none), waiting time / ts, same family as the machine, family one-hot;
* release only: see :mod:`taktline.envs.encoding_release`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

from taktline.envs.control import JobView
from taktline.envs.decision import Decision
from taktline.envs.priorities import DISPATCH_RULES, rule_choice, rule_key
from taktline.envs.snapshot import (
    JobRecord,
    LineSnapshot,
    StationRecord,
    as_line_snapshot,
    line_candidates,
    pending_dispatch,
)
from taktline.envs.spec import LineSpec
from taktline.errors import InfeasibleActionError, PolicyError

if TYPE_CHECKING:
    from taktline.envs.twin import Twin

CLIP = 10.0
_INF = math.inf


def job_numbers(rec: JobRecord) -> tuple[float, float, int, float, float, str]:
    """What an observation reads of a job record: processing time, remaining work, remaining
    operations, due date (``inf`` when none), queue entry time, family (else product)."""
    due = rec.due_date
    return (
        rec.processing_time,
        rec.remaining_work,
        rec.remaining_ops,
        _INF if due is None else due,
        rec.queue_entry_time,
        rec.family or rec.product,
    )


@dataclass(slots=True)
class LineView:
    """The numbers an observation is built from (extracted from a snapshot or a twin)."""

    time: float
    wip: int
    pool: int
    queue_len: list[int]
    states: list[list[int]]  # per station: machines idle, setup, busy, blocked, down
    station: int = -1  # station of the pending dispatch decision
    machine_family: str | None = None
    # waiting jobs at the decision station: (p, remaining work, remaining ops, due, queued, family)
    queue: list[tuple[float, float, int, float, float, str]] = field(default_factory=list)
    # orders in the pool: (remaining work, due date)
    pool_jobs: list[tuple[float, float]] = field(default_factory=list)


class LineCodecBase:
    """What both line codecs share: spec constants, the station block, snapshot parsing."""

    env_id = ""

    def __init__(self, spec: LineSpec, dict_obs: bool) -> None:
        self.spec = spec
        self.dict_obs = dict_obs
        self.station_names = [s.name for s in spec.stations]
        self.families: list[str] = []
        for p in spec.products:
            if p.family_name not in self.families:
                self.families.append(p.family_name)
        self._family_index = {f: i for i, f in enumerate(self.families)}
        nf = len(self.families)
        # family one-hots, built once: a job slot's tail, a machine's (+ "none") block
        self._job_hot = {
            f: tuple(float(j == i) for j in range(nf)) for i, f in enumerate(self.families)
        }
        self._job_cold = (0.0,) * nf
        self._machine_hot = {
            f: tuple(float(j == i) for j in range(nf + 1)) for i, f in enumerate(self.families)
        }
        self._machine_none = tuple(float(j == nf) for j in range(nf + 1))
        self.time_scale = max(spec.raw_process_time(), 1e-9)
        self.wip_scale = 4.0 * sum(s.machines for s in spec.stations)
        self.queue_scale = [
            float(s.buffer_capacity) if s.buffer_capacity else 4.0 * s.machines
            for s in spec.stations
        ]
        self.n_machines = [s.machines for s in spec.stations]
        self.max_ops = max(len(p.routing) for p in spec.products)
        # per station, the constants _global_block divides by (built once, not per step)
        self._station_scales = list(zip(self.queue_scale, self.n_machines, strict=True))

    # -- spaces ------------------------------------------------------------------------
    def _spaces(self, n_obs: int, n_actions: int) -> None:
        self.n_obs = n_obs
        self.flat_space = gym.spaces.Box(-CLIP, CLIP, shape=(n_obs,), dtype=np.float32)
        self.action_space: gym.spaces.Discrete = gym.spaces.Discrete(n_actions)
        self.observation_space: gym.spaces.Space[Any] = (
            gym.spaces.Dict(
                {
                    "observations": self.flat_space,
                    "action_mask": gym.spaces.Box(0.0, 1.0, shape=(n_actions,), dtype=np.float32),
                }
            )
            if self.dict_obs
            else self.flat_space
        )

    def observation(self, obs: np.ndarray, mask: np.ndarray) -> Any:
        """What the env returns: ``obs``, or the Dict ``{observations, action_mask}``."""
        if self.dict_obs:
            return {"observations": obs, "action_mask": mask.astype(np.float32)}
        return obs

    # -- encode: a view of the snapshot (or of the twin, the envs' path), then features ----
    def view(self, snapshot: LineSnapshot | Mapping[str, Any]) -> LineView:
        """The numbers of ``snapshot`` the codec reads."""
        raise NotImplementedError

    def twin_view(self, twin: Twin) -> LineView:
        """The same numbers read straight from a twin (the environment's fast path)."""
        raise NotImplementedError

    def features(self, v: LineView) -> tuple[np.ndarray, np.ndarray]:
        """Observation and mask of a view."""
        raise NotImplementedError

    def encode(self, snapshot: LineSnapshot | Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """Observation (float32) and action mask (bool) of a line snapshot."""
        return self.features(self.view(snapshot))

    def encode_twin(self, twin: Twin) -> tuple[np.ndarray, np.ndarray]:
        """Same as ``encode(twin.snapshot())``, without building the snapshot."""
        return self.features(self.twin_view(twin))

    def _check_stations(self, snapshot: LineSnapshot) -> list[StationRecord]:
        names = [s.name for s in snapshot.stations]
        if names != self.station_names:
            raise PolicyError(
                f"snapshot.stations: expected the stations of line {self.spec.name!r} "
                f"({', '.join(self.station_names)}) in that order, got {names}"
            )
        return snapshot.stations

    def _base_view(self, snapshot: LineSnapshot) -> LineView:
        stations = self._check_stations(snapshot)
        states = []
        for s in stations:
            counts = [0, 0, 0, 0, 0]
            for m in s.machines:
                counts[m.state.code] += 1
            states.append(counts)
        return LineView(
            time=snapshot.time,
            wip=snapshot.wip,
            pool=len(snapshot.pool),
            queue_len=[len(s.queue) for s in stations],
            states=states,
        )

    @staticmethod
    def _twin_base(twin: Twin) -> LineView:
        states = []
        queue_len = []
        for s in twin.stations:
            counts = [0, 0, 0, 0, 0]
            for m in s.machines:
                counts[m.state] += 1
            states.append(counts)
            queue_len.append(len(s.buffer))
        return LineView(twin.now, twin.wip, len(twin.pool), queue_len, states)

    def _global_block(self, view: LineView) -> list[float]:
        ws = self.wip_scale
        feats = [view.wip / ws, view.pool / ws]
        for q, (idle, setup, busy, blocked, down), (qs, n) in zip(
            view.queue_len, view.states, self._station_scales, strict=True
        ):
            feats += (q / qs, idle / n, setup / n, busy / n, blocked / n, down / n, 0.0)
        if view.station >= 0:  # the deciding station's flag (the 7th number of its block)
            feats[2 + 7 * view.station + 6] = 1.0
        return feats

    def _finish(self, feats: list[float]) -> np.ndarray:
        """The observation: ``feats`` in float32, clipped, zero-padded to the space's length."""
        # float32 then clip: the same numbers as clipping in float64 first (CLIP is exact in
        # float32 and rounding is monotonic), a third of the time; the padding is the zeros
        # the array starts with (no padding list per step). The ufuncs on the whole array:
        # np.clip's wrapper, or ufuncs on a slice view, cost more.
        out = np.zeros(self.n_obs, dtype=np.float32)
        out[: len(feats)] = feats
        np.minimum(out, CLIP, out=out)
        np.maximum(out, -CLIP, out=out)
        return out


class LineDispatchCodec(LineCodecBase):
    """Codec of ``taktline/LineDispatch-v0``.

    Args:
        spec: The line.
        max_queue: Slots in the observation; the first ``max_queue`` waiting jobs (queue order)
            can be chosen.
        action_mode: ``"job"`` (the action is a slot) or ``"rule"`` (the action picks which
            dispatching rule of ``rules`` decides).
        rules: The rules of ``action_mode="rule"``.
        dict_obs: Observations as ``{"observations", "action_mask"}`` (RLlib style).

    >>> from taktline.envs.spec import load_spec
    >>> codec = LineDispatchCodec(load_spec("serial5"), max_queue=4)
    >>> codec.action_space
    Discrete(4)
    """

    env_id = "taktline/LineDispatch-v0"

    def __init__(
        self,
        spec: LineSpec,
        max_queue: int = 10,
        action_mode: str = "job",
        rules: Sequence[str] = DISPATCH_RULES,
        dict_obs: bool = False,
    ) -> None:
        super().__init__(spec, dict_obs)
        if max_queue < 1:
            raise PolicyError(f"max_queue: must be >= 1, got {max_queue}")
        if action_mode not in ("job", "rule"):
            raise PolicyError(f"action_mode: expected 'job' or 'rule', got {action_mode!r}")
        if action_mode == "rule" and not rules:
            raise PolicyError("rules: action_mode='rule' needs at least one rule name")
        for r in rules:
            rule_key(r)
        self.max_queue = max_queue
        self.action_mode = action_mode
        self.rules = tuple(r.upper() for r in rules)
        nf = len(self.families)
        self.slot_size = 7 + nf
        n_obs = 2 + 7 * len(self.station_names) + nf + 1 + max_queue * self.slot_size
        self._spaces(n_obs, max_queue if action_mode == "job" else len(self.rules))
        # the mask of each number of visible waiting jobs, 0..max_queue (copied per step)
        n_act = int(self.action_space.n)
        if action_mode == "job":
            self._masks = [np.arange(n_act) < k for k in range(max_queue + 1)]
        else:
            self._masks = [np.full(n_act, k > 0, dtype=bool) for k in range(max_queue + 1)]

    # -- encode ------------------------------------------------------------------------
    def view(self, snapshot: LineSnapshot | Mapping[str, Any]) -> LineView:
        """The numbers of ``snapshot`` this codec reads."""
        snap = as_line_snapshot(snapshot)
        v = self._base_view(snap)
        if snap.decision is not None and snap.decision.kind == "dispatch":
            station, machine = pending_dispatch(snap)
            v.station = self.station_names.index(station.name)
            v.machine_family = machine.family
            v.queue = [job_numbers(rec) for rec in station.queue[: self.max_queue]]
        return v

    def twin_view(self, twin: Twin) -> LineView:
        """The same numbers read straight from a twin (the environment's fast path)."""
        v = self._twin_base(twin)
        req = twin.pending
        if req is not None and req.kind == "dispatch":
            v.station = req.station
            v.machine_family = twin.machines[req.machine].last_family
            v.queue = [
                (
                    j.processing_time,
                    j.remaining_work,
                    j.remaining_ops,
                    j.due_date,
                    j.queue_entry_time,
                    j.family,
                )
                for j in twin.stations[req.station].buffer[: self.max_queue]
            ]
        return v

    def features(self, v: LineView) -> tuple[np.ndarray, np.ndarray]:
        """Observation and mask of a view."""
        feats = self._global_block(v)
        mf = v.machine_family
        feats += self._machine_hot.get(mf, self._machine_none) if mf else self._machine_none
        ts, now, max_ops = self.time_scale, v.time, self.max_ops
        hot, cold = self._job_hot, self._job_cold
        for p, rw, rops, due, queued, fam in v.queue:
            feats += (
                1.0,
                p / ts,
                rw / ts,
                rops / max_ops,
                CLIP if due == _INF else (due - now) / ts,
                (now - queued) / ts,
                1.0 if fam == mf else 0.0,
            )
            feats += hot.get(fam, cold)
        # the empty slots are the zero padding _finish adds; the mask is a copy of a constant
        return self._finish(feats), self._masks[len(v.queue)].copy()

    # -- decode ------------------------------------------------------------------------
    def decode(self, snapshot: LineSnapshot | Mapping[str, Any], action: int) -> Decision:
        """The dispatch decision an action means on ``snapshot``.

        Raises:
            InfeasibleActionError: for an action the mask forbids.
        """
        snap = as_line_snapshot(snapshot)
        station, machine = pending_dispatch(snap)
        queue = station.queue
        return self._decision(
            station.name,
            machine.id,
            len(queue),
            lambda k: queue[k].id,
            lambda: (line_candidates(snap), snap.time, machine.family),
            action,
        )

    def decode_twin(self, twin: Twin, action: int) -> Decision:
        """``decode(twin.snapshot(), action)`` without building the snapshot (the envs' step).

        The same decision function reads the twin's pending request instead of the snapshot's
        (the twin's jobs show a rule what a snapshot's candidates show it; a test checks both
        decodes agree at every step).
        """
        req = twin.pending
        if req is None or req.kind != "dispatch":
            want = "nothing" if req is None else f"a {req.kind} decision"
            raise PolicyError(f"the twin waits for {want}, not a dispatch decision")
        jobs = twin.stations[req.station].buffer
        machine = twin.machines[req.machine]
        return self._decision(
            twin.stations[req.station].name,
            machine.name,
            len(jobs),
            lambda k: f"J-{jobs[k].id}",
            lambda: (jobs, twin.now, machine.last_family),
            action,
        )

    def _decision(
        self,
        station: str,
        machine: str,
        n_waiting: int,
        job_id: Callable[[int], str],
        ranked: Callable[[], tuple[Sequence[JobView], float, str | None]],
        action: int,
    ) -> Decision:
        a = int(action)
        if self.action_mode == "job":
            n = min(n_waiting, self.max_queue)
            if not 0 <= a < n:
                raise InfeasibleActionError(
                    f"action {a}: slot {a} holds no waiting job at station {station!r}"
                    f" ({n_waiting} waiting, {n} selectable); choose an action in 0..{n - 1}"
                    " (see the action mask)"
                )
            return Decision(kind="dispatch", station=station, machine=machine, job=job_id(a))
        if not 0 <= a < len(self.rules):
            raise InfeasibleActionError(
                f"action {a}: expected a rule index in 0..{len(self.rules) - 1} "
                f"({', '.join(self.rules)})"
            )
        if not n_waiting:
            raise InfeasibleActionError(f"action {a}: no job waits at station {station!r}")
        cands, now, family = ranked()
        k = rule_choice(self.rules[a], cands, now, family)
        return Decision(
            kind="dispatch", station=station, machine=machine, job=job_id(k), rule=self.rules[a]
        )
