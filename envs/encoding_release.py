"""Codec of ``taktline/LineRelease-v0``: line snapshot -> observation and mask, action -> release.

The observation is the line block of :mod:`taktline.envs.encoding_line` followed by four
numbers about the orders waiting in the pool: their mean remaining work / ts, their smallest
and mean (due date - now) / ts (CLIP when none), and the share that would be late even if
started now.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from taktline.envs.control import release_under_cap
from taktline.envs.decision import Decision
from taktline.envs.encoding_line import CLIP, LineCodecBase, LineView
from taktline.envs.snapshot import LineSnapshot, as_line_snapshot
from taktline.envs.spec import LineSpec
from taktline.errors import InfeasibleActionError, PolicyError

if TYPE_CHECKING:
    from taktline.envs.twin import Twin


class LineReleaseCodec(LineCodecBase):
    """Codec of ``taktline/LineRelease-v0``.

    Args:
        spec: The line.
        action_mode: ``"count"`` (the action is how many orders to release, ``0..max_release``;
            more than wait in the pool is masked) or ``"wip_cap"`` (the action is a WIP cap
            ``0..max_release``: release until that many jobs are in the line).
        max_release: Largest count (or cap).
        dict_obs: Observations as ``{"observations", "action_mask"}``.
    """

    env_id = "taktline/LineRelease-v0"

    def __init__(
        self,
        spec: LineSpec,
        action_mode: str = "count",
        max_release: int = 8,
        dict_obs: bool = False,
    ) -> None:
        super().__init__(spec, dict_obs)
        if action_mode not in ("count", "wip_cap"):
            raise PolicyError(f"action_mode: expected 'count' or 'wip_cap', got {action_mode!r}")
        if max_release < 1:
            raise PolicyError(f"max_release: must be >= 1, got {max_release}")
        self.action_mode = action_mode
        self.max_release = max_release
        self._spaces(2 + 7 * len(self.station_names) + 4, max_release + 1)
        # the mask when k orders can be released (k = 0..max_release; copied per step)
        self._masks = [np.arange(max_release + 1) <= k for k in range(max_release + 1)]

    def view(self, snapshot: LineSnapshot | Mapping[str, Any]) -> LineView:
        """The numbers of ``snapshot`` this codec reads."""
        snap = as_line_snapshot(snapshot)
        v = self._base_view(snap)
        v.pool_jobs = [
            (rec.remaining_work, math.inf if rec.due_date is None else rec.due_date)
            for rec in snap.pool
        ]
        return v

    def twin_view(self, twin: Twin) -> LineView:
        """The same numbers read straight from a twin (the environment's fast path)."""
        v = self._twin_base(twin)
        v.pool_jobs = [(j.remwork[0], j.due_date) for j in twin.pool]
        return v

    def features(self, v: LineView) -> tuple[np.ndarray, np.ndarray]:
        """Observation and mask of a view."""
        feats = self._global_block(v)
        ts, now = self.time_scale, v.time
        if v.pool_jobs:
            n = len(v.pool_jobs)
            slack = [
                CLIP if d == math.inf else min(max((d - now) / ts, -CLIP), CLIP)
                for _, d in v.pool_jobs
            ]
            feats.extend(
                (
                    sum(rw for rw, _ in v.pool_jobs) / n / ts,
                    min(slack),
                    sum(slack) / n,
                    sum(1 for rw, d in v.pool_jobs if d - now < rw) / n,
                )
            )
        else:
            feats.extend((0.0, CLIP, CLIP, 0.0))
        k = min(v.pool, self.max_release) if self.action_mode == "count" else self.max_release
        return self._finish(feats), self._masks[k].copy()

    def decode(self, snapshot: LineSnapshot | Mapping[str, Any], action: int) -> Decision:
        """The release decision an action means on ``snapshot``.

        Raises:
            InfeasibleActionError: for an action the mask forbids.
        """
        snap = as_line_snapshot(snapshot)
        return self._decision(len(snap.pool), snap.wip, action)

    def decode_twin(self, twin: Twin, action: int) -> Decision:
        """``decode(twin.snapshot(), action)`` without building the snapshot (the envs' step)."""
        return self._decision(len(twin.pool), twin.wip, action)

    def _decision(self, pool: int, wip: int, action: int) -> Decision:
        a = int(action)
        if not 0 <= a <= self.max_release:
            raise InfeasibleActionError(
                f"action {a}: expected 0..{self.max_release} ({self.action_mode})"
            )
        if self.action_mode == "count":
            if a > pool:
                raise InfeasibleActionError(
                    f"action {a}: cannot release {a} orders, only {pool} wait in the pool;"
                    f" choose 0..{min(pool, self.max_release)}"
                )
            return Decision(kind="release", count=a)
        return Decision(kind="release", count=release_under_cap(pool, wip, a), wip_cap=a)
