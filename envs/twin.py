"""The line twin: an exact, event-driven, seeded discrete-event model of a line spec.

The kernel is a heap of ``(time, seq, kind, machine, token)`` and nothing else (as in SimPy's
core); all state lives in plain slotted objects. Events at one instant are all processed before
any decision is taken, so a rule run inline and the same rule replayed through an environment
see exactly the same decision points.

Randomness: one seed makes one root ``numpy`` generator, from which an independent stream is
spawned for every source (arrivals, each product step, each machine's failures, each station's
setups). Processing times are drawn when an order arrives, so two policies simulated with the
same seed see the same orders with the same times — common random numbers.

>>> from taktline.agents.rules import get_rule
>>> from taktline.envs.spec import load_spec
>>> twin = Twin(load_spec("serial5"), seed=1, dispatch=get_rule("FIFO"))
>>> twin.run(until=500.0)
>>> twin.kpis().completed > 0
True
"""

from __future__ import annotations

import copy
import heapq
import math
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from mypy_extensions import mypyc_attr
from pydantic import ValidationError

from taktline.envs.control import DispatchController, ReleaseController
from taktline.envs.decision import Decision
from taktline.envs.distributions import Sampler
from taktline.envs.kpis import Kpis
from taktline.envs.meter import Meter
from taktline.envs.snapshot import job_number
from taktline.envs.spec import (
    ClosedLoop,
    LineSpec,
    OrderList,
    PoissonArrivals,
    RenewalArrivals,
)
from taktline.envs.streams import StreamMap, spawn_streams
from taktline.envs.twin_state import (
    BLOCKED,
    BUSY,
    DOWN,
    IDLE,
    SETUP,
    DecisionRequest,
    Job,
    Machine,
    StationState,
)
from taktline.errors import InfeasibleActionError, PolicyError

if TYPE_CHECKING:
    from taktline.envs.snapshot import LineSnapshot

# event kinds (the order breaks no ties: equal times are served first-scheduled first)
ARRIVAL, FINISH, FAIL, REPAIR, REVIEW, WARMUP = range(6)
_INF = math.inf


EventHook = Callable[[float, str, int, int, int], None]


@mypyc_attr(serializable=True, allow_interpreted_subclasses=True)
class Twin:
    """An executable line.

    Args:
        spec: the validated line spec.
        seed: the one seed of all randomness in this run.
        dispatch: a dispatch controller run inline; ``None`` makes every dispatch decision with
            two or more candidates an external :class:`DecisionRequest`.
        release: a release controller run inline at arrivals and departures; ``None`` releases
            immediately, unless ``external_release`` asks for a decision every ``review_period``.
        log_events: keep the event log (arrival, release, start, finish, setup, failure, repair,
            departure) for CSV/Parquet export and Gantt charts.
        warmup: statistics are reset at this time (warm-up deletion).
    """

    def __init__(
        self,
        spec: LineSpec,
        seed: int = 0,
        dispatch: DispatchController | None = None,
        release: ReleaseController | None = None,
        *,
        log_events: bool = False,
        warmup: float | None = None,
        external_release: bool = False,
        review_period: float | None = None,
        auto_single: bool = True,
    ) -> None:
        self.spec = spec
        self.spec_hash = spec.spec_hash()
        self.meter = Meter(spec)  # energy, costs, profit and KPIs (also the envs' rewards)
        self.seed = seed
        self.dispatcher = dispatch
        self.releaser = release
        self.auto_single = auto_single
        self.external_release = external_release
        if external_release and (review_period is None or review_period <= 0):
            raise PolicyError(
                f"review_period: must be > 0 for external release control, got {review_period}"
            )
        self.review_period = review_period
        self.now = 0.0
        self._heap: list[tuple[float, int, int, int, int]] = []
        self._seq = 0
        self._next_job = 0
        n_streams = (
            2
            + sum(len(p.routing) for p in spec.products)
            + 2 * sum(s.machines for s in spec.stations)
            + len(spec.stations)
        )
        # kept in spawn order: a fork copies (on write) or reseeds them (taktline.envs.streams)
        self._streams = spawn_streams(seed, n_streams)
        streams = iter(self._streams)
        rng_arrivals = next(streams)
        # the product of each order: u ~ U(0, 1) against the mix's CDF, drawn a block at a time
        self._mix = Sampler(_uniform01(), next(streams))
        # products
        self._prod_samplers: list[list[Sampler]] = []
        self._prod_route: list[tuple[int, ...]] = []
        self._prod_means: list[tuple[float, ...]] = []
        self._prod_remwork: list[tuple[float, ...]] = []
        self._prod_family: list[str] = []
        self._prod_allow: list[float] = []
        self._prod_revenue: list[float] = []
        for p in spec.products:
            self._prod_samplers.append(
                [s.processing_time.sampler(next(streams)) for s in p.routing]
            )
            self._prod_route.append(tuple(spec.station_index(s.station) for s in p.routing))
            means = tuple(s.processing_time.mean for s in p.routing)
            self._prod_means.append(means)
            self._prod_remwork.append(tuple(sum(means[i:]) for i in range(len(means))))
            self._prod_family.append(p.family_name)
            self._prod_allow.append(_INF if p.due_date_allowance is None else p.due_date_allowance)
            self._prod_revenue.append(p.revenue)
        shares = spec.product_shares()
        self._mix_cdf = np.cumsum(shares).tolist()
        self._mix_cdf[-1] = 1.0
        # stations and machines
        limits = getattr(release, "station_limits", None) or ()
        self.stations: list[StationState] = []
        self.machines: list[Machine] = []
        for i, st in enumerate(spec.stations):
            cap = _INF if st.buffer_capacity is None else float(st.buffer_capacity)
            lim = float(limits[i] if i < len(limits) else limits[-1]) if limits else _INF
            ss = StationState(i, st.name, cap, lim)
            for k in range(st.machines):
                m = Machine(len(self.machines), i, k, f"{st.name}.M{k + 1}")
                if st.failures is not None:
                    m.fail_ttf = st.failures.time_to_failure.sampler(next(streams))
                    m.fail_ttr = st.failures.time_to_repair.sampler(next(streams))
                    m.busy_basis = st.failures.basis == "busy"
                else:
                    next(streams)
                    next(streams)
                ss.machines.append(m)
                self.machines.append(m)
            srng = next(streams)
            if st.setups is not None:
                ss.setup_default = st.setups.default.sampler(srng)
                ss.setup_first = st.setups.first
                for a, row in st.setups.matrix.items():
                    for b, d in row.items():
                        ss.setup_matrix[(a, b)] = d.sampler(srng)
            self.stations.append(ss)
        self._closed = isinstance(spec.arrivals, ClosedLoop)
        self._order_list = isinstance(spec.arrivals, OrderList)
        self._entry_stations = {r[0] for r in self._prod_route}
        for ss in self.stations:
            ss.entry = ss.index in self._entry_stations
            for m in ss.machines:
                m.plain = ss.setup_default is None and not m.busy_basis
        self.pool: deque[Job] = deque()
        self.last_arrival = -_INF  # time of the latest order (snapshots report it)
        self.jobs_in_line: dict[int, Job] = {}
        self.wip = 0
        self.log: list[tuple[float, str, int, int, int]] | None = [] if log_events else None
        self.hooks: list[EventHook] = []
        # statistics
        self._reset_stats()
        # stations that may have a dispatch decision due, as a bit set (bit i = station i):
        # resolved lowest index first. A station is marked when a job enters its buffer while
        # one of its machines is idle, or when a machine turns idle while jobs wait: the only
        # two ways a decision can become due (see _mark_entered and _mark_idle).
        self._dirty = 0
        self._release_dirty = False
        self._pending: DecisionRequest | None = None
        self._orders_left = -1  # counts down to 0 for order lists; negative = endless
        self.finished = False
        # initial events
        arr = spec.arrivals
        self._ia: Sampler | None = None  # interarrival times (open lines)
        if isinstance(arr, PoissonArrivals):
            self._ia = Sampler(_exp_dist(1.0 / arr.rate), rng_arrivals)
            self._schedule(self._ia(), ARRIVAL, -1, 0)
        elif isinstance(arr, RenewalArrivals):
            self._ia = arr.interarrival_time.sampler(rng_arrivals)
            self._schedule(self._ia(), ARRIVAL, -1, 0)
        elif isinstance(arr, OrderList):
            pnames = [p.name for p in spec.products]
            self._orders_left = sum(o.quantity for o in arr.orders)
            self._orders = []
            for o in arr.orders:
                for _ in range(o.quantity):
                    self._orders.append((pnames.index(o.product), o.due_date))
                    self._schedule(o.release_time, ARRIVAL, -1, len(self._orders) - 1)
        elif isinstance(arr, ClosedLoop):
            for _ in range(arr.wip):
                self._new_job()
            self._release_dirty = True
        for m in self.machines:
            if m.fail_ttf is not None:
                if m.busy_basis:
                    m.ttf_left = m.fail_ttf()
                else:
                    self._schedule(m.fail_ttf(), FAIL, m.gid, m.token)
        w = spec.warmup if warmup is None else warmup
        self.warmup = w
        if w > 0:
            self._schedule(w, WARMUP, -1, 0)
        if external_release and review_period:
            self._schedule(0.0, REVIEW, -1, 0)

    # ---- bookkeeping ------------------------------------------------------------------
    def _reset_stats(self) -> None:
        now = self.now
        self.stats_start = now
        self.completed = 0
        self.released = 0
        self.flow_sum = 0.0
        self.lead_sum = 0.0
        self.tardy_sum = 0.0
        self.tardy_max = 0.0
        self.n_late = 0
        self.revenue = 0.0
        self.last_departure = 0.0
        self.wip_area = 0.0
        self.wip_since = now
        for m in self.machines:
            m.state_time = [0.0] * 5
            # keep ``since`` (a snapshot's elapsed time stays exact): count only from now on
            m.state_time[m.state] = m.since - now
        for s in self.stations:
            s.setups = 0
            s.wait_sum = 0.0
            s.wait_n = 0
            s.q_area = 0.0
            s.q_since = now

    def _schedule(self, t: float, kind: int, mach: int, token: int) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, mach, token))

    def _emit(self, kind: str, job: int, station: int, machine: int) -> None:
        if self.log is not None:
            self.log.append((self.now, kind, job, station, machine))
        if self.hooks:
            for h in self.hooks:
                h(self.now, kind, job, station, machine)

    def _set_state(self, m: Machine, state: int) -> None:
        now = self.now
        m.state_time[m.state] += now - m.since
        m.since = now
        m.state = state

    def _mark_idle(self, s: StationState) -> None:
        """A machine of ``s`` turned idle: a decision is due if jobs wait."""
        if s.buffer:
            self._dirty |= s.bit

    def _mark_entered(self, s: StationState) -> None:
        """A job entered the buffer of ``s``: a decision is due if a machine is idle."""
        for m in s.machines:
            if not m.state:  # IDLE
                self._dirty |= s.bit
                return

    def _new_job(self) -> Job:
        if self._order_list:
            raise AssertionError("order lists create jobs from _orders")  # pragma: no cover
        if len(self._mix_cdf) == 1:
            p = 0
        else:
            u = self._mix()
            p = 0
            while u > self._mix_cdf[p]:
                p += 1
        return self._make_job(p, None)

    def _make_job(self, p: int, due: float | None) -> Job:
        jid = self._next_job
        self._next_job += 1
        times = [s() for s in self._prod_samplers[p]]
        now = self.now
        due_t = due if due is not None else now + self._prod_allow[p]
        job = Job(
            jid,
            p,
            self._prod_family[p],
            self._prod_route[p],
            times,
            self._prod_means[p],
            self._prod_remwork[p],
            now,
            due_t,
        )
        self.pool.append(job)
        self.last_arrival = now
        # _emit written out: one arrival per order
        if self.log is not None:
            self.log.append((now, "arrival", jid, -1, -1))
        if self.hooks:
            for h in self.hooks:
                h(now, "arrival", jid, -1, -1)
        return job

    def _space(self, s: StationState) -> bool:
        """Can one more job enter ``s`` now? (a free machine takes a job even with no buffer)"""
        if s.count >= s.limit:
            return False
        n = len(s.buffer)
        if n < s.capacity:
            return True
        return n < s.capacity + sum(1 for m in s.machines if m.state == IDLE)

    def _enter(self, job: Job, s: StationState) -> None:
        now = self.now
        s.q_area += len(s.buffer) * (now - s.q_since)
        s.q_since = now
        job.queue_entry_time = now
        s.buffer.append(job)
        s.count += 1
        self._mark_entered(s)

    def _do_release(self, n: int) -> int:
        """Move up to ``n`` orders from the pool into the line, FIFO among those that fit."""
        pool = self.pool
        if n <= 0 or not pool:
            return 0
        done = 0
        blocked: list[Job] | None = None  # orders whose first station is full (rare)
        stations = self.stations
        now = self.now
        log = self.log
        hooks = self.hooks
        while pool and done < n:
            job = pool.popleft()
            s = stations[job.route[0]]
            # _space(s), with the common "the buffer has room" answer first
            if s.count < s.limit and (len(s.buffer) < s.capacity or self._space(s)):
                # release one order (one call per order: written out flat)
                self.wip_area += self.wip * (now - self.wip_since)
                self.wip_since = now
                self.wip += 1
                self.released += 1
                job.release_time = now
                jid = job.id
                self.jobs_in_line[jid] = job
                si = s.index
                if log is not None:
                    log.append((now, "release", jid, si, -1))
                if hooks:
                    for h in hooks:
                        h(now, "release", jid, si, -1)
                buf = s.buffer  # _enter
                s.q_area += len(buf) * (now - s.q_since)
                s.q_since = now
                job.queue_entry_time = now
                buf.append(job)
                s.count += 1
                for m in s.machines:  # _mark_entered
                    if not m.state:
                        self._dirty |= s.bit
                        break
                done += 1
            elif blocked is None:
                blocked = [job]
            else:
                blocked.append(job)
        if blocked:
            pool.extendleft(reversed(blocked))
        return done

    def _space_freed(self, s: StationState) -> None:
        """Space appeared at ``s``: pull in blocked upstream jobs, then new releases.

        Callers on the hot path skip the call when ``s`` has no blocked machine and is no
        entry station with orders in the pool: then it does nothing.
        """
        while s.blocked and self._space(s):
            m = s.blocked.popleft()
            job = m.job
            assert job is not None
            m.job = None
            up = self.stations[m.station]
            up.count -= 1
            if m.state == DOWN:
                m.resume_state = IDLE
            else:
                self._set_state(m, IDLE)
                self._mark_idle(up)
            self._enter(job, s)
            self._space_freed(up)
        if s.entry and self.pool:
            self._release_dirty = True

    # ---- processing -------------------------------------------------------------------
    def _take(self, s: StationState, index: int) -> Job:
        """Remove a job from the buffer (integrating the queue length first)."""
        now = self.now
        s.q_area += len(s.buffer) * (now - s.q_since)
        s.q_since = now
        return s.buffer.pop(index)

    def _start(self, m: Machine, job: Job) -> None:
        """Start ``job`` on the idle machine ``m``: a setup first if due, else processing.

        The general path: :meth:`run_until_decision` starts jobs on ``plain`` machines itself.
        """
        s = self.stations[m.station]
        now = self.now
        s.wait_sum += now - job.queue_entry_time
        s.wait_n += 1
        m.job = job
        fam = job.family
        setup = 0.0
        if (
            s.setup_default is not None
            and fam != m.last_family
            and (m.last_family is not None or s.setup_first)
        ):
            smp = s.setup_matrix.get((m.last_family or "", fam), s.setup_default)
            setup = smp()
        m.last_family = fam
        if setup > 0:
            s.setups += 1
            self._set_state(m, SETUP)
            self._emit("setup", job.id, s.index, m.gid)
            m.finish_time = now + setup
            m.pending_setup = True
            self._schedule(now + setup, FINISH, m.gid, m.token)
        else:
            self._emit("start", job.id, s.index, m.gid)
            self._begin_process(m, job.times[job.step])
        if s.blocked or (s.entry and self.pool):
            self._space_freed(s)

    def _begin_process(self, m: Machine, duration: float) -> None:
        now = self.now
        m.pending_setup = False
        self._set_state(m, BUSY)
        m.finish_time = now + duration
        if m.busy_basis:
            if m.ttf_left < duration:
                self._schedule(now + m.ttf_left, FAIL, m.gid, m.token)
                return
            m.ttf_left -= duration
        self._schedule(now + duration, FINISH, m.gid, m.token)

    def _setup_done(self, m: Machine) -> None:
        """The setup on ``m`` is over: processing starts (the FINISH of a setup)."""
        job = m.job
        assert job is not None
        self._emit("start", job.id, m.station, m.gid)
        self._begin_process(m, job.times[job.step])

    def _depart(self, job: Job) -> None:
        now = self.now
        self.wip_area += self.wip * (now - self.wip_since)
        self.wip_since = now
        self.wip -= 1
        jid = job.id
        del self.jobs_in_line[jid]
        if self.log is not None:
            self.log.append((now, "departure", jid, -1, -1))
        if self.hooks:
            for h in self.hooks:
                h(now, "departure", jid, -1, -1)
        self.completed += 1
        self._orders_left -= 1
        self.flow_sum += now - job.release_time
        self.lead_sum += now - job.arrival_time
        self.revenue += self._prod_revenue[job.product]
        self.last_departure = now
        late = now - job.due_date
        if late > 0:
            self.n_late += 1
            self.tardy_sum += late
            if late > self.tardy_max:
                self.tardy_max = late
        if self._closed:
            self._new_job()
        if self.pool:
            self._release_dirty = True

    def _fail(self, m: Machine) -> None:
        s = self.stations[m.station]
        self._emit("failure", m.job.id if m.job else -1, s.index, m.gid)
        if m.state in (SETUP, BUSY):
            m.remaining = m.finish_time - self.now
            m.token += 1  # invalidates the pending FINISH
        m.resume_state = m.state
        self._set_state(m, DOWN)
        assert m.fail_ttr is not None
        self._schedule(self.now + m.fail_ttr(), REPAIR, m.gid, m.token)

    def _repair(self, m: Machine) -> None:
        s = self.stations[m.station]
        self._emit("repair", m.job.id if m.job else -1, s.index, m.gid)
        assert m.fail_ttf is not None
        if m.busy_basis:
            m.ttf_left = m.fail_ttf()
        state = m.resume_state
        if state == SETUP:
            self._set_state(m, SETUP)
            m.finish_time = self.now + m.remaining
            self._schedule(m.finish_time, FINISH, m.gid, m.token)
        elif state == BUSY:
            self._begin_process(m, m.remaining)
        else:
            self._set_state(m, state)
            if state == IDLE:
                self._mark_idle(s)
                # a free machine makes room for one more job (see _space): pull in a job
                # blocked upstream and orders due, as when a finish frees the machine;
                # without this a line whose station has no buffer stays blocked for good
                if s.blocked or (s.entry and self.pool):
                    self._space_freed(s)
        if not m.busy_basis:
            self._schedule(self.now + m.fail_ttf(), FAIL, m.gid, m.token)

    # ---- decisions --------------------------------------------------------------------
    def _release_due(self) -> None:
        """A release point (arrival, departure, space at an entry station): ask the inline
        release controller, or release everything when there is none."""
        self._release_dirty = False
        if not self.external_release and self.pool:
            n = (
                len(self.pool)
                if self.releaser is None
                else self.releaser.release(len(self.pool), self.wip, self.now)
            )
            self._do_release(n)

    def dispatch(self, index: int) -> None:
        """Answer the pending dispatch decision: start candidate ``index``."""
        req = self._pending
        if req is None or req.kind != "dispatch":
            raise PolicyError("no dispatch decision is pending; call run_until_decision() first")
        if not 0 <= index < len(req.candidates):
            raise InfeasibleActionError(
                f"dispatch: candidate index must be in 0..{len(req.candidates) - 1}, got {index}"
            )
        self._pending = None
        s = self.stations[req.station]
        self._start(self.machines[req.machine], self._take(s, index))

    def dispatch_job(self, job_id: int) -> None:
        """Answer the pending dispatch decision by job id (as a plant would name it)."""
        req = self._pending
        if req is None or req.kind != "dispatch":
            raise PolicyError("no dispatch decision is pending; call run_until_decision() first")
        ids = [j.id for j in req.candidates]
        if job_id not in ids:
            raise InfeasibleActionError(
                f"dispatch: job J-{job_id} is not waiting at {self.stations[req.station].name};"
                f" waiting: {', '.join(f'J-{i}' for i in ids)}"
            )
        self.dispatch(ids.index(job_id))

    def release(self, n: int) -> int:
        """Answer the pending release decision: release up to ``n`` orders; returns how many
        entered (orders whose first station is full stay in the pool)."""
        req = self._pending
        if req is None or req.kind != "release":
            raise PolicyError("no release decision is pending; call run_until_decision() first")
        if n < 0:
            raise InfeasibleActionError(f"release: count must be >= 0, got {n}")
        self._pending = None
        return self._do_release(n)

    def apply(self, decision: Decision | Mapping[str, Any]) -> None:
        """Carry out a :class:`~taktline.envs.decision.Decision` (or its dict) on the pending
        request, as a plant would: start the job it names (``"J-<n>"``) on the waiting machine,
        or release ``count`` orders.

        Raises:
            PolicyError: when the decision does not answer the pending request (another kind,
                station or machine, no count) or is no valid decision.
            InfeasibleActionError: when the named job is not waiting there, or the count < 0.
        """
        if not isinstance(decision, Decision):
            try:
                decision = Decision.model_validate(decision)
            except ValidationError as exc:
                err = exc.errors()[0]
                where = ".".join(str(x) for x in err["loc"]) or "decision"
                raise PolicyError(f"decision.{where}: {err['msg']}, got {decision!r}") from exc
        req = self._pending
        if req is None or req.kind != decision.kind:
            want = "nothing" if req is None else f"a {req.kind} decision"
            raise PolicyError(
                f"decision.kind: got {decision.kind!r}, but the twin waits for {want}"
                " (decide on its snapshot at the decision point)"
            )
        if decision.kind == "release":
            if decision.count is None:
                raise PolicyError("decision.count: a release decision needs a count, got None")
            self.release(decision.count)
            return
        station = self.stations[req.station].name
        machine = self.machines[req.machine].name
        if decision.station not in (None, station) or decision.machine not in (None, machine):
            raise PolicyError(
                f"decision.station/machine: got {decision.station!r}/{decision.machine!r}, but"
                f" the decision due is for {station!r}/{machine!r}"
            )
        job = decision.job
        if job is None:
            raise PolicyError("decision.job: a dispatch decision names a job (J-<n>), got None")
        jid = job_number(job, -1) if isinstance(job, str) else job
        if jid < 0:
            raise InfeasibleActionError(f"decision.job: expected a job id J-<n>, got {job!r}")
        self.dispatch_job(jid)

    @property
    def pending(self) -> DecisionRequest | None:
        return self._pending

    # ---- fork ------------------------------------------------------------------------
    def fork(self, seed: int | None = None) -> Twin:
        """A copy of this twin as it is now, which runs on independently (a what-if).

        With no ``seed`` the copy continues every random stream from where this twin is: under
        the same decisions it runs bit-identically to this twin (events and KPIs), and running
        either leaves the other as it was. With a ``seed``, what is still to be drawn comes
        from fresh streams (those ``Twin(spec, seed)`` draws from); what is drawn already stays:
        the events on the calendar and the processing times of the orders in the system.

        Cheap (a tenth of building a twin or less, ``bench/bench_twin.py``): the spec, the
        product tables and drawn numbers are shared, the streams are copied on first use
        (:mod:`taktline.envs.streams`). The controllers are shared too (one with a state of its
        own sees both twins' calls); event hooks are not carried (the fork has none) and the
        event log is copied when it is kept.

        >>> from taktline.envs.spec import load_spec
        >>> twin = Twin(load_spec("serial5"), seed=1)
        >>> req = twin.run_until_decision()
        >>> other = twin.fork()
        >>> twin.dispatch(0); other.dispatch(0)
        >>> twin.run_until_decision().machine == other.run_until_decision().machine
        True
        """
        streams = StreamMap(self._streams, seed)
        new = copy.copy(self)  # the scalars and what is shared; the state is replaced below
        if seed is not None:
            new.seed = seed
        new._heap = list(self._heap)
        line = {jid: j.copy() for jid, j in self.jobs_in_line.items()}
        new.jobs_in_line = line
        new.pool = deque(j.copy() for j in self.pool)
        machines = [
            m.copy(None if m.job is None else line[m.job.id], streams) for m in self.machines
        ]
        new.machines = machines
        new.stations = [
            s.copy([line[j.id] for j in s.buffer], machines, streams) for s in self.stations
        ]
        new._mix = streams.sampler(self._mix)
        new._prod_samplers = [[streams.sampler(x) for x in row] for row in self._prod_samplers]
        if self._ia is not None:
            new._ia = streams.sampler(self._ia)
        req = self._pending
        if req is not None and req.candidates:
            new._pending = DecisionRequest(
                req.kind,
                req.station,
                req.machine,
                tuple(line[j.id] for j in req.candidates),
                req.pool_size,
            )
        new._streams = streams.streams()
        new.log = None if self.log is None else list(self.log)
        new.hooks = []
        return new

    # ---- the event loop ---------------------------------------------------------------
    def run_until_decision(self, until: float = _INF) -> DecisionRequest | None:
        """Advance to the next external decision (returned) or to ``until`` (``None``).

        Each round first takes every decision due now, then processes all events of the next
        instant. Hot path: per-event method calls and attribute lookups are what a pure-Python
        event loop spends its time on, so everything the loop touches is bound to a local and
        the two common steps (a job starting on a plain machine, a finished job moving on to
        the next station) are written out flat; everything else calls the methods above.
        """
        if self._pending is not None:
            return self._pending
        heap = self._heap
        pop = heapq.heappop
        push = heapq.heappush
        machines = self.machines
        stations = self.stations
        log = self.log
        hooks = self.hooks
        disp = self.dispatcher
        auto = self.auto_single
        fifo: bool | None = None  # is disp the FIFO rule? (looked up when first needed)
        while True:
            # -- 1. every decision due now: lowest marked station first; a start may mark
            #       stations again (upstream ones too, through blocking). A decision (one the
            #       twin would ask for without a controller) ends the pass over the station's
            #       machines, inline as asked: the release due and the lowest marked station
            #       come first after every decision, so both take the same steps in one order
            now = self.now
            while True:
                if self._release_dirty:
                    self._release_due()
                dirty = self._dirty
                if not dirty:
                    break
                low = dirty & -dirty
                self._dirty = dirty ^ low
                si = low.bit_length() - 1
                s = stations[si]
                buf = s.buffer
                if not buf:
                    continue
                for m in s.machines:
                    if m.state:  # not IDLE (== 0)
                        continue
                    if not buf:
                        break
                    decided = False  # a decision, not the lone job started unasked
                    if len(buf) == 1 and auto:
                        k = 0
                    elif disp is None:
                        self._dirty |= low  # more machines here may still need a job
                        req = DecisionRequest("dispatch", si, m.gid, tuple(buf))
                        self._pending = req
                        return req
                    else:
                        decided = True
                        if fifo is None:
                            fifo = getattr(disp, "name", None) == "FIFO"
                        # FIFO without calling the rule (half a compiled FIFO run's time): the
                        # twin keeps a buffer in order of entry, so its head is FIFO's choice
                        # unless it ties with the next one (then the rule's tie-break decides)
                        if fifo and (
                            len(buf) == 1 or buf[0].queue_entry_time < buf[1].queue_entry_time
                        ):
                            k = 0
                        else:
                            k = disp.dispatch(buf, now, m.last_family)
                    s.q_area += len(buf) * (now - s.q_since)
                    s.q_since = now
                    job = buf.pop(k)
                    if not m.plain:
                        self._start(m, job)
                        if decided:  # as after an asked decision (see above)
                            self._dirty |= low
                            break
                        continue
                    # _start for a plain machine (no setup, no busy-time failure clock)
                    s.wait_sum += now - job.queue_entry_time
                    s.wait_n += 1
                    m.job = job
                    m.last_family = job.family
                    jid = job.id
                    gid = m.gid
                    if log is not None:
                        log.append((now, "start", jid, si, gid))
                    if hooks:
                        for h in hooks:
                            h(now, "start", jid, si, gid)
                    # (no setup ever runs on a plain machine: pending_setup stays False)
                    m.state_time[m.state] += now - m.since
                    m.since = now
                    m.state = BUSY
                    end = now + job.times[job.step]
                    m.finish_time = end
                    self._seq += 1
                    push(heap, (end, self._seq, FINISH, gid, m.token))
                    if s.blocked or (s.entry and self.pool):
                        self._space_freed(s)
                    if decided:  # as after an asked decision (see above)
                        self._dirty |= low
                        break
            # -- 2. the next instant: all of its events, in scheduling order
            if not heap:
                break
            t = heap[0][0]
            if t > until:
                self._advance_clock(until)
                return None
            if self._orders_left == 0:
                break  # every order of an order list has left: only failure clocks remain
            self.now = t
            while True:
                _, _, kind, mi, token = pop(heap)
                if kind == FINISH:
                    m = machines[mi]
                    if token != m.token:
                        pass  # stale: the operation was interrupted by a failure
                    elif m.pending_setup:
                        self._setup_done(m)
                    else:
                        # the operation is over: the job moves on, departs or blocks m
                        job = m.job  # type: ignore[assignment]
                        si = m.station
                        jid = job.id
                        if log is not None:
                            log.append((t, "finish", jid, si, mi))
                        if hooks:
                            for h in hooks:
                                h(t, "finish", jid, si, mi)
                        step = job.step + 1  # Job.advance, inlined
                        job.step = step
                        route = job.route
                        if step >= len(route):  # routing complete: the job departs
                            job.remaining_ops = 0
                            s = stations[si]
                            m.job = None
                            s.count -= 1
                            m.state_time[m.state] += t - m.since
                            m.since = t
                            m.state = IDLE
                            if s.buffer:  # _mark_idle
                                self._dirty |= s.bit
                            self._depart(job)
                            if s.blocked or (s.entry and self.pool):
                                self._space_freed(s)
                        else:
                            job.processing_time = job.means[step]
                            job.remaining_work = job.remwork[step]
                            job.remaining_ops -= 1
                            nxt = stations[route[step]]
                            buf = nxt.buffer
                            if nxt.count < nxt.limit and (
                                len(buf) < nxt.capacity or self._space(nxt)
                            ):  # room at the next station: the job moves on
                                s = stations[si]
                                m.job = None
                                s.count -= 1
                                m.state_time[m.state] += t - m.since
                                m.since = t
                                m.state = IDLE
                                if s.buffer:  # _mark_idle
                                    self._dirty |= s.bit
                                nxt.q_area += len(buf) * (t - nxt.q_since)  # _enter
                                nxt.q_since = t
                                job.queue_entry_time = t
                                buf.append(job)
                                nxt.count += 1
                                for other in nxt.machines:  # _mark_entered
                                    if not other.state:
                                        self._dirty |= nxt.bit
                                        break
                                if s.blocked or (s.entry and self.pool):
                                    self._space_freed(s)
                            else:  # no room: m is blocked, holding the job
                                self._set_state(m, BLOCKED)
                                nxt.blocked.append(m)
                elif kind == ARRIVAL:
                    self._arrival(token)
                elif kind == FAIL:
                    m = machines[mi]
                    if token == m.token:
                        self._fail(m)
                elif kind == REPAIR:
                    self._repair(machines[mi])
                elif kind == REVIEW:
                    self._schedule(t + (self.review_period or _INF), REVIEW, -1, 0)
                    self._pending = DecisionRequest("release", pool_size=len(self.pool))
                elif kind == WARMUP:
                    self._reset_stats()
                if not heap or heap[0][0] != t:
                    break
            if self._pending is not None:
                return self._pending
        self.finished = True
        return None

    def _advance_clock(self, t: float) -> None:
        if t > self.now and math.isfinite(t):
            self.now = t

    def _arrival(self, token: int) -> None:
        if self._order_list:
            p, due = self._orders[token]
            self._make_job(p, due)
        else:
            # _new_job, then the next arrival (one call per order: written out flat)
            cdf = self._mix_cdf
            p = 0
            if len(cdf) > 1:
                u = self._mix()
                while u > cdf[p]:
                    p += 1
            self._make_job(p, None)
            ia = self._ia
            assert ia is not None  # open lines have an interarrival sampler
            self._seq += 1
            heapq.heappush(self._heap, (self.now + ia(), self._seq, ARRIVAL, -1, 0))
        self._release_dirty = True

    def run(self, until: float | None = None) -> None:
        """Run with the inline controllers to ``until`` (default: the spec's horizon, or until
        every order of an order list has left)."""
        horizon = until if until is not None else (self.spec.horizon or _INF)
        if not math.isfinite(horizon) and not isinstance(self.spec.arrivals, OrderList):
            raise PolicyError(
                f"line {self.spec.name!r} has endless arrivals: give a horizon (until=...)"
            )
        while True:
            req = self.run_until_decision(horizon)
            if req is None:
                return
            if req.kind == "dispatch":
                raise PolicyError("a dispatch decision needs a controller: pass dispatch=RULE")
            n = (
                self.releaser.release(len(self.pool), self.wip, self.now)
                if self.releaser is not None
                else len(self.pool)
            )
            self.release(n)

    # ---- observation ------------------------------------------------------------------
    def kpis(self) -> Kpis:
        """KPIs over the window from the end of warm-up to now (read by :attr:`meter`)."""
        return self.meter.kpis(self)

    def snapshot(self) -> LineSnapshot:
        """The twin's state now as a typed :class:`~taktline.envs.snapshot.LineSnapshot`."""
        from taktline.envs.snapshot import make_snapshot

        return make_snapshot(self)

    def events(self) -> list[dict[str, Any]]:
        """The event log as records (needs ``log_events=True``)."""
        if self.log is None:
            raise PolicyError("the event log is off: create the twin with log_events=True")
        st = self.stations
        ms = self.machines
        return [
            {
                "time": t,
                "event": kind,
                "job": f"J-{j}" if j >= 0 else None,
                "station": st[s].name if s >= 0 else None,
                "machine": ms[m].name if m >= 0 else None,
            }
            for t, kind, j, s, m in self.log
        ]

    @classmethod
    def from_snapshot(cls, spec: LineSpec, snapshot: Any, seed: int = 0, **kwargs: Any) -> Twin:
        """A twin that continues ``spec`` from ``snapshot`` (a :class:`LineSnapshot` or its
        dict) with ``seed``; ``kwargs`` as for the constructor, ``warmup`` excepted. How
        activities in progress and the orders due are restored:
        :mod:`taktline.envs.restore`."""
        from taktline.envs.restore import restore_twin

        return restore_twin(spec, snapshot, seed, **kwargs)


def _exp_dist(mean: float) -> Any:
    from taktline.envs.distributions import Exponential

    return Exponential(mean_=mean)


def _uniform01() -> Any:
    from taktline.envs.distributions import Uniform

    return Uniform(low=0.0, high=1.0)


def simulate(
    spec: LineSpec,
    dispatch: DispatchController | None,
    seed: int = 0,
    until: float | None = None,
    release: ReleaseController | None = None,
    warmup: float | None = None,
    log_events: bool = False,
) -> Twin:
    """Build a twin, run it with the given controllers and return it (KPIs via ``.kpis()``)."""
    twin = Twin(spec, seed, dispatch, release, warmup=warmup, log_events=log_events)
    twin.run(until)
    return twin


def replicate(
    spec: LineSpec,
    dispatch: DispatchController | None,
    n: int,
    seed: int = 0,
    until: float | None = None,
    release: ReleaseController | None = None,
    warmup: float | None = None,
) -> list[Kpis]:
    """``n`` independent replications with seeds ``seed, seed+1, ...`` (common random numbers
    across policies: the same seeds give the same orders and times)."""
    return [simulate(spec, dispatch, seed + i, until, release, warmup).kpis() for i in range(n)]
