"""Parametric (tunable) dispatching rules: a rule family with named parameters.

A parametric rule is a :class:`~taktline.agents.rules.DispatchRule` like any other: the twin
runs it inline, :class:`~taktline.agents.policies.RulePolicy` runs it on snapshots, and its name
is accepted wherever a rule name is (``simulate -p 'ATC(k=2.5)'``, ``RulePolicy("ATC(k=2.5)")``,
serving's ``rule:ATC(k=2.5)``), because :func:`taktline.agents.rules.get_rule` parses it here.

Families (``p`` = expected processing time, ``d`` = due date, ``t`` = now, ``w`` = remaining
work, slack = ``d - t - w``):

============  =====================================================================  ==========
family        decides                                                                 plain rule
============  =====================================================================  ==========
ATC(k)        apparent tardiness cost with look-ahead ``k`` (ATC's ``k``, default 2)   ATC
SAME(...)     stay on the machine's family; leave it when another family has
              ``threshold`` jobs waiting or a job's slack is below ``slack``; the next
              family is the oldest job's (``pick=fifo``), the longest queue's
              (``largest``) or the earliest due job's (``edd``); within a family,
              ``order=fifo`` or ``edd``                                                SAME
SLACKHYB(w)   slack per unit of remaining work to the power ``w``: ``(d - t)/w^w -
              w^(1-w)``; ``w=0`` is minimum slack, ``w=1`` orders as CR               CR (w=1)
============  =====================================================================  ==========

A name lists only the parameters that differ from the defaults, so equal rules have equal
names (``get_rule("ATC(k=2)").name == "ATC"``).

>>> rule = parse_rule("same(threshold=4, pick=largest)")
>>> rule.name, rule.params["threshold"], rule.params["pick"]
('SAME(threshold=4,pick=largest)', 4, 'largest')
>>> tuned_rule("ATC", k=2.5).name
'ATC(k=2.5)'
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from taktline.agents.rules import DispatchRule
from taktline.envs.control import JobView
from taktline.errors import PolicyError

__all__ = ["FAMILIES", "Param", "TunedRule", "parse_rule", "tuned_rule"]

ParamValue = float | int | str


@dataclass(frozen=True)
class Param:
    """One parameter of a rule family: its default and the range a search draws from."""

    name: str
    default: ParamValue
    kind: str  # "float", "int" or "choice"
    low: float = 0.0
    high: float = 0.0
    choices: tuple[str, ...] = ()
    log: bool = False
    minimum: float = -math.inf  # what the rule accepts (the search range is [low, high])
    doc: str = ""

    def coerce(self, family: str, raw: Any) -> ParamValue:
        """``raw`` (a string from a name, or a number) as this parameter's value.

        Raises:
            PolicyError: naming the family, the parameter, the value and what it accepts.
        """
        where = f"rule {family}: parameter {self.name}"
        if self.kind == "choice":
            text = str(raw).strip().lower()
            if text not in self.choices:
                raise PolicyError(f"{where} must be one of {'|'.join(self.choices)}, got {raw!r}")
            return text
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise PolicyError(
                f"{where} must be a number, got {raw!r}; e.g. {family}({self.name}={self.default})"
            ) from None
        if math.isnan(value) or value < self.minimum or (self.minimum == 0 and value == 0):
            bound = "> 0" if self.minimum == 0 else f">= {self.minimum:g}"
            raise PolicyError(f"{where} must be {bound}, got {raw!r}")
        if self.kind == "int" and math.isfinite(value):
            if value != int(value):
                raise PolicyError(f"{where} must be a whole number, got {raw!r}")
            return int(value)
        return value


FAMILIES: dict[str, tuple[Param, ...]] = {
    "ATC": (Param("k", 2.0, "float", 0.2, 8.0, log=True, minimum=0.0, doc="look-ahead scale"),),
    "SAME": (
        Param(
            "threshold",
            math.inf,
            "int",
            1,
            30,
            minimum=1,
            doc="another family's waiting jobs that make the machine switch (inf: never)",
        ),
        Param(
            "slack",
            -math.inf,
            "float",
            -60.0,
            120.0,
            doc="switch to a job whose slack is below this (-inf: never)",
        ),
        Param("pick", "fifo", "choice", choices=("fifo", "largest", "edd"), doc="next family"),
        Param("order", "fifo", "choice", choices=("fifo", "edd"), doc="order within a family"),
    ),
    "SLACKHYB": (
        Param("w", 1.0, "float", 0.0, 2.0, minimum=-math.inf, doc="remaining-work exponent"),
    ),
}
"""The parametric families and their parameters (defaults reproduce the plain rule)."""


def _fmt(value: ParamValue) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:g}"


@dataclass(frozen=True)
class TunedRule(DispatchRule):
    """A rule of a parametric family; build one with :func:`tuned_rule` or :func:`parse_rule`.

    Attributes:
        family: ``ATC``, ``SAME`` or ``SLACKHYB``.
        values: Every parameter's value (defaults filled in), as ``(name, value)`` pairs so
            that the rule stays hashable; :attr:`params` is the same as a dict.
    """

    family: str = ""
    values: tuple[tuple[str, ParamValue], ...] = ()

    @property
    def params(self) -> dict[str, ParamValue]:
        """Every parameter's value, defaults filled in (``values`` as a dict)."""
        return dict(self.values)

    def priorities(
        self, candidates: Sequence[JobView], now: float, last_family: str | None
    ) -> list[float]:
        """The priority key of each candidate (smaller starts first; set-dependent for SAME)."""
        params = self.params
        if self.family == "ATC":
            return _atc(candidates, now, float(params["k"]))
        if self.family == "SLACKHYB":
            return _slack_hybrid(candidates, now, float(params["w"]))
        return _same(candidates, now, last_family, params)


def _atc(candidates: Sequence[JobView], now: float, k: float) -> list[float]:
    # the same arithmetic as the plain ATC key (taktline.envs.priorities), so k=2 is bit-equal
    p_bar = sum(c.processing_time for c in candidates) / max(len(candidates), 1)
    scale = max(k * p_bar, 1e-12)
    out = []
    for c in candidates:
        p = max(c.processing_time, 1e-12)
        slack = max(0.0, c.due_date - p - now)
        out.append(-(1.0 / p) * math.exp(-slack / scale))
    return out


def _slack_hybrid(candidates: Sequence[JobView], now: float, w: float) -> list[float]:
    out = []
    for c in candidates:
        work = max(c.remaining_work, 1e-12)
        out.append((c.due_date - now) / work**w - work ** (1.0 - w))
    return out


def _same(
    candidates: Sequence[JobView],
    now: float,
    last_family: str | None,
    params: Mapping[str, ParamValue],
) -> list[float]:
    threshold = float(params["threshold"])
    slack_min = float(params["slack"])
    counts: dict[str, int] = {}
    for c in candidates:
        counts[c.family] = counts.get(c.family, 0) + 1
    target: str | None = last_family if last_family in counts else None
    if target is not None:
        others = [n for f, n in counts.items() if f != target]
        if others and max(others) >= threshold:
            target = _pick(candidates, counts, str(params["pick"]), exclude=target)
        elif math.isfinite(slack_min):
            urgent = [
                (c.due_date - now - c.remaining_work, c.queue_entry_time, c.id, c.family)
                for c in candidates
                if c.family != target
            ]
            if urgent and min(urgent)[0] < slack_min:
                target = min(urgent)[3]
    if target is None:
        target = _pick(candidates, counts, str(params["pick"]), exclude=None)
    if params["order"] == "edd":
        return [c.due_date if c.family == target else math.inf for c in candidates]
    # equal keys within the family: the documented tie-break (queue entry, then id) is FIFO
    return [0.0 if c.family == target else 1.0 for c in candidates]


def _pick(
    candidates: Sequence[JobView], counts: Mapping[str, int], how: str, exclude: str | None
) -> str:
    """The family to switch to (never ``exclude``, unless it is the only one)."""
    pool = [c for c in candidates if c.family != exclude] or list(candidates)
    if how == "largest":
        # the longest queue; among equal ones, the family of the oldest job
        return min(pool, key=lambda c: (-counts[c.family], c.queue_entry_time, c.id)).family
    if how == "edd":
        return min(pool, key=lambda c: (c.due_date, c.queue_entry_time, c.id)).family
    return min(pool, key=lambda c: (c.queue_entry_time, c.id)).family


def tuned_rule(family: str, **params: Any) -> TunedRule:
    """The rule of ``family`` with ``params`` (unnamed parameters keep their defaults).

    Raises:
        PolicyError: for an unknown family or parameter, or a value out of range.

    >>> tuned_rule("SAME", threshold=3).params["pick"]
    'fifo'
    """
    fam = family.strip().upper()
    spec = FAMILIES.get(fam)
    if spec is None:
        raise PolicyError(
            f"rule {family!r}: not a parametric family; choose one of {', '.join(FAMILIES)}"
        )
    known = {p.name: p for p in spec}
    values: dict[str, ParamValue] = {p.name: p.default for p in spec}
    for key, raw in params.items():
        p = known.get(key.strip().lower())
        if p is None:
            raise PolicyError(
                f"rule {fam}: unknown parameter {key!r}; {fam} takes {', '.join(known)}"
            )
        values[p.name] = p.coerce(fam, raw)
    shown = [f"{p.name}={_fmt(values[p.name])}" for p in spec if values[p.name] != p.default]
    name = f"{fam}({','.join(shown)})" if shown else fam
    return TunedRule(name, _no_key, family=fam, values=tuple(values.items()))


def _no_key(c: JobView, now: float, last_family: str | None, p_bar: float) -> float:
    # TunedRule ranks whole candidate sets (priorities); a per-job key does not exist for SAME
    raise PolicyError("a parametric rule ranks candidate sets: call priorities() or dispatch()")


_CALL = re.compile(r"^\s*([A-Za-z_]+)\s*\((.*)\)\s*$", re.DOTALL)


def parse_rule(text: str) -> TunedRule:
    """Parse ``FAMILY(name=value, ...)`` (case-insensitive; ``FAMILY()`` is the defaults).

    Raises:
        PolicyError: naming the rule text, the parameter and the fix.
    """
    m = _CALL.match(text)
    if m is None:
        raise PolicyError(
            f"rule {text!r}: expected FAMILY(name=value, ...), e.g. ATC(k=2.5) or "
            "SAME(threshold=3,pick=largest)"
        )
    family, body = m.group(1).upper(), m.group(2).strip()
    if family not in FAMILIES:
        from taktline.envs.priorities import DISPATCH_RULES

        what = "takes no parameters" if family in DISPATCH_RULES else "is no dispatching rule"
        raise PolicyError(
            f"rule {text!r}: {family} {what}; the parametric families are {', '.join(FAMILIES)}"
        )
    params: dict[str, str] = {}
    for part in filter(None, (s.strip() for s in body.split(","))) if body else ():
        key, eq, value = part.partition("=")
        key = key.strip().lower()
        if not eq or not key or not value.strip():
            names = ", ".join(p.name for p in FAMILIES[family])
            raise PolicyError(
                f"rule {text!r}: parameter {part!r} must be name=value ({family} takes {names})"
            )
        if key in params:
            raise PolicyError(f"rule {text!r}: parameter {key} given twice")
        params[key] = value.strip()
    return tuned_rule(family, **params)
