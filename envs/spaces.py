"""A ``Discrete`` action space whose ``sample()`` draws a *feasible* action.

taktline envs raise :class:`~taktline.errors.InfeasibleActionError` for an action their mask
forbids (never a silent no-op), so ``env.action_space.sample()`` - the universal random policy,
also used by Gymnasium's and SB3's env checkers - must respect the mask of the env's current
decision. :class:`MaskedDiscrete` does: it equals a plain ``Discrete(n)`` (same ``n``, same
``repr``, same batching in vector envs) and only changes ``sample()`` without arguments.

One subtlety: Gymnasium's step-determinism check draws a sample *before* ``reset()`` and applies
it after. A sample is therefore a :class:`SampledAction` that remembers the decision it was
drawn for and its uniform draw; an env given a sample drawn at an earlier decision that is
infeasible now redraws it from the same uniform draw over the current mask (deterministic). Any
other infeasible action is an error.
"""

from __future__ import annotations

from typing import Any, Protocol

import gymnasium as gym
import numpy as np


class MaskOwner(Protocol):
    """What the space asks its env: the current mask and a counter of decisions."""

    decision_count: int

    def action_masks(self) -> np.ndarray: ...


class SampledAction(int):
    """An action drawn by :meth:`MaskedDiscrete.sample` (an ``int`` with its provenance)."""

    decision: int
    draw: float

    def __new__(cls, value: int, decision: int, draw: float) -> SampledAction:
        obj = super().__new__(cls, value)
        obj.decision = decision
        obj.draw = draw
        return obj

    def __reduce__(self) -> tuple[Any, ...]:
        return (SampledAction, (int(self), self.decision, self.draw))


def pick(mask: np.ndarray, draw: float) -> int:
    """The feasible action a uniform ``draw`` in [0, 1) selects from ``mask``."""
    feasible = np.flatnonzero(mask)
    return int(feasible[min(int(draw * len(feasible)), len(feasible) - 1)])


class MaskedDiscrete(gym.spaces.Discrete):
    """``Discrete(n)`` whose argument-free ``sample()`` returns a feasible action of ``owner``.

    >>> import numpy as np
    >>> class Env:
    ...     decision_count = 0
    ...     def action_masks(self):
    ...         return np.array([False, True, False, True])
    >>> space = MaskedDiscrete(4, Env(), seed=0)
    >>> sorted({int(space.sample()) for _ in range(20)})
    [1, 3]
    >>> space == gym.spaces.Discrete(4)
    True
    """

    def __init__(self, n: int, owner: MaskOwner, seed: int | None = None) -> None:
        super().__init__(n, seed=seed)
        self.owner = owner

    def sample(self, mask: Any = None, probability: Any = None) -> Any:
        if mask is not None or probability is not None:
            return super().sample(mask=mask, probability=probability)
        current = self.owner.action_masks()
        if not current.any():  # no decision pending (e.g. after the last step)
            return super().sample()
        draw = float(self.np_random.random())
        return SampledAction(pick(current, draw), self.owner.decision_count, draw)

    def __repr__(self) -> str:
        return f"Discrete({self.n})"


def resolve_action(action: Any, mask: np.ndarray, decision_count: int) -> int | None:
    """The feasible action to apply for ``action``, or ``None`` when it is infeasible.

    A :class:`SampledAction` drawn at an earlier decision is redrawn over ``mask``.
    """
    a = int(action)
    if 0 <= a < len(mask) and mask[a]:
        return a
    if isinstance(action, SampledAction) and action.decision != decision_count and mask.any():
        return pick(mask, action.draw)
    return None
