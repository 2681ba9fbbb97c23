"""One interface for everything that decides: neural bundles, dispatching rules, CP-SAT.

A :class:`Policy` answers in two places:

* :meth:`Policy.choose` — the action for a taktline env's current state (training evaluation
  and benchmarks step real environments, so every policy is compared like with like);
* :meth:`Policy.decide` — the :class:`~taktline.envs.decision.Decision` for a snapshot (the
  typed :mod:`taktline.envs.snapshot`; a dict is validated into one), the one decide path of
  serving, its fallback and the envs' rule actions.

Neural policies also have :meth:`Policy.act` on batches of encoded observations and masks.
:func:`load_policy` turns a reference into a policy: a bundle directory, an MLflow model URI
(``models:/name@alias``, ``models:/name/3``, ``runs:/<id>/policy``), a rule name (``SPT``,
``MWKR``, ``CONWIP(12)``), ``cpsat`` / ``cpsat:30`` (seconds) or ``scheduler`` /
``scheduler:weights.npz`` (the learned job-shop scheduler; default: the shipped weights). A
suffix selects the mode of a neural policy: ``REF#sample`` (sampling), ``REF#best-of=16``
(job shops: the best of 16 sampled rollouts and the greedy one, simulated on a copy of the env
before the first decision).

>>> p = load_policy("SPT")
>>> from taktline.envs.jobshop import JobShopState, load_bundled
>>> from taktline.envs.encoding_jobshop import jobshop_snapshot
>>> snap = jobshop_snapshot(JobShopState(load_bundled("ft06")))
>>> p.decide(snap).job, load_policy("MWKR").decide(snap).job
(0, 2)
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

from taktline.envs.decision import Decision
from taktline.envs.snapshot import (
    Candidate,
    JobShopSnapshot,
    LineSnapshot,
    Snapshot,
    as_snapshot,
    line_candidates,
    pending_dispatch,
)
from taktline.errors import PolicyError

if TYPE_CHECKING:  # the bundle needs torch: imported where a bundle is loaded, so that rules
    # and CP-SAT decide without it
    from taktline.agents.bundle import PolicyBundle
    from taktline.envs.spec import LineSpec

JOBSHOP_ID = "taktline/JobShop-v0"


def _unwrapped(env: gym.Env[Any, Any]) -> Any:
    return getattr(env, "unwrapped", env)


class Policy:
    """Base class: a named decision maker (subclasses override what they support)."""

    name: str = "policy"

    def begin_episode(self, env: gym.Env[Any, Any]) -> None:
        """Called after ``env.reset`` (planning policies plan here)."""

    def choose(self, env: gym.Env[Any, Any], obs: Any, mask: np.ndarray) -> int:
        """The action for ``env``'s current state (``obs`` and ``mask`` as the env gave them)."""
        raise NotImplementedError

    def decide(self, snapshot: Snapshot | Mapping[str, Any]) -> Decision:
        """The decision for a snapshot (a dict is validated into a typed snapshot first)."""
        raise NotImplementedError

    def act(
        self,
        obs: np.ndarray,
        mask: np.ndarray | None = None,
        deterministic: bool = True,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        """Actions for a batch of encoded observations (neural policies only)."""
        raise PolicyError(
            f"policy {self.name}: acts on snapshots or environments, not on encoded observations"
        )


# ---- neural policies -----------------------------------------------------------------------
class NeuralPolicy(Policy):
    """A policy bundle as a policy: greedy, sampling, or best of N sampled rollouts.

    Args:
        bundle: The trained policy.
        deterministic: Greedy (the most likely action) rather than sampling.
        best_of: Job shops only: before the first decision, simulate ``best_of`` sampled
            rollouts and the greedy one on copies of the env and follow the shortest schedule.
        seed: Seed of the sampling generator.
        name: Display name (default: from the lineage).
    """

    def __init__(
        self,
        bundle: PolicyBundle,
        deterministic: bool = True,
        best_of: int = 0,
        seed: int = 0,
        name: str | None = None,
    ) -> None:
        if best_of < 0:
            raise PolicyError(f"best_of: must be >= 0, got {best_of}")
        if best_of and bundle.env_id != JOBSHOP_ID:
            raise PolicyError(
                f"best_of: rollouts need a deterministic twin (taktline/JobShop-v0), the bundle "
                f"was trained on {bundle.env_id}; a stochastic line would let rollouts see the "
                "future"
            )
        self.bundle = bundle
        self.deterministic = deterministic
        self.best_of = best_of
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        mode = f"best-of-{best_of}" if best_of else ("greedy" if deterministic else "sample")
        self.name = name or f"{bundle.lineage.get('name', 'neural')}[{mode}]"
        self._plan: list[int] = []
        self._planned = False
        self._codecs: dict[tuple[int, int], Any] = {}

    def act(
        self,
        obs: np.ndarray,
        mask: np.ndarray | None = None,
        deterministic: bool = True,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        return self.bundle.act(obs, mask, deterministic, rng or self.rng)

    def _one(self, obs: Any, mask: np.ndarray, deterministic: bool) -> int:
        if deterministic and isinstance(obs, np.ndarray):
            return self.bundle.act_one(obs, np.asarray(mask, dtype=bool))  # the one-row fast path
        o = (
            {k: np.asarray(v)[None] for k, v in obs.items()}
            if isinstance(obs, dict)
            else np.asarray(obs)[None]
        )
        return int(self.bundle.act(o, mask[None], deterministic, self.rng)[0])

    def begin_episode(self, env: gym.Env[Any, Any]) -> None:
        self._plan = []
        self._planned = False

    def choose(self, env: gym.Env[Any, Any], obs: Any, mask: np.ndarray) -> int:
        if self.best_of and not self._planned:
            self._plan = self._best_rollout(env, obs, mask)
            self._planned = True
        if self._plan:
            a = self._plan.pop(0)
            if mask[a]:
                return a
            self._plan = []  # the env left the plan (should not happen): act greedily
        return self._one(obs, mask, self.deterministic)

    def _best_rollout(
        self, env: gym.Env[Any, Any], start_obs: Any, start_mask: np.ndarray
    ) -> list[int]:
        """Actions of the best (highest return: shortest schedule) of ``best_of`` sampled
        rollouts and the greedy one, each simulated on a deep copy of the env."""
        base = _unwrapped(env)
        best: tuple[float, list[int]] | None = None
        for k in range(self.best_of + 1):
            sim = copy.deepcopy(base)
            obs, mask = start_obs, start_mask
            actions: list[int] = []
            ret, done = 0.0, False
            while not done:
                a = self._one(obs, mask, deterministic=k == 0)
                actions.append(a)
                obs, r, term, trunc, _ = sim.step(a)
                ret += r
                done = term or trunc
                mask = sim.action_masks()
            if best is None or ret > best[0]:
                best = (ret, actions)
        assert best is not None
        return best[1]

    def _codec(self, snapshot: Snapshot) -> Any:
        from taktline.envs.encoding import make_codec

        kw = dict(self.bundle.env_kwargs)
        key = (0, 0)
        if self.bundle.env_id == JOBSHOP_ID and self.bundle.size_agnostic:
            # a size-agnostic policy runs on any shop: pad to at least the snapshot's size
            n_j, n_m = (
                (len(snapshot.jobs), len(snapshot.machines))
                if isinstance(snapshot, JobShopSnapshot)
                else (0, 0)
            )
            key = (
                max(int(kw.get("max_jobs") or 0), n_j),
                max(int(kw.get("max_machines") or 0), n_m),
            )
            kw.update(max_jobs=key[0], max_machines=key[1])
        if key not in self._codecs:
            self._codecs[key] = make_codec(self.bundle.env_id, kw)
        return self._codecs[key]

    def decide(self, snapshot: Snapshot | Mapping[str, Any]) -> Decision:
        return self.decide_action(snapshot)[1]

    def decide_action(self, snapshot: Snapshot | Mapping[str, Any]) -> tuple[int, Decision]:
        """``encode -> act -> decode``: the action the network takes on ``snapshot`` and the
        decision it means (serving reports both; :meth:`decide` is its second half).

        Raises:
            PolicyError: when the snapshot cannot be encoded for this policy or its mask allows
                no action.
        """
        snap = as_snapshot(snapshot)
        codec = self._codec(snap)
        obs, mask = codec.encode(snap)
        a = self._one(obs, mask, self.deterministic)
        decision: Decision = codec.decode(snap, a)
        return a, decision


# ---- rules -----------------------------------------------------------------------------------
class RulePolicy(Policy):
    """A dispatching rule (``SPT``, ``MWKR``, ...) or release rule (``CONWIP(12)``) as a policy.

    :meth:`decide` is the only place a rule meets a snapshot: serving's fallback calls it, and
    :meth:`choose` in an env decides on the env's snapshot and maps the decision to the action
    that means it. In a line env with ``action_mode="job"`` the rule ranks the jobs the mask
    allows (the first ``max_queue`` waiting), so it competes on the same decisions as a trained
    policy; everywhere else it ranks every waiting job.

    Args:
        rule: A dispatching or a release rule.
        release: With a dispatching ``rule``, the release rule that answers release decisions
            (serving's fallback answers both kinds).
    """

    def __init__(self, rule: str, release: str | None = None) -> None:
        from taktline.agents.rules import RELEASE_RULES, get_release_rule, get_rule

        head = rule.strip().upper().partition("(")[0]
        self.kind = "release" if head in RELEASE_RULES else "dispatch"
        if release is not None and self.kind == "release":
            raise PolicyError(f"release: {rule!r} is a release rule already; pass one rule")
        self.dispatch_rule = get_rule(rule) if self.kind == "dispatch" else None
        release = rule if self.kind == "release" else release
        self.release_rule = get_release_rule(release) if release is not None else None
        self.name = (
            self.dispatch_rule.name if self.dispatch_rule is not None else rule.strip().upper()
        )

    # -- the decide path ---------------------------------------------------------------
    def decide(self, snapshot: Snapshot | Mapping[str, Any]) -> Decision:
        snap = as_snapshot(snapshot)
        if isinstance(snap, JobShopSnapshot):
            return self._jobshop(snap)
        if snap.decision is None:
            raise PolicyError(
                "snapshot.decision: the line waits for no decision; post the snapshot of a "
                "decision point (a free machine with jobs waiting, or a release point)"
            )
        if snap.decision.kind == "release":
            return self._release(snap)
        return self._line_dispatch(snap, None)

    def _rank(self, cands: Sequence[Candidate], now: float, family: str | None) -> int:
        if self.dispatch_rule is None:
            raise PolicyError(f"rule {self.name}: a release rule cannot dispatch jobs")
        return self.dispatch_rule.dispatch(cands, now, family)

    def _jobshop(self, snap: JobShopSnapshot) -> Decision:
        from taktline.envs.encoding_jobshop import jobshop_candidates

        cands = jobshop_candidates(snap)
        return _jobshop_decision(snap, cands[self._rank(cands, float(snap.time), None)].id)

    def _line_dispatch(self, snap: LineSnapshot, limit: int | None) -> Decision:
        station, machine = pending_dispatch(snap)
        cands = line_candidates(snap)[:limit]
        k = self._rank(cands, snap.time, machine.family)
        return Decision(
            kind="dispatch",
            station=station.name,
            machine=machine.id,
            job=cands[k].name,
            rule=self.name,
        )

    def _release(self, snap: LineSnapshot) -> Decision:
        if self.release_rule is None:
            raise PolicyError(f"rule {self.name}: a dispatching rule cannot release orders")
        n = self.release_rule.release(len(snap.pool), snap.wip, snap.time)
        return Decision(kind="release", count=int(n), rule=self.release_rule.name)

    # -- in an env: the same decision, as the action that means it ---------------------
    def choose(self, env: gym.Env[Any, Any], obs: Any, mask: np.ndarray) -> int:
        base = _unwrapped(env)
        snap = as_snapshot(base.snapshot())
        if isinstance(snap, JobShopSnapshot):
            return int(self._jobshop(snap).job)  # type: ignore[arg-type]
        codec = base.codec
        if snap.decision is not None and snap.decision.kind == "release":
            return self._release_action(snap, codec, mask)
        if self.dispatch_rule is None:
            raise PolicyError(f"rule {self.name}: a release rule cannot dispatch jobs")
        if getattr(codec, "action_mode", "job") == "rule":
            if self.name not in codec.rules:
                raise PolicyError(
                    f"rule {self.name}: not among the env's rules {list(codec.rules)}; add it to "
                    "env_kwargs.rules"
                )
            return int(codec.rules.index(self.name))
        return dispatch_action(snap, self._line_dispatch(snap, len(mask)))

    def _release_action(self, snap: LineSnapshot, codec: Any, mask: np.ndarray) -> int:
        if self.release_rule is None:
            raise PolicyError(f"rule {self.name}: a dispatching rule cannot release orders")
        if self.release_rule.name == "KANBAN":
            raise PolicyError("rule KANBAN: limits stations, not release counts; use CONWIP(w)")
        if codec.action_mode == "count":
            n = int(self._release(snap).count or 0)
            return int(min(n, int(np.flatnonzero(mask).max())))
        cap = getattr(self.release_rule, "wip_cap", codec.max_release)
        return int(min(cap, codec.max_release))


def line_spec_for(snapshot: LineSnapshot, spec: LineSpec | None, name: str, hint: str) -> LineSpec:
    """``spec``, or the bundled line or spec file ``name`` when None, checked against the
    snapshot's spec hash (what a policy that simulates or reads routings plans on).

    Raises:
        PolicyError: when ``name`` is no line, or the snapshot is of another spec; ``hint``
            says how to give the right one.
    """
    from taktline.envs.spec import load_spec
    from taktline.errors import SpecError

    if spec is None:
        try:
            spec = load_spec(name)
        except SpecError as exc:
            raise PolicyError(
                f"snapshot.line: {name!r} is no bundled line or spec file ({exc}); {hint}"
            ) from None
    if snapshot.spec_hash and snapshot.spec_hash != spec.spec_hash():
        raise PolicyError(
            f"snapshot.spec_hash: {snapshot.spec_hash!r} is not line {spec.name!r} "
            f"({spec.spec_hash()}); {hint}"
        )
    return spec


def dispatch_action(snapshot: LineSnapshot, decision: Decision) -> int:
    """The job-mode action of a line env that means ``decision``: the job's place in the queue
    of the pending dispatch (what ``LineDispatch-v0`` with ``action_mode="job"`` decodes)."""
    station, _ = pending_dispatch(snapshot)
    for k, rec in enumerate(station.queue):
        if rec.id == decision.job:
            return k
    raise PolicyError(
        f"decision.job: {decision.job!r} is not waiting at {station.name!r}; decide on the "
        "env's own snapshot"
    )


def _jobshop_decision(snapshot: JobShopSnapshot, job: int) -> Decision:
    from taktline.envs.encoding_jobshop import JobShopCodec

    codec = JobShopCodec(len(snapshot.jobs), len(snapshot.machines))
    decision: Decision = codec.decode(snapshot, job)
    return decision


# ---- CP-SAT ----------------------------------------------------------------------------------
class CpSatPolicy(Policy):
    """The CP-SAT schedule of the whole instance, followed decision by decision.

    Plans once per instance (at the episode's start, or on the first snapshot of a bundled
    instance) and then, at each decision, starts the candidate whose operation starts first in
    the plan made active — which rebuilds the plan exactly (the replay argument of
    :mod:`taktline.envs.jobshop.replay`).

    Args:
        time_limit_s: CP-SAT's limit per instance.
        num_workers: Search workers.
    """

    def __init__(self, time_limit_s: float = 10.0, num_workers: int = 2) -> None:
        self.time_limit_s = time_limit_s
        self.num_workers = num_workers
        self.name = f"CPSAT({time_limit_s:g}s)"
        self._plans: dict[Any, dict[tuple[int, int], int]] = {}
        self._target: dict[tuple[int, int], int] = {}

    def _plan(self, instance: Any) -> dict[tuple[int, int], int]:
        key = (instance.name, hash(instance.jobs))
        if key not in self._plans:
            from taktline.agents.cpsat import solve
            from taktline.envs.jobshop.replay import make_active

            result = solve(instance, self.time_limit_s, self.num_workers)
            if not result.schedule:
                raise PolicyError(
                    f"CP-SAT: no schedule for {instance.name} within {self.time_limit_s} s "
                    f"({result.status}); raise the time limit"
                )
            active = make_active(instance, result.schedule)
            self._plans[key] = {(so.job, so.op): so.start for so in active}
        return self._plans[key]

    def begin_episode(self, env: gym.Env[Any, Any]) -> None:
        base = _unwrapped(env)
        if not hasattr(base, "instance") or base.instance is None:
            raise PolicyError("CP-SAT: plans job shops only (taktline/JobShop-v0)")
        self._target = self._plan(base.instance)

    def choose(self, env: gym.Env[Any, Any], obs: Any, mask: np.ndarray) -> int:
        state = _unwrapped(env).state
        return int(
            min(state.candidate_jobs, key=lambda j: (self._target[(j, state.next_op[j])], j))
        )

    def decide(self, snapshot: Snapshot | Mapping[str, Any]) -> Decision:
        from taktline.envs.jobshop.bundled import resolve_instance

        snap = as_snapshot(snapshot)
        if not isinstance(snap, JobShopSnapshot):
            raise PolicyError("CP-SAT: decides job-shop snapshots only")
        try:
            target = self._plan(resolve_instance(snap.instance))
        except Exception as exc:
            raise PolicyError(f"CP-SAT: cannot plan instance {snap.instance!r}: {exc}") from exc
        if snap.decision is None:
            raise PolicyError("snapshot.decision: the schedule is complete; nothing to dispatch")
        cands = [c.job for c in snap.decision.candidates]
        nxt = {j.id: j.next_op for j in snap.jobs}
        return _jobshop_decision(snap, min(cands, key=lambda j: (target[(j, nxt[j])], j)))


# ---- loading ---------------------------------------------------------------------------------
def find_bundle(root: Path) -> Path:
    """The bundle directory at or under ``root`` (an MLflow model keeps it among artifacts)."""
    from taktline.agents.bundle import BUNDLE_FILE

    if (root / BUNDLE_FILE).is_file():
        return root
    found = sorted((p.parent for p in root.rglob(BUNDLE_FILE)), key=lambda p: len(p.parts))
    if not found:
        raise PolicyError(f"{root}: no policy bundle ({BUNDLE_FILE}) in it or below it")
    return found[0]


def load_bundle(ref: str) -> PolicyBundle:
    """A bundle from a directory or an MLflow URI (``models:/...``, ``runs:/...``).

    MLflow and torch are imported only here; the registry version is kept in ``bundle.version``.
    """
    from taktline.agents.bundle import PolicyBundle

    if ref.startswith(("models:/", "runs:/", "mlflow-artifacts:/")):
        import os

        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # quiet CLIs
        import mlflow

        from taktline.agents.registry import parse_models_uri, registry_version

        parsed = parse_models_uri(ref) if ref.startswith("models:/") else None
        version = registry_version(*parsed) if parsed else None
        dst = tempfile.mkdtemp(prefix="taktline-policy-")
        local = mlflow.artifacts.download_artifacts(artifact_uri=ref, dst_path=dst)
        bundle = PolicyBundle.load(find_bundle(Path(local)))
        bundle.version = version or bundle.version
        return bundle
    path = Path(ref).expanduser()
    if not path.exists():
        raise PolicyError(
            f"policy {ref!r}: no such bundle directory, MLflow URI or rule; give a path written "
            "by `taktline train`, models:/NAME@ALIAS, runs:/RUN/policy, a rule (SPT, MWKR, "
            "CONWIP(10), ...) or cpsat"
        )
    return PolicyBundle.load(find_bundle(path))


def load_policy(ref: str, seed: int = 0) -> Policy:
    """A policy from a reference (see the module docstring for the forms).

    Raises:
        PolicyError: for a reference that names nothing loadable.
    """
    from taktline.agents.rules import DISPATCH_RULES, RELEASE_RULES

    base, _, mode = ref.partition("#")
    text = base.strip()
    head = text.upper().partition("(")[0]
    if head.startswith("RULE:"):
        return RulePolicy(text[5:])
    if head == "LOOKAHEAD":
        from taktline.agents.lookahead import LookaheadPolicy

        return LookaheadPolicy.parse(text)
    from taktline.agents.tuned import FAMILIES

    if head in DISPATCH_RULES or head in RELEASE_RULES or head in FAMILIES:
        return RulePolicy(text)
    if head == "SCHEDULER" or head.startswith("SCHEDULER:"):
        from taktline.agents.jobshop_policy import SchedulerPolicy

        weights = text.partition(":")[2].strip()
        return SchedulerPolicy(weights or None)
    if head == "CPSAT" or head.startswith("CPSAT:"):
        raw = text.partition(":")[2].strip() or "10"
        try:
            limit = float(raw)
        except ValueError:
            limit = float("nan")
        if not (limit > 0 and limit < float("inf")):
            raise PolicyError(
                f"policy {ref!r}: cpsat's time limit must be a positive number of seconds, "
                f"got {raw!r}; e.g. cpsat:30"
            )
        return CpSatPolicy(time_limit_s=limit)
    bundle = load_bundle(text)
    deterministic, best_of = True, 0
    if mode:
        key, _, val = mode.partition("=")
        if key == "sample":
            deterministic = False
        elif key in ("best-of", "best_of") and val.isdigit():
            best_of = int(val)
        elif key != "greedy":
            raise PolicyError(
                f"policy {ref!r}: unknown mode {mode!r}; use #greedy, #sample or #best-of=N"
            )
    label = bundle.lineage.get("name") or Path(text).name or text
    if bundle.version:
        label = f"{label}/v{bundle.version}"
    mode_name = f"best-of-{best_of}" if best_of else ("greedy" if deterministic else "sample")
    return NeuralPolicy(bundle, deterministic, best_of, seed, name=f"{label}[{mode_name}]")
