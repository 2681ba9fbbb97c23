"""The small error hierarchy every part of taktline raises.

Messages say where (a field path, a line number), what was found, what was expected and how to
fix it, e.g. ``stations[2].machines: must be >= 1, got 0``.
"""

from __future__ import annotations


class TaktlineError(Exception):
    """Base class of every error taktline raises on purpose."""


class SpecError(TaktlineError, ValueError):
    """A line spec, job-shop instance or config that cannot be used as given."""

    def __init__(self, problems: list[str] | str, source: str | None = None) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        head = f"{source}: " if source else ""
        if len(self.problems) == 1:
            msg = head + self.problems[0]
        else:
            msg = (
                head
                + f"{len(self.problems)} problems\n"
                + "\n".join(f"  - {p}" for p in self.problems)
            )
        super().__init__(msg)


class PolicyError(TaktlineError, ValueError):
    """A policy, rule name or decision that cannot be used (unknown name, infeasible action)."""


class InfeasibleActionError(PolicyError):
    """An action that the feasibility mask forbids."""


def check_number(
    field: str,
    value: float | None,
    *,
    minimum: float | None = None,
    above: float | None = None,
    below: float | None = None,
    hint: str = "",
) -> None:
    """Raise :class:`SpecError` naming ``field`` unless ``value`` is finite and in range.

    ``None`` (an option left at its default) passes. ``minimum`` is inclusive, ``above`` and
    ``below`` are strict bounds.

    >>> try:
    ...     check_number("--horizon", -5.0, above=0, hint="e.g. --horizon 480")
    ... except SpecError as exc:
    ...     print(exc)
    --horizon: must be > 0, got -5; e.g. --horizon 480
    """
    if value is None:
        return
    tail = f"; {hint}" if hint else ""
    if value != value or value in (float("inf"), float("-inf")):
        raise SpecError(f"{field}: must be a finite number, got {value}{tail}")
    for bound, op, ok in (
        (minimum, ">=", lambda b: value >= b),
        (above, ">", lambda b: value > b),
        (below, "<", lambda b: value < b),
    ):
        if bound is not None and not ok(bound):
            raise SpecError(f"{field}: must be {op} {bound:g}, got {value:g}{tail}")
