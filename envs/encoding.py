"""Snapshot -> observation and action -> decision: the one code path of training and serving.

A **codec** belongs to an environment id and its kwargs. It turns a snapshot (the typed
:class:`~taktline.envs.snapshot.LineSnapshot` or :class:`~taktline.envs.snapshot.JobShopSnapshot`;
a dict is validated into one) into an observation and a feasibility mask, and an action back
into a :class:`~taktline.envs.decision.Decision`.
Environments build their observations through their codec, and serving builds a codec with
:func:`make_codec` from a policy bundle's env id and kwargs, without building an environment.

>>> from taktline.envs.twin import Twin
>>> from taktline.envs.spec import load_spec
>>> twin = Twin(load_spec("bodyshop"), seed=3)
>>> request = twin.run_until_decision()
>>> snap = twin.snapshot()
>>> obs, mask = encode(snap, "taktline/LineDispatch-v0", {"line": "bodyshop"})
>>> obs.dtype, int(mask.sum()) == len(request.candidates)
(dtype('float32'), True)
>>> decode(snap, 0, "taktline/LineDispatch-v0", {"line": "bodyshop"}).kind
'dispatch'
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np

from taktline.envs.decision import Decision
from taktline.envs.encoding_jobshop import JobShopCodec, jobshop_candidates
from taktline.envs.encoding_line import LineDispatchCodec
from taktline.envs.encoding_release import LineReleaseCodec
from taktline.envs.snapshot import (
    Candidate,
    JobShopSnapshot,
    Snapshot,
    as_snapshot,
    line_candidates,
)
from taktline.envs.spec import LineSpec, load_spec
from taktline.errors import PolicyError

JOBSHOP_ID = "taktline/JobShop-v0"
LINE_DISPATCH_ID = "taktline/LineDispatch-v0"
LINE_RELEASE_ID = "taktline/LineRelease-v0"
ENV_IDS: tuple[str, ...] = (JOBSHOP_ID, LINE_DISPATCH_ID, LINE_RELEASE_ID)


@runtime_checkable
class Codec(Protocol):
    """Observation and action spaces of an env, and the two functions between them and data."""

    observation_space: gym.spaces.Space[Any]
    action_space: gym.spaces.Discrete

    def encode(self, snapshot: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(observation float32, mask bool of shape (action_space.n,))`` of a snapshot."""
        ...

    def decode(self, snapshot: Any, action: int) -> Decision:
        """The domain decision; raises InfeasibleActionError for a masked action."""
        ...


def resolve_line(line: str | LineSpec) -> LineSpec:
    """A line spec from a bundled name, a file path or a spec (cached by name)."""
    if isinstance(line, LineSpec):
        return line
    return _load_line(str(line))


@lru_cache(maxsize=32)
def _load_line(ref: str) -> LineSpec:
    return load_spec(ref)


def make_codec(env_id: str, env_kwargs: dict[str, Any] | None = None) -> Codec:
    """Build the codec of ``env_id`` with ``env_kwargs`` (without building the env).

    Only the kwargs that shape observations and actions are read; others (``render_mode``,
    ``horizon``, ``reward``...) are ignored. A job shop without ``max_jobs``/``max_machines``
    takes them from its ``instance``.

    Raises:
        PolicyError: for an unknown env id or bad kwargs.
    """
    kw = dict(env_kwargs or {})

    def given(*names: str) -> dict[str, Any]:
        # only what the kwargs set: the codecs' own defaults are the one place defaults live
        return {n: kw[n] for n in names if n in kw}

    if env_id == LINE_DISPATCH_ID:
        opts = given("max_queue", "action_mode", "rules", "dict_obs")
        if "rules" in opts:
            opts["rules"] = tuple(opts["rules"])
        return LineDispatchCodec(resolve_line(kw.get("line", "bodyshop")), **opts)
    if env_id == LINE_RELEASE_ID:
        opts = given("action_mode", "max_release", "dict_obs")
        return LineReleaseCodec(resolve_line(kw.get("line", "bodyshop")), **opts)
    if env_id == JOBSHOP_ID:
        max_jobs, max_machines = kw.get("max_jobs"), kw.get("max_machines")
        if max_jobs is None or max_machines is None:
            from taktline.envs.env_jobshop import instance_size

            n_j, n_m = instance_size(kw.get("instance", "ft06"))
            max_jobs = n_j if max_jobs is None else max_jobs
            max_machines = n_m if max_machines is None else max_machines
        return JobShopCodec(int(max_jobs), int(max_machines), **given("dict_obs"))
    raise PolicyError(f"env id: unknown {env_id!r}; choose one of {', '.join(ENV_IDS)}")


@lru_cache(maxsize=64)
def _cached_codec(env_id: str, kwargs_json: str) -> Codec:
    return make_codec(env_id, json.loads(kwargs_json))


def _codec_for(snapshot: Snapshot, env_id: str | None, env_kwargs: dict[str, Any] | None) -> Codec:
    if env_id is None:
        env_id = infer_env_id(snapshot)
    kw = dict(env_kwargs or {})
    if env_id == JOBSHOP_ID:
        if not isinstance(snapshot, JobShopSnapshot):
            raise PolicyError(f"snapshot.kind: env {env_id} reads job-shop snapshots, got a line")
        kw.setdefault("max_jobs", len(snapshot.jobs))
        kw.setdefault("max_machines", len(snapshot.machines))
    elif "line" not in kw:
        if isinstance(snapshot, JobShopSnapshot):
            raise PolicyError(f"snapshot.kind: env {env_id} reads line snapshots, got 'jobshop'")
        kw["line"] = snapshot.line
    try:
        key = json.dumps(kw, sort_keys=True)
    except TypeError:  # a LineSpec or instance object: not cacheable by value
        return make_codec(env_id, kw)
    return _cached_codec(env_id, key)


def infer_env_id(snapshot: Snapshot) -> str:
    """The env id a snapshot belongs to: job shop, line release or line dispatch."""
    if isinstance(snapshot, JobShopSnapshot):
        return JOBSHOP_ID
    d = snapshot.decision
    return LINE_RELEASE_ID if d is not None and d.kind == "release" else LINE_DISPATCH_ID


def encode(
    snapshot: Snapshot | Mapping[str, Any],
    env_id: str | None = None,
    env_kwargs: dict[str, Any] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Observation and action mask of ``snapshot`` for env ``env_id`` with ``env_kwargs``.

    Args:
        snapshot: A line or job-shop snapshot (a dict is validated into one).
        env_id: The env the policy was trained on (default: inferred from the snapshot).
        env_kwargs: Its kwargs (default: the line named in the snapshot, or the job shop's
            size).
    """
    snap = as_snapshot(snapshot)
    return _codec_for(snap, env_id, env_kwargs).encode(snap)


def decode(
    snapshot: Snapshot | Mapping[str, Any],
    action: int,
    env_id: str | None = None,
    env_kwargs: dict[str, Any] | None = None,
) -> Decision:
    """The decision ``action`` means on ``snapshot`` (arguments as in :func:`encode`).

    Raises:
        InfeasibleActionError: for an action the mask forbids.
    """
    snap = as_snapshot(snapshot)
    return _codec_for(snap, env_id, env_kwargs).decode(snap, action)


def candidates_from_snapshot(snapshot: Snapshot | Mapping[str, Any]) -> list[Candidate]:
    """The waiting jobs of the snapshot's pending dispatch decision, as rule candidates.

    Raises:
        PolicyError: when the snapshot has no pending dispatch decision.
    """
    snap = as_snapshot(snapshot)
    if isinstance(snap, JobShopSnapshot):
        return list(jobshop_candidates(snap))
    return line_candidates(snap)
