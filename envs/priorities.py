"""Priority keys of the classical dispatching rules, as pure functions over candidates.

They live in ``envs`` because environments need them too (``LineDispatch-v0`` with
``action_mode="rule"`` lets the agent pick which rule decides; ``LineRelease-v0`` dispatches
with a rule inline) and ``envs`` must not import ``agents``. :mod:`taktline.agents.rules` builds
its :class:`~taktline.agents.rules.DispatchRule` objects from these keys.

The smallest key starts first. **Tie-break (documented, deterministic):** equal keys are broken
by queue entry time and then by the lowest job id, i.e. first come, first served.

>>> from types import SimpleNamespace as J
>>> jobs = [J(id=0, family="a", processing_time=5.0, remaining_work=9.0, remaining_ops=2,
...           due_date=30.0, arrival_time=0.0, queue_entry_time=0.0),
...         J(id=1, family="b", processing_time=2.0, remaining_work=4.0, remaining_ops=3,
...           due_date=20.0, arrival_time=1.0, queue_entry_time=1.0)]
>>> rule_choice("SPT", jobs, now=1.0, last_family=None)
1
>>> rule_choice("SAME", jobs, now=1.0, last_family="a")
0
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from taktline.envs.control import JobView
from taktline.errors import PolicyError

KeyFn = Callable[[JobView, float, str | None, float], float]
"""``key(candidate, now, last_family, mean_processing_time) -> priority`` (smaller first)."""


def _atc_key(c: JobView, now: float, last_family: str | None, p_bar: float, k: float) -> float:
    p = max(c.processing_time, 1e-12)
    slack = max(0.0, c.due_date - p - now)
    scale = max(k * p_bar, 1e-12)
    return -(1.0 / p) * math.exp(-slack / scale)


_KEYS: dict[str, KeyFn] = {
    "FIFO": lambda c, now, lf, pb: c.queue_entry_time,
    "SPT": lambda c, now, lf, pb: c.processing_time,
    "LPT": lambda c, now, lf, pb: -c.processing_time,
    "EDD": lambda c, now, lf, pb: c.due_date,
    "MWKR": lambda c, now, lf, pb: -c.remaining_work,
    "MOPNR": lambda c, now, lf, pb: -float(c.remaining_ops),
    "CR": lambda c, now, lf, pb: (c.due_date - now) / max(c.remaining_work, 1e-12),
    "ATC": lambda c, now, lf, pb: _atc_key(c, now, lf, pb, 2.0),
    "SAME": lambda c, now, lf, pb: 0.0 if (lf is not None and c.family == lf) else 1.0,
}

DISPATCH_RULES: tuple[str, ...] = tuple(_KEYS)
"""The names of the built-in dispatching rules, in a fixed order."""


def rule_key(name: str) -> KeyFn:
    """The key function of the rule ``name`` (case-insensitive).

    Raises:
        PolicyError: for an unknown name (the message lists the known ones).
    """
    key = _KEYS.get(name.upper())
    if key is None:
        raise PolicyError(
            f"unknown dispatching rule {name!r}; choose one of {', '.join(DISPATCH_RULES)}"
        )
    return key


def priorities(
    name: str,
    candidates: Sequence[JobView],
    now: float,
    last_family: str | None,
    key: KeyFn | None = None,
) -> list[float]:
    """The priority key of each candidate under rule ``name`` (smaller starts first).

    Args:
        name: A rule name (upper case, as in :data:`DISPATCH_RULES`).
        candidates: The waiting jobs.
        now: The decision time.
        last_family: The family the machine last processed (for setup-aware rules).
        key: The key function to use for names without a fast path (default: the built-in one).
    """
    # the common rules read one attribute; avoid a Python call per candidate
    if name == "SPT":
        return [c.processing_time for c in candidates]
    if name == "LPT":
        return [-c.processing_time for c in candidates]
    if name == "EDD":
        return [c.due_date for c in candidates]
    if name == "MWKR":
        return [-c.remaining_work for c in candidates]
    if name == "MOPNR":
        return [-float(c.remaining_ops) for c in candidates]
    if name == "FIFO":
        return [c.queue_entry_time for c in candidates]
    p_bar = 0.0
    if name == "ATC":
        p_bar = sum(c.processing_time for c in candidates) / max(len(candidates), 1)
    fn = key if key is not None else rule_key(name)
    return [fn(c, now, last_family, p_bar) for c in candidates]


def best_index(keys: Sequence[float], candidates: Sequence[JobView]) -> int:
    """Index of the smallest key; ties go to the earliest queue entry, then the lowest id."""
    best = min(keys)
    first = keys.index(best)
    if keys.count(best) == 1:  # the common case, counted in C: no tie to break
        return first
    ties = [i for i in range(first, len(keys)) if keys[i] == best]
    if len(ties) == 1:
        return first
    return min(ties, key=lambda i: (candidates[i].queue_entry_time, candidates[i].id))


def rule_choice(
    name: str, candidates: Sequence[JobView], now: float, last_family: str | None
) -> int:
    """Index of the candidate that rule ``name`` starts (the documented tie-break applies).

    Raises:
        PolicyError: for an unknown rule or an empty candidate list.
    """
    rule = name.upper()
    n = len(candidates)
    if n == 0:
        raise PolicyError(f"rule {rule}: asked to dispatch with no waiting job")
    if n == 1:
        rule_key(rule)  # still reject unknown names
        return 0
    return best_index(priorities(rule, candidates, now, last_family), candidates)


@dataclass(frozen=True)
class RuleDispatcher:
    """A :class:`~taktline.envs.control.DispatchController` that follows one built-in rule.

    >>> RuleDispatcher("edd").name
    'EDD'
    """

    name: str

    def __post_init__(self) -> None:
        rule_key(self.name)
        object.__setattr__(self, "name", self.name.upper())

    def dispatch(self, candidates: Sequence[JobView], now: float, last_family: str | None) -> int:
        """Index of the job to start."""
        return rule_choice(self.name, candidates, now, last_family)
