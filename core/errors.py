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
