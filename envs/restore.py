"""Restore a line twin from a snapshot: continue a plant's line (or a twin's own state) from now.

:func:`restore_twin` (``Twin.from_snapshot``) builds a fresh twin of ``spec`` with its own
``seed`` and puts into it what the :class:`~taktline.envs.snapshot.LineSnapshot` says:

* **the clock** is ``snapshot.time``; statistics (WIP area, throughput, utilization, setups,
  energy, profit) start there, as after a warm-up: ``kpis()`` covers snapshot time to now.
* **jobs keep their ids**: a job ``J-<n>`` is the twin's job ``n``; any other id gets the next
  free number above the largest ``J-<n>`` (:func:`snapshot_job_ids` gives the map), and new
  orders are numbered after all of them, so none collides. A job's product, step, due date,
  arrival and queue-entry times are taken as given (its release time is unknown: it is taken
  as its arrival time, which is exact for lines that release on arrival); its processing times
  for the operations still to come are fresh draws from the spec (a plant knows only their
  expectation).
* **queues** keep their order and entry times; **the order pool** its order.
* **machines**: the family each last processed (setups), and the activity in progress, which
  ends after the snapshot's ``remaining`` where given, else after a draw of
  ``X - elapsed | X > elapsed`` from the activity's distribution
  (:meth:`~taktline.envs.distributions._Dist.sample_remaining`; the methods and their one
  fallback are in :mod:`taktline.envs.distributions`): a *busy* machine's operation (the
  product step's processing time), a *setup* (the setup from the machine's ``family`` to the
  job's family when the two differ, else the station's default setup: a snapshot taken while
  the fixture changes reports the new family, and the old one is lost), a *down* machine's
  repair. A *blocked* machine holds its finished job until the next station has room,
  longest-blocked first. ``elapsed`` is the time since the machine entered its state, as the
  snapshot reports it (after a repair that is the time since the repair).
* **failure clocks**, which a snapshot cannot show: a machine that is up gets the equilibrium
  forward-recurrence time of its time to failure
  (:meth:`~taktline.envs.distributions._Dist.sample_residual`; exact for exponential failures,
  the right law for a line that has run long); a down machine gets a fresh one at its repair,
  as the twin does. A down machine holding a job it was processing resumes it after the repair
  with the equilibrium residual of the processing time (a breakdown strikes at a random moment
  of the operation); one holding a finished job resumes blocked.
* **orders due**: Poisson arrivals are memoryless (a fresh draw); a renewal process draws its
  next arrival given the time since ``last_arrival`` when the snapshot gives it, else fresh;
  an order list keeps the orders released after the snapshot time; a closed loop keeps its
  jobs and makes a new one per departure.

Draws made here use a stream of their own (from ``seed``), independent of the twin's streams.

A snapshot that does not fit ``spec`` is refused with a :class:`~taktline.errors.SpecError`
naming the field: an unknown or missing station, machine or product, a job whose step is not at
that station, a state the station cannot be in (down without failures, setup without setups).

>>> from taktline.agents.rules import get_rule
>>> from taktline.envs.spec import load_spec
>>> from taktline.envs.twin import Twin
>>> spec = load_spec("bodyshop")
>>> twin = Twin(spec, seed=1, dispatch=get_rule("FIFO"))
>>> twin.run(until=300.0)
>>> copy = Twin.from_snapshot(spec, twin.snapshot(), seed=2, dispatch=get_rule("FIFO"))
>>> copy.now, copy.wip == twin.wip
(300.0, True)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from taktline.envs.control import DispatchController, ReleaseController
from taktline.envs.distributions import Distribution
from taktline.envs.snapshot import (
    JobRecord,
    LineSnapshot,
    MachineRecord,
    MachineState,
    as_line_snapshot,
    line_spec_problem,
)
from taktline.envs.spec import ClosedLoop, LineSpec, OrderList, RenewalArrivals, Station
from taktline.envs.twin import ARRIVAL, FAIL, FINISH, REPAIR, REVIEW, Twin
from taktline.envs.twin_state import Job, Machine
from taktline.errors import SpecError

_RESTORE_STREAM = 0x5E570  # entropy word of the restore stream (apart from the twin's streams)


def restore_twin(
    spec: LineSpec,
    snapshot: LineSnapshot | Mapping[str, Any],
    seed: int = 0,
    *,
    dispatch: DispatchController | None = None,
    release: ReleaseController | None = None,
    log_events: bool = False,
    external_release: bool = False,
    review_period: float | None = None,
    auto_single: bool = True,
) -> Twin:
    """A twin of ``spec`` that continues from ``snapshot`` (see the module docstring).

    Args:
        spec: the line the snapshot is of.
        snapshot: a :class:`LineSnapshot` or its JSON dict.
        seed: the seed of everything drawn from now on.
        dispatch, release, log_events, external_release, review_period, auto_single: as for
            :class:`Twin`.

    Raises:
        SpecError: when the snapshot does not fit ``spec``, naming the field.
        PolicyError: when ``snapshot`` is not a valid line snapshot.
    """
    snap = _read(snapshot, spec)
    twin = Twin(
        spec,
        seed,
        dispatch,
        release,
        log_events=log_events,
        warmup=0.0,
        external_release=external_release,
        review_period=review_period,
        auto_single=auto_single,
    )
    rng = np.random.default_rng(np.random.SeedSequence([seed, _RESTORE_STREAM]))
    # forget what the constructor set going (first events, a closed loop's first jobs)
    twin._heap.clear()
    twin.pool.clear()
    if twin.log is not None:
        twin.log.clear()
    now = twin.now = snap.time
    ids = snapshot_job_ids(snap)
    twin._next_job = max(ids.values(), default=-1) + 1
    products = {p.name: i for i, p in enumerate(spec.products)}

    def job(rec: JobRecord, field: str, station: int | None) -> Job:
        return _job(twin, rec, ids[rec.id], products, field, station)

    blocked: list[tuple[float, int, Machine]] = []  # (-elapsed, order, machine)
    elapsed: dict[int, float] = {}
    for i, srec in enumerate(snap.stations):
        si = spec.station_index(srec.name)
        s = twin.stations[si]
        s.buffer = [job(r, f"stations[{i}].queue[{k}]", si) for k, r in enumerate(srec.queue)]
        s.count = len(s.buffer)
        for k, mrec in enumerate(srec.machines):
            m = s.machines[int(mrec.id.rsplit(".M", 1)[1]) - 1]  # ids checked by _read
            field = f"stations[{i}].machines[{k}]"
            held = _held(mrec, spec.stations[si], field)
            jb = job(held, f"{field}.in_process", None) if held is not None else None
            if _restore_machine(twin, m, mrec, jb, field, rng):
                blocked.append((-mrec.elapsed, len(blocked), m))
            s.count += jb is not None
            elapsed[m.gid] = mrec.elapsed
    for _, _, m in sorted(blocked):
        job_ = m.job
        assert job_ is not None
        twin.stations[job_.route[job_.step]].blocked.append(m)
    for s in twin.stations:
        for j in s.buffer:
            twin.jobs_in_line[j.id] = j
        for m in s.machines:
            if m.job is not None:
                twin.jobs_in_line[m.job.id] = m.job
    twin.wip = len(twin.jobs_in_line)
    if twin.wip != snap.wip:
        raise SpecError(
            f"snapshot.wip: {snap.wip}, but {twin.wip} jobs are in the stations' queues and "
            "on their machines; give the count of jobs in the line (the pool excluded)"
        )
    twin.pool.extend(job(r, f"pool[{k}]", None) for k, r in enumerate(snap.pool))
    twin.last_arrival = -math.inf if snap.last_arrival is None else snap.last_arrival
    _schedule_orders(twin, snap, rng)
    if external_release and review_period:
        twin._schedule(now, REVIEW, -1, 0)
    # statistics from now; each machine's time in its state so far is remembered (``since``)
    # and cancelled in its state time, so that a snapshot reports it and kpis() does not
    twin._reset_stats()
    for m in twin.machines:
        e = elapsed[m.gid]
        m.since = now - e
        m.state_time[m.state] = -e
    for s in twin.stations:
        if s.buffer and any(m.state == MachineState.IDLE.code for m in s.machines):
            twin._dirty |= s.bit
    twin._release_dirty = bool(twin.pool)
    return twin


def snapshot_job_ids(snapshot: LineSnapshot) -> dict[str, int]:
    """The twin's integer id of every job in ``snapshot``: ``J-<n>`` is ``n``; others, in
    snapshot order, get the numbers after the largest such ``n``."""
    names = [j.id for s in snapshot.stations for j in s.queue]
    names += [_held_id(m) for s in snapshot.stations for m in s.machines if _held_id(m)]
    names += [j.id for j in snapshot.pool]
    ids = {
        n: int(n[2:]) for n in names if n[:2] == "J-" and n[2:].isdigit() and n == f"J-{int(n[2:])}"
    }
    nxt = max(ids.values(), default=-1) + 1
    for n in names:
        if n not in ids:
            ids[n] = nxt
            nxt += 1
    return ids


def _held_id(m: MachineRecord) -> str:
    return m.in_process.id if m.in_process is not None else (m.job or "")


def _read(snapshot: LineSnapshot | Mapping[str, Any], spec: LineSpec) -> LineSnapshot:
    """The one place a snapshot is read: validated, and checked against ``spec``."""
    snap = as_line_snapshot(snapshot)
    problem = line_spec_problem(snap, spec)
    if problem is not None:
        loc, msg = problem
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)
        raise SpecError(f"snapshot{path}: {msg}")
    given = {s.name: s for s in snap.stations}
    for st in spec.stations:
        srec = given.get(st.name)
        if srec is None:
            raise SpecError(
                f"snapshot.stations: station {st.name!r} of line {spec.name!r} is missing; "
                "a snapshot lists every station"
            )
        i = snap.stations.index(srec)
        if srec.buffer_capacity != st.buffer_capacity:
            raise SpecError(
                f"snapshot.stations[{i}].buffer_capacity: {srec.buffer_capacity}, but station "
                f"{st.name!r} of line {spec.name!r} has {st.buffer_capacity}"
            )
        want = [f"{st.name}.M{k + 1}" for k in range(st.machines)]
        missing = sorted(set(want) - {m.id for m in srec.machines})
        if missing:
            raise SpecError(
                f"snapshot.stations[{i}].machines: {missing} missing; station {st.name!r} has "
                f"machines {want}, each listed once"
            )
    return snap


def _held(mrec: MachineRecord, st: Station, field: str) -> JobRecord | None:
    """The job a machine holds, checked against its state and its station ``st``."""
    state = mrec.state
    if state == MachineState.DOWN and st.failures is None:
        raise SpecError(
            f"snapshot.{field}.state: machine {mrec.id!r} is down, but station {st.name!r} "
            "has no failures in the spec"
        )
    if state == MachineState.SETUP and st.setups is None:
        raise SpecError(
            f"snapshot.{field}.state: machine {mrec.id!r} is in setup, but station "
            f"{st.name!r} has no setups in the spec"
        )
    if mrec.in_process is None and mrec.job is not None:
        raise SpecError(
            f"snapshot.{field}.in_process: machine {mrec.id!r} holds job {mrec.job!r}; "
            "give the job's full record in `in_process` to restore it"
        )
    if mrec.in_process is None and state in (
        MachineState.BUSY,
        MachineState.SETUP,
        MachineState.BLOCKED,
    ):
        raise SpecError(
            f"snapshot.{field}.in_process: machine {mrec.id!r} is {state.value} and needs "
            "the record of the job it holds"
        )
    if mrec.in_process is not None and state == MachineState.IDLE:
        raise SpecError(
            f"snapshot.{field}.state: machine {mrec.id!r} is idle but holds job "
            f"{mrec.in_process.id!r}; an idle machine holds no job"
        )
    return mrec.in_process


def _job(
    twin: Twin,
    rec: JobRecord,
    jid: int,
    products: dict[str, int],
    field: str,
    station: int | None,
) -> Job:
    """A twin job from its record; ``station``: the buffer it waits in (its step's station)."""
    spec = twin.spec
    p = products.get(rec.product, -1)
    if p < 0:
        raise SpecError(
            f"snapshot.{field}.product: {rec.product!r} is not a product of line "
            f"{spec.name!r}; its products are {sorted(products)}"
        )
    route = twin._prod_route[p]
    if rec.n_steps != len(route) or rec.step >= len(route):
        raise SpecError(
            f"snapshot.{field}: step {rec.step} of n_steps {rec.n_steps}, but product "
            f"{rec.product!r} has {len(route)} steps (step in 0..{len(route) - 1})"
        )
    family = twin._prod_family[p]
    if rec.family not in ("", family):
        raise SpecError(
            f"snapshot.{field}.family: {rec.family!r}, but product {rec.product!r} is of "
            f"family {family!r} in line {spec.name!r}"
        )
    if station is not None and route[rec.step] != station:
        raise SpecError(
            f"snapshot.{field}.step: job {rec.id!r} waits at {spec.stations[station].name!r}, "
            f"but its step {rec.step} is at {spec.stations[route[rec.step]].name!r}"
        )
    if field.startswith("pool") and rec.step != 0:
        raise SpecError(f"snapshot.{field}.step: an order in the pool is at step 0, got {rec.step}")
    due = math.inf if rec.due_date is None else rec.due_date
    times = [smp() for smp in twin._prod_samplers[p]]
    job = Job(jid, p, family, route, times, twin._prod_means[p], twin._prod_remwork[p], 0.0, due)
    job.step = rec.step
    job.processing_time = job.means[rec.step]
    job.remaining_work = job.remwork[rec.step]
    job.remaining_ops = len(route) - rec.step
    job.arrival_time = rec.arrival_time
    job.queue_entry_time = rec.queue_entry_time
    job.release_time = math.inf if field.startswith("pool") else rec.arrival_time
    return job


def _restore_machine(
    twin: Twin,
    m: Machine,
    mrec: MachineRecord,
    job: Job | None,
    field: str,
    rng: np.random.Generator,
) -> bool:
    """Put ``m`` in the snapshot's state; returns whether it is (or resumes) blocked."""
    st = twin.spec.stations[m.station]
    fams = set(twin._prod_family)
    if mrec.family is not None and mrec.family not in fams:
        raise SpecError(
            f"snapshot.{field}.family: {mrec.family!r} is not a family of line "
            f"{twin.spec.name!r}; its families are {sorted(fams)}"
        )
    m.last_family = mrec.family
    m.job = job
    state = mrec.state
    step = job.step if job is not None else -1
    here = job is not None and job.route[step] == m.station
    done_here = job is not None and step > 0 and job.route[step - 1] == m.station
    if job is not None and not (here or done_here):
        raise SpecError(
            f"snapshot.{field}.in_process.step: job {job.name!r} is at step {step}, neither "
            f"processed at {st.name!r} nor finished there"
        )
    if state in (MachineState.BUSY, MachineState.SETUP) and not here:
        raise SpecError(
            f"snapshot.{field}.in_process.step: machine {mrec.id!r} is {state.value} but the "
            f"step {step} of its job is not at {st.name!r}"
        )
    if state == MachineState.BLOCKED and not done_here:
        raise SpecError(
            f"snapshot.{field}.in_process.step: machine {mrec.id!r} is blocked, so its job "
            f"must have finished step {step - 1} at {st.name!r}"
        )
    fails = st.failures

    def left(dist: Distribution) -> float:
        return (
            mrec.remaining
            if mrec.remaining is not None
            else dist.sample_remaining(rng, mrec.elapsed)
        )

    now = twin.now
    if fails is not None and state != MachineState.DOWN:
        ttf = fails.time_to_failure.sample_residual(rng)
        if m.busy_basis:
            m.ttf_left = ttf
        else:
            twin._schedule(now + ttf, FAIL, m.gid, m.token)
    m.state = state.code
    if state == MachineState.BUSY:
        assert job is not None
        twin._begin_process(m, left(_step_time(twin, job)))
    elif state == MachineState.SETUP:
        assert job is not None and st.setups is not None
        setups = st.setups
        dist = setups.default
        if mrec.family is not None and mrec.family != job.family:
            dist = setups.matrix.get(mrec.family, {}).get(job.family, setups.default)
        m.last_family = job.family
        m.pending_setup = True
        m.finish_time = now + left(dist)
        twin._schedule(m.finish_time, FINISH, m.gid, m.token)
    elif state == MachineState.DOWN:
        assert fails is not None
        twin._schedule(now + left(fails.time_to_repair), REPAIR, m.gid, m.token)
        if here:
            assert job is not None
            m.resume_state = MachineState.BUSY.code
            m.remaining = _step_time(twin, job).sample_residual(rng)
        else:
            m.resume_state = (MachineState.BLOCKED if done_here else MachineState.IDLE).code
    return state == MachineState.BLOCKED or (state == MachineState.DOWN and done_here)


def _step_time(twin: Twin, job: Job) -> Distribution:
    """The processing-time law of ``job``'s current operation."""
    return twin.spec.products[job.product].routing[job.step].processing_time


def _schedule_orders(twin: Twin, snap: LineSnapshot, rng: np.random.Generator) -> None:
    """Orders still to come: the next arrival, or the rest of an order list."""
    arr = twin.spec.arrivals
    now = twin.now
    if isinstance(arr, ClosedLoop):
        return
    if isinstance(arr, OrderList):
        times = [o.release_time for o in arr.orders for _ in range(o.quantity)]  # as _orders
        due = [k for k, t in enumerate(times) if t > now]
        for k in due:
            twin._schedule(times[k], ARRIVAL, -1, k)
        twin._orders_left = twin.wip + len(twin.pool) + len(due)
        return
    if isinstance(arr, RenewalArrivals) and snap.last_arrival is not None:
        gap = arr.interarrival_time.sample_remaining(rng, max(now - snap.last_arrival, 0.0))
    else:
        ia = twin._ia
        assert ia is not None  # a renewal arrival process has its sampler
        gap = ia()
    twin._schedule(now + gap, ARRIVAL, -1, 0)
