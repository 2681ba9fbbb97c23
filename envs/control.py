"""The decision hook between the twin and whatever controls it.

The twin stops at two kinds of decision points and asks a controller:

* **dispatch** — a machine is free and jobs wait in its station's buffer: which job starts?
* **release** — orders wait in the pool in front of the line: how many enter the line now?

A controller is anything with the methods below; rules (:mod:`taktline.agents.rules`) and
neural policies (through :func:`taktline.envs.encoding.encode`) both implement it. This module
knows nothing of how decisions are made, so the twin stays free of torch, SB3 or Ray.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable


class JobView(Protocol):
    """What a dispatching rule may look at of one waiting job (times in spec units).

    An interface, not a data type: the one data type of a waiting job is
    :class:`taktline.envs.snapshot.Candidate` (what a snapshot's job becomes); the twin's own
    jobs present the same attributes to the twin's dispatch hook. ``processing_time`` and
    ``remaining_work`` are *expected* times (the distribution means), as a plant's MES would
    know them; the twin draws the actual times.
    """

    @property
    def id(self) -> int: ...
    @property
    def family(self) -> str: ...
    @property
    def processing_time(self) -> float: ...
    @property
    def remaining_work(self) -> float: ...
    @property
    def remaining_ops(self) -> int: ...
    @property
    def due_date(self) -> float: ...
    @property
    def arrival_time(self) -> float: ...
    @property
    def queue_entry_time(self) -> float: ...


class DispatchController(Protocol):
    """Chooses which waiting job a free machine starts."""

    def dispatch(self, candidates: Sequence[JobView], now: float, last_family: str | None) -> int:
        """Return the index (into ``candidates``) of the job to start."""
        ...


@runtime_checkable
class ReleaseController(Protocol):
    """Decides how many orders from the pool enter the line at a release point."""

    def release(self, pool_size: int, wip: int, now: float) -> int:
        """Return how many of the ``pool_size`` waiting orders to release now (0..pool_size)."""
        ...


def release_under_cap(pool_size: int, wip: int, wip_cap: int) -> int:
    """How many of ``pool_size`` waiting orders enter a line holding ``wip`` jobs under a WIP cap
    of ``wip_cap`` (CONWIP's rule, and the release env's ``wip_cap`` actions).

    >>> release_under_cap(pool_size=5, wip=7, wip_cap=10), release_under_cap(2, 7, 10)
    (3, 2)
    """
    return max(0, min(pool_size, wip_cap - wip))
