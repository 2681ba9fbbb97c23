"""Dispatching rules on job shops: build a schedule with a priority rule and measure it.

At every decision point of :class:`~taktline.envs.jobshop.schedule.JobShopState` (the
Giffler–Thompson conflict set for ``"active"``, the jobs that can start now for
``"non-delay"``), the rule from :mod:`taktline.agents.rules` picks one candidate, as it sees
it in the state's snapshot: :func:`taktline.envs.encoding_jobshop.jobshop_candidates` (which
documents the classical job-shop meaning of each candidate field) is the one reader, shared with
``JobShop-v0`` and ``RulePolicy.decide``.

Ties are broken as the rules module documents: earlier queue entry, then the lower job id.
In a flexible job shop the decision machine ``M*`` is the one that can complete an operation
earliest; the rule chooses which operation it runs.

>>> from taktline.envs.jobshop import load_bundled
>>> r = dispatch(load_bundled("ft06"), "MWKR")
>>> r.scheme, r.makespan >= 55, r.reference_kind
('active', True, 'optimum')
"""

from __future__ import annotations

from dataclasses import dataclass

from taktline.agents.rules import DispatchRule, get_rule
from taktline.envs.encoding_jobshop import jobshop_candidates, jobshop_snapshot
from taktline.envs.jobshop.instance import JobShopInstance
from taktline.envs.jobshop.schedule import JobShopState, ScheduledOperation


@dataclass(frozen=True)
class DispatchResult:
    """The outcome of one rule on one instance.

    Attributes:
        instance: Instance name.
        rule: Rule name.
        scheme: ``"active"`` or ``"non-delay"``: which schedules the decisions could build.
        makespan: Length of the schedule.
        schedule: The operations, in decision order.
        reference: The optimum, or else the best known bound (see ``reference_kind``).
        reference_kind: ``"optimum"``, ``"upper_bound"``, ``"lower_bound"`` or ``None``.
        gap: ``makespan / reference - 1`` (``None`` without a reference).
    """

    instance: str
    rule: str
    scheme: str
    makespan: int
    schedule: list[ScheduledOperation]
    reference: int | None
    reference_kind: str | None
    gap: float | None

    def as_dict(self, with_schedule: bool = False) -> dict[str, object]:
        """Plain data (for ``--json``)."""
        out: dict[str, object] = {
            "instance": self.instance,
            "rule": self.rule,
            "scheme": self.scheme,
            "makespan": self.makespan,
            "reference": self.reference,
            "reference_kind": self.reference_kind,
            "gap": self.gap,
        }
        if with_schedule:
            out["schedule"] = [s._asdict() for s in self.schedule]
        return out


def dispatch(
    instance: JobShopInstance, rule: str | DispatchRule, scheme: str = "active"
) -> DispatchResult:
    """Schedule ``instance`` with a dispatching rule.

    Args:
        instance: The job shop (classical or flexible).
        rule: A rule name (``SPT``, ``LPT``, ``MWKR``, ``MOPNR``, ``FIFO``, ``EDD``, ...) or rule.
        scheme: ``"active"`` (Giffler–Thompson) or ``"non-delay"``.
    """
    r = get_rule(rule) if isinstance(rule, str) else rule
    state = JobShopState(instance, scheme)
    while not state.done:
        snap = jobshop_snapshot(state)
        cands = jobshop_candidates(snap)
        pick = r.dispatch(cands, now=float(snap.time), last_family=None)
        state.apply(cands[pick].id)
    ref, kind = instance.reference()
    return DispatchResult(
        instance=instance.name,
        rule=r.name,
        scheme=scheme,
        makespan=state.makespan,
        schedule=state.schedule,
        reference=ref,
        reference_kind=kind,
        gap=None if ref is None else state.makespan / ref - 1.0,
    )
