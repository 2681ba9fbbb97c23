"""Classical dispatching and release rules, behind the same interface neural policies use.

Dispatching rules rank the waiting jobs by a priority key; the smallest key starts first.
**Tie-break (documented, deterministic):** equal keys are broken by queue entry time and then by
the lowest job id, i.e. first come, first served.

Definitions (``p`` = the operation's expected processing time, ``d`` = due date, ``t`` = now):

========  ==============================================================================
FIFO      earliest queue entry
SPT/LPT   shortest / longest ``p``
EDD       earliest ``d``
MWKR      most work remaining, including this operation
MOPNR     most operations remaining, including this operation
CR        smallest critical ratio ``(d - t) / remaining work``
ATC       apparent tardiness cost, ``(1/p) exp(-max(0, d - p - t) / (k p̄))`` largest first
SAME      setup-aware: jobs of the machine's current family first, then FIFO
========  ==============================================================================

>>> from types import SimpleNamespace as J
>>> jobs = [J(id=0, family="a", processing_time=5.0, remaining_work=9.0, remaining_ops=2,
...           due_date=30.0, arrival_time=0.0, queue_entry_time=0.0),
...         J(id=1, family="b", processing_time=2.0, remaining_work=4.0, remaining_ops=3,
...           due_date=20.0, arrival_time=1.0, queue_entry_time=1.0)]
>>> get_rule("SPT").dispatch(jobs, now=1.0, last_family=None)
1
>>> get_rule("MWKR").dispatch(jobs, now=1.0, last_family=None)
0
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from taktline.envs.control import JobView, release_under_cap
from taktline.envs.priorities import DISPATCH_RULES, KeyFn, best_index, priorities, rule_key
from taktline.errors import PolicyError

__all__ = [
    "DISPATCH_RULES",
    "RELEASE_RULES",
    "ConwipRelease",
    "DispatchRule",
    "ImmediateRelease",
    "KanbanRelease",
    "KeyFn",
    "ReleaseRule",
    "get_release_rule",
    "get_rule",
]

RELEASE_RULES: tuple[str, ...] = ("IMMEDIATE", "CONWIP", "KANBAN")


@dataclass(frozen=True)
class DispatchRule:
    """A priority rule; ``dispatch`` returns the index of the job to start."""

    name: str
    key: KeyFn = field(repr=False)

    def priorities(
        self, candidates: Sequence[JobView], now: float, last_family: str | None
    ) -> list[float]:
        """The priority key of each candidate (smaller starts first)."""
        return priorities(self.name, candidates, now, last_family, self.key)

    def dispatch(self, candidates: Sequence[JobView], now: float, last_family: str | None) -> int:
        n = len(candidates)
        if n == 0:
            raise PolicyError(f"rule {self.name}: asked to dispatch with no waiting job")
        if n == 1:
            return 0
        return best_index(self.priorities(candidates, now, last_family), candidates)


@dataclass(frozen=True)
class ImmediateRelease:
    """Every order enters the line as soon as it arrives (push)."""

    name: str = "IMMEDIATE"
    station_limits: tuple[int, ...] | None = None

    def release(self, pool_size: int, wip: int, now: float) -> int:
        return pool_size


@dataclass(frozen=True)
class ConwipRelease:
    """Constant WIP: release while fewer than ``wip_cap`` jobs are in the line (pull)."""

    wip_cap: int
    name: str = "CONWIP"
    station_limits: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.wip_cap < 1:
            raise PolicyError(f"CONWIP: wip_cap must be >= 1, got {self.wip_cap}")

    def release(self, pool_size: int, wip: int, now: float) -> int:
        return release_under_cap(pool_size, wip, self.wip_cap)


@dataclass(frozen=True)
class KanbanRelease:
    """Kanban: at most ``cards`` jobs at each station (in its buffer, on or blocked in its
    machines); a job moves on only when the next station has a free card."""

    cards: int
    name: str = "KANBAN"

    def __post_init__(self) -> None:
        if self.cards < 1:
            raise PolicyError(f"KANBAN: cards must be >= 1, got {self.cards}")

    @property
    def station_limits(self) -> tuple[int, ...]:
        return (self.cards,)

    def release(self, pool_size: int, wip: int, now: float) -> int:
        return pool_size  # the per-station card limit holds jobs back at the line's entry


ReleaseRule = ImmediateRelease | ConwipRelease | KanbanRelease


def get_rule(name: str) -> DispatchRule:
    """The dispatching rule called ``name`` (case-insensitive): a plain rule (``ATC``) or a
    parametric one (``ATC(k=2.5)``, ``SAME(threshold=3,pick=largest)``, see
    :mod:`taktline.agents.tuned`).
    """
    if "(" in name:
        from taktline.agents.tuned import parse_rule  # tuned builds on DispatchRule

        return parse_rule(name)
    return DispatchRule(name.strip().upper(), rule_key(name.strip()))


def get_release_rule(text: str) -> ReleaseRule:
    """Parse ``IMMEDIATE``, ``CONWIP(12)`` or ``KANBAN(3)``."""
    raw = text.strip().upper()
    name, _, arg = raw.partition("(")
    arg = arg.rstrip(")").strip()
    if name == "IMMEDIATE" and not arg:
        return ImmediateRelease()
    if name in ("CONWIP", "KANBAN"):
        if not arg.isdigit():
            raise PolicyError(
                f"release rule {text!r}: {name} needs a positive integer, e.g. {name}(10)"
            )
        return ConwipRelease(int(arg)) if name == "CONWIP" else KanbanRelease(int(arg))
    raise PolicyError(
        f"unknown release rule {text!r}; choose IMMEDIATE, CONWIP(w) or KANBAN(cards)"
    )
