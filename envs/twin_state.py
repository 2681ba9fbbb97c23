"""The twin's state: jobs, machines and stations, and the decision request it waits on.

Plain slotted objects, compiled with the kernel (:mod:`taktline.envs.twin`) by mypyc: the event
loop reads and writes their fields on every event. Machine states are the integer codes of
:class:`~taktline.envs.snapshot.MachineState` (its order); a snapshot names them.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from mypy_extensions import mypyc_attr

from taktline.envs.distributions import Sampler
from taktline.envs.snapshot import MachineState
from taktline.envs.streams import StreamMap

# machine states: the integer codes of MachineState (its order)
IDLE, SETUP, BUSY, BLOCKED, DOWN = (s.code for s in MachineState)
_INF = math.inf


@mypyc_attr(serializable=True, allow_interpreted_subclasses=True)
class Job:
    """One order travelling through the line. Attributes follow the Candidate protocol."""

    __slots__ = (
        "arrival_time",
        "due_date",
        "family",
        "id",
        "means",
        "processing_time",
        "product",
        "queue_entry_time",
        "release_time",
        "remaining_ops",
        "remaining_work",
        "remwork",
        "route",
        "step",
        "times",
    )

    def __init__(
        self,
        jid: int,
        product: int,
        family: str,
        route: tuple[int, ...],
        times: list[float],
        means: tuple[float, ...],
        remwork: tuple[float, ...],
        now: float,
        due: float,
    ) -> None:
        self.id = jid
        self.product = product
        self.family = family
        self.route = route
        self.times = times
        self.means = means
        self.remwork = remwork
        self.step = 0
        self.arrival_time = now
        self.release_time = _INF
        self.queue_entry_time = now
        self.due_date = due
        # the JobView of the current operation, kept current when the job moves on
        self.processing_time = means[0]
        self.remaining_work = remwork[0]
        self.remaining_ops = len(route)

    @property
    def name(self) -> str:
        return f"J-{self.id}"

    def copy(self) -> Job:
        """A copy for a fork (its drawn times and routing are shared: they never change)."""
        new = Job(
            self.id,
            self.product,
            self.family,
            self.route,
            self.times,
            self.means,
            self.remwork,
            self.arrival_time,
            self.due_date,
        )
        new.step = self.step
        new.release_time = self.release_time
        new.queue_entry_time = self.queue_entry_time
        new.processing_time = self.processing_time
        new.remaining_work = self.remaining_work
        new.remaining_ops = self.remaining_ops
        return new


@mypyc_attr(serializable=True, allow_interpreted_subclasses=True)
class Machine:
    __slots__ = (
        "busy_basis",
        "fail_ttf",
        "fail_ttr",
        "finish_time",
        "gid",
        "index",
        "job",
        "last_family",
        "name",
        "pending_setup",
        "plain",
        "remaining",
        "resume_state",
        "since",
        "state",
        "state_time",
        "station",
        "token",
        "ttf_left",
    )

    def __init__(self, gid: int, station: int, index: int, name: str) -> None:
        self.gid = gid
        self.station = station
        self.index = index
        self.name = name
        self.state = IDLE
        self.since = 0.0
        self.state_time = [0.0] * 5
        self.job: Job | None = None
        self.last_family: str | None = None
        self.token = 0
        self.finish_time = 0.0
        self.remaining = 0.0
        self.resume_state = IDLE
        self.pending_setup = False
        self.fail_ttf: Sampler | None = None
        self.fail_ttr: Sampler | None = None
        self.busy_basis = False
        self.ttf_left = _INF
        # no setups at its station and no busy-time failure clock: a start is just "busy until
        # now + time" (set once the station is built; read by the flat start path)
        self.plain = False

    def copy(self, job: Job | None, streams: StreamMap) -> Machine:
        """A copy for a fork, holding ``job`` (the fork's copy of the job it holds)."""
        new = Machine(self.gid, self.station, self.index, self.name)
        new.state = self.state
        new.since = self.since
        new.state_time = list(self.state_time)
        new.job = job
        new.last_family = self.last_family
        new.token = self.token
        new.finish_time = self.finish_time
        new.remaining = self.remaining
        new.resume_state = self.resume_state
        new.pending_setup = self.pending_setup
        if self.fail_ttf is not None:
            new.fail_ttf = streams.sampler(self.fail_ttf)
        if self.fail_ttr is not None:
            new.fail_ttr = streams.sampler(self.fail_ttr)
        new.busy_basis = self.busy_basis
        new.ttf_left = self.ttf_left
        new.plain = self.plain
        return new


@mypyc_attr(serializable=True, allow_interpreted_subclasses=True)
class StationState:
    __slots__ = (
        "bit",
        "blocked",
        "buffer",
        "capacity",
        "count",
        "entry",
        "index",
        "limit",
        "machines",
        "name",
        "q_area",
        "q_since",
        "setup_default",
        "setup_first",
        "setup_matrix",
        "setups",
        "wait_n",
        "wait_sum",
    )

    def __init__(self, index: int, name: str, capacity: float, limit: float) -> None:
        self.index = index
        self.bit = 1 << index  # its bit in Twin._dirty
        self.name = name
        self.capacity = capacity
        self.limit = limit
        self.buffer: list[Job] = []
        self.machines: list[Machine] = []
        self.blocked: deque[Machine] = deque()
        self.count = 0  # jobs at the station: waiting, in process or blocked on its machines
        self.entry = False  # the first station of some product's routing (releases enter here)
        self.setup_matrix: dict[tuple[str, str], Sampler] = {}
        self.setup_default: Sampler | None = None
        self.setup_first = False
        self.setups = 0
        self.wait_sum = 0.0
        self.wait_n = 0
        self.q_area = 0.0
        self.q_since = 0.0

    def copy(self, buffer: list[Job], machines: list[Machine], streams: StreamMap) -> StationState:
        """A copy for a fork, with the fork's copies of its jobs and of all machines."""
        new = StationState(self.index, self.name, self.capacity, self.limit)
        new.buffer = buffer
        new.machines = [machines[m.gid] for m in self.machines]
        new.blocked = deque(machines[m.gid] for m in self.blocked)
        new.count = self.count
        new.entry = self.entry
        new.setup_matrix = {k: streams.sampler(v) for k, v in self.setup_matrix.items()}
        if self.setup_default is not None:
            new.setup_default = streams.sampler(self.setup_default)
        new.setup_first = self.setup_first
        new.setups = self.setups
        new.wait_sum = self.wait_sum
        new.wait_n = self.wait_n
        new.q_area = self.q_area
        new.q_since = self.q_since
        return new


@mypyc_attr(native_class=False)
@dataclass(frozen=True)
class DecisionRequest:
    """A decision the twin waits for (external control, e.g. from an environment)."""

    kind: str  # "dispatch" or "release"
    station: int = -1
    machine: int = -1  # global machine index
    candidates: tuple[Job, ...] = ()
    pool_size: int = 0
