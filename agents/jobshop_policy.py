"""A learned constructive scheduler for classical job shops, and its batched roll-outs.

:class:`SchedulerNet` scores every job of a partial schedule from the features of
:mod:`taktline.agents.jobshop_features` (one row per job, so one network serves any size): a
per-job encoder, and a scoring head that also sees summaries of all jobs (the mean over the
unfinished ones, the mean and the max over the candidates); the scores of non-candidates are
masked. :func:`rollout` builds ``B``
schedules of one instance in lockstep (:class:`~taktline.envs.jobshop.batch.JobShopBatch`),
greedily or by sampling. :func:`policy_solve` is ``taktline solve --method policy``: the greedy
schedule, then batches of sampled ones until the time limit, the best kept.

The weights that ship with the package (``jobshop_policy.npz`` beside this module) were trained
by self-labeling (:mod:`taktline.training.jobshop_selflabel`; the command is in
``docs/jobshop.md``).

>>> from taktline.envs.jobshop import load_bundled
>>> r = policy_solve(load_bundled("ft06"), time_limit_s=0.5, seed=0)
>>> r.makespan >= 55
True
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from taktline.agents.jobshop_features import (
    N_FEATURES,
    InstanceTables,
    batch_features,
    features,
    unscheduled_load,
)
from taktline.agents.jobshop_search import AnytimePoint, SearchResult, _batch_row, require_classical
from taktline.agents.policies import Policy, line_spec_for
from taktline.envs.decision import Decision
from taktline.envs.jobshop.batch import JobShopBatch
from taktline.envs.jobshop.instance import JobShopInstance
from taktline.envs.snapshot import LineSnapshot, Snapshot, as_snapshot
from taktline.errors import PolicyError

WEIGHTS_FILE = "jobshop_policy.npz"


@dataclass(frozen=True)
class NetConfig:
    """Sizes of :class:`SchedulerNet`: embedding width, message-passing rounds, and the heads
    of a self-attention layer among the unfinished jobs (0: none)."""

    dim: int = 64
    rounds: int = 1
    heads: int = 0


class SchedulerNet(nn.Module):
    """Scores the jobs of partial schedules; ``forward(x, mask)`` -> masked logits ``(B, n)``.

    Every job is embedded from its features; then, ``rounds`` times, each job's embedding is
    updated from itself and three summaries of the schedule (the mean over unfinished jobs, the
    mean and the max over candidates). Only the candidates are scored, by an MLP over the last
    embedding and the summaries, so a step costs little more than the embedding of the jobs.
    """

    def __init__(self, config: NetConfig = NetConfig()):
        super().__init__()
        d = config.dim
        self.config = config
        self.encode = nn.Sequential(nn.Linear(N_FEATURES, d), nn.ReLU(), nn.Linear(d, d), nn.ReLU())
        self.attend = nn.ModuleList(
            [nn.MultiheadAttention(d, config.heads, batch_first=True)] if config.heads else []
        )
        self.update = nn.ModuleList(
            nn.Sequential(nn.Linear(4 * d, d), nn.ReLU()) for _ in range(config.rounds - 1)
        )
        self.score = nn.Sequential(
            nn.Linear(4 * d, d), nn.ReLU(), nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 1)
        )

    @staticmethod
    def _summaries(h: Tensor, live: Tensor, mask: Tensor) -> Tensor:
        lw = live.unsqueeze(-1).to(h.dtype)
        cw = mask.unsqueeze(-1).to(h.dtype)
        mean_live = (h * lw).sum(1, keepdim=True) / lw.sum(1, keepdim=True).clamp(min=1.0)
        mean_cand = (h * cw).sum(1, keepdim=True) / cw.sum(1, keepdim=True).clamp(min=1.0)
        max_cand = h.masked_fill(~mask.unsqueeze(-1), 0.0).amax(1, keepdim=True)
        return torch.cat([mean_live, mean_cand, max_cand], dim=-1)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """Logits of every job; ``-inf`` where ``mask`` (the candidates) is False."""
        h = self.encode(x)
        live = x[..., 1] < 0.5
        if len(self.attend):
            # finished jobs are not attended to (a finished schedule's row attends to all)
            ignore = ~live & live.any(1, keepdim=True)
            h = h + self.attend[0](h, h, h, key_padding_mask=ignore, need_weights=False)[0]
        for layer in self.update:
            s = self._summaries(h, live, mask).expand(-1, h.shape[1], -1)
            h = h + layer(torch.cat([h, s], dim=-1))
        s = self._summaries(h, live, mask).expand(-1, h.shape[1], -1)
        logits = torch.full(mask.shape, float("-inf"), dtype=h.dtype, device=h.device)
        logits[mask] = self.score(torch.cat([h, s], dim=-1)[mask]).squeeze(-1)
        return logits


@dataclass
class Rollouts:
    """``B`` schedules of one instance: makespans ``(B,)``, actions ``(T, B)``, start times."""

    makespan: np.ndarray
    actions: np.ndarray
    start: np.ndarray


@torch.no_grad()
def rollout(
    net: SchedulerNet,
    instance: JobShopInstance,
    batch_size: int,
    greedy: bool,
    rng: np.random.Generator,
    scheme: str = "active",
    deadline: float | None = None,
    device: str = "cpu",
    temperature: float = 1.0,
) -> Rollouts | None:
    """Build ``batch_size`` schedules with ``net``: argmax (``greedy``) or sampled choices.

    Row 0 of a sampled batch is greedy, so best-of-N is never worse than the greedy schedule.
    Sampling draws from ``softmax(logits / temperature)``.
    Returns None when ``deadline`` (a ``time.perf_counter()`` value) passes first.
    """
    tables = InstanceTables(instance)
    batch = JobShopBatch(instance, batch_size, scheme)
    rem = np.tile(tables.machine_load, (batch_size, 1))
    actions = []
    rows = np.arange(batch_size)
    while not batch.done:
        if deadline is not None and time.perf_counter() > deadline:
            return None
        mask = batch.mask
        single = mask.sum(axis=1) <= 1
        if single.all():
            choice = mask.argmax(axis=1)
        else:
            x = torch.from_numpy(batch_features(tables, batch, rem)).to(device)
            logits = net(x, torch.from_numpy(mask).to(device)).cpu().numpy().astype(np.float64)
            if greedy:
                choice = logits.argmax(axis=1)
            else:
                g = -np.log(-np.log(rng.random(logits.shape) + 1e-12) + 1e-12)
                g[0] = 0.0
                choice = (logits / temperature + g).argmax(axis=1)
            choice = np.where(single, mask.argmax(axis=1), choice)
        choice = np.where(batch.row_done, 0, choice)
        live = ~batch.row_done
        m = tables.seq_m[choice, batch.next_op[rows, choice]]
        p = tables.seq_p[choice, batch.next_op[rows, choice]]
        rem[rows[live], m[live]] -= p[live]
        batch.apply(choice)
        actions.append(choice)
    return Rollouts(batch.makespan.copy(), np.array(actions), batch.start.copy())


def replay_features(
    instance: JobShopInstance, actions: np.ndarray, scheme: str = "active"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features ``(T, n, F)``, masks ``(T, n)`` and actions ``(T,)`` of one schedule's choices,
    keeping only the steps with more than one candidate (the ones a policy decides)."""
    tables = InstanceTables(instance)
    batch = JobShopBatch(instance, 1, scheme)
    rem = tables.machine_load[None, :].copy()
    xs, masks, acts = [], [], []
    for a in actions:
        if batch.done:
            break
        if batch.mask[0].sum() > 1:
            xs.append(batch_features(tables, batch, rem)[0])
            masks.append(batch.mask[0].copy())
            acts.append(int(a))
        j = int(a)
        i = batch.next_op[0, j]
        rem[0, tables.seq_m[j, i]] -= tables.seq_p[j, i]
        batch.apply(np.array([j]))
    n = instance.n_jobs
    if not xs:
        return np.zeros((0, n, N_FEATURES), np.float32), np.zeros((0, n), bool), np.zeros(0, int)
    return np.stack(xs), np.stack(masks), np.array(acts)


def save_net(net: SchedulerNet, path: Path, meta: dict[str, Any]) -> None:
    """Weights and ``meta`` (with the network's sizes) to one ``.npz``."""
    arrays = {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}
    info = {"config": net.config.__dict__, "n_features": N_FEATURES, **meta}
    np.savez_compressed(path, __meta__=np.array(json.dumps(info)), **arrays)


def read_weights(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """The arrays (an ``NpzFile``) and the metadata of a :func:`save_net` file, unchecked."""
    try:
        data = np.load(path, allow_pickle=False)
        meta = json.loads(str(data["__meta__"]))
    except (OSError, ValueError, KeyError) as exc:
        raise PolicyError(f"weights {str(path)!r}: not a job-shop policy file ({exc})") from None
    return data, meta


def load_net(path: str | Path | None = None) -> tuple[SchedulerNet, dict[str, Any]]:
    """A network saved by :func:`save_net`; the shipped weights when ``path`` is None."""
    if path is None:
        ref = resources.files("taktline.agents").joinpath(WEIGHTS_FILE)
        if not ref.is_file():
            raise PolicyError(
                f"the shipped job-shop weights ({WEIGHTS_FILE}) are missing from this install; "
                "reinstall taktline or pass a weights file"
            )
        with resources.as_file(ref) as p:
            return load_net(p)
    data, meta = read_weights(path)
    if meta.get("n_features") != N_FEATURES:
        raise PolicyError(
            f"weights {str(path)!r}: made for {meta.get('n_features')} features, this version "
            f"computes {N_FEATURES}; retrain with `taktline train-jobshop`"
        )
    net = SchedulerNet(NetConfig(**meta["config"]))
    net.load_state_dict({k: torch.from_numpy(data[k]) for k in data.files if k != "__meta__"})
    net.eval()
    return net, meta


def trained_scheme(meta: dict[str, Any]) -> str:
    """The generation scheme the weights of ``meta`` were trained in."""
    return str(meta.get("config_run", {}).get("scheme", "active"))


def mirrored(instance: JobShopInstance) -> JobShopInstance:
    """The time-reversed job shop: every job's operations in reverse order.

    A schedule of the mirror read backwards in time (an operation that runs ``[s, e)`` there
    runs ``[C - e, C - s)`` here) is a schedule of ``instance`` with the same makespan ``C``, so
    the two have the same optimum; a dispatcher often finds one direction easier.
    """
    return JobShopInstance(
        tuple(tuple(reversed(ops)) for ops in instance.jobs),
        instance.n_machines,
        name=f"{instance.name}-mirror",
    )


def unmirror_start(instance: JobShopInstance, start: np.ndarray, makespan: int) -> np.ndarray:
    """Start times ``(n_jobs, max_ops)`` in ``instance`` of a schedule of its :func:`mirrored`."""
    out = np.full_like(start, -1)
    for j, ops in enumerate(instance.jobs):
        n = len(ops)
        for i, alts in enumerate(ops):
            out[j, i] = makespan - (start[j, n - 1 - i] + alts[0][1])
    return out


@dataclass(frozen=True)
class LearnedScheduler:
    """A network with how to use it: its generation scheme, its sampling temperature, and
    whether sampling splits its schedules between the instance and its :func:`mirrored` one."""

    net: SchedulerNet
    scheme: str = "active"
    temperature: float = 1.0
    mirror: bool = True

    @classmethod
    def load(cls, weights: str | Path | None = None) -> LearnedScheduler:
        """From a ``.npz`` of :func:`save_net` (default: the shipped weights)."""
        net, meta = load_net(weights)
        return cls(net, trained_scheme(meta), float(meta.get("sampling_temperature", 1.0)))


def policy_solve(
    instance: JobShopInstance,
    time_limit_s: float = 1.0,
    seed: int = 0,
    samples: int | None = None,
    batch_size: int = 64,
    scheduler: LearnedScheduler | None = None,
    clock: float | None = None,
) -> SearchResult:
    """The learned policy's greedy schedule, then sampled batches until the limit; the best.

    Args:
        instance: A classical job shop.
        time_limit_s: Budget; the greedy schedule is always built.
        seed: Seed of the sampling.
        samples: Stop after this many schedules (default: only the time limit stops).
        batch_size: Schedules built per batch.
        scheduler: The network and its settings (default: the shipped weights).
        clock: ``time.perf_counter()`` value the anytime log counts from (default: now).
    """
    result = policy_search(
        instance, time_limit_s, seed, samples, batch_size, scheduler, clock, greedy_always=True
    )
    assert result is not None
    return result


def policy_search(
    instance: JobShopInstance,
    time_limit_s: float,
    seed: int = 0,
    samples: int | None = None,
    batch_size: int = 64,
    scheduler: LearnedScheduler | None = None,
    clock: float | None = None,
    greedy_always: bool = False,
) -> SearchResult | None:
    """:func:`policy_solve`; without ``greedy_always`` it gives up (None) when even the greedy
    schedule cannot be built within ``time_limit_s`` (a stage of a larger search)."""
    require_classical(instance, "policy")
    t0 = time.perf_counter() if clock is None else clock
    started = time.perf_counter()
    deadline = started + time_limit_s
    sched = scheduler or LearnedScheduler.load()
    net, scheme = sched.net, sched.scheme
    rng = np.random.default_rng(seed)
    first = rollout(net, instance, 1, True, rng, scheme, None if greedy_always else deadline)
    if first is None:
        return None
    best_ms, best_start = int(first.makespan[0]), first.start[0]
    log = [AnytimePoint(time.perf_counter() - t0, best_ms, "policy-greedy")]
    built = 1
    mirror = mirrored(instance) if sched.mirror else None
    # With the mirror each round samples half a batch forward and half on the mirror; row 0
    # of a batch is its direction's greedy schedule, new only the first time on the mirror.
    size = max(1, batch_size // 2) if mirror is not None else batch_size
    mirror_greedy_built = False
    while time.perf_counter() < deadline and (samples is None or built < samples):
        for inst in (instance, mirror):
            if inst is None or (samples is not None and built >= samples):
                continue
            repeats = 1 if inst is instance or mirror_greedy_built else 0
            n = size if samples is None else min(size, samples - built + repeats)
            r = rollout(net, inst, n, False, rng, scheme, deadline, temperature=sched.temperature)
            if r is None:
                break
            built += n - repeats
            mirror_greedy_built = mirror_greedy_built or inst is mirror
            k = int(r.makespan.argmin())
            if int(r.makespan[k]) < best_ms:
                best_ms, best_start = int(r.makespan[k]), r.start[k]
                stage = "policy-sampling"
                if inst is mirror:
                    best_start = unmirror_start(instance, best_start, best_ms)
                    stage = "policy-sampling-mirror"
                log.append(AnytimePoint(time.perf_counter() - t0, best_ms, stage))
    schedule = sorted(_batch_row(instance, best_start), key=lambda s: (s.start, s.machine))
    return SearchResult(best_ms, schedule, log, built, time.perf_counter() - started)


class SchedulerPolicy(Policy):
    """The learned scheduler behind the one decide path (``load_policy("scheduler")``).

    :meth:`decide` scores the candidates of a job-shop snapshot (its instance resolved by name:
    bundled, a Taillard name or a file) and answers the best; on a line snapshot's dispatch
    decision it scores the queue as the job shop left to do
    (:mod:`taktline.agents.jobshop_online`: a dynamic job shop dispatched online). :meth:`choose`
    asks the same question of an env's current state through its snapshot, so evaluation,
    serving and ``simulate`` go one way.

    Args:
        weights: A ``.npz`` from ``taktline train-jobshop`` (default: the shipped weights).
    """

    def __init__(self, weights: str | Path | None = None) -> None:
        self.net = LearnedScheduler.load(weights).net
        self.name = "SCHEDULER" if weights is None else f"SCHEDULER({Path(weights).name})"
        self._tables: dict[Any, InstanceTables] = {}
        self._spec: Any = None

    def choose(self, env: Any, obs: Any, mask: np.ndarray) -> int:
        from taktline.agents.policies import dispatch_action
        from taktline.envs.jobshop.snapshots import jobshop_snapshot

        base = getattr(env, "unwrapped", env)
        twin = getattr(base, "twin", None)
        if twin is None:
            return self.decide(jobshop_snapshot(base.state)).job  # type: ignore[return-value]
        if getattr(base.codec, "action_mode", "") != "job":
            raise PolicyError(
                "SCHEDULER: plays LineDispatch-v0 with action_mode='job' (it picks jobs)"
            )
        self._spec = twin.spec
        snap = as_snapshot(base.snapshot())
        assert isinstance(snap, LineSnapshot)
        return dispatch_action(snap, self._line(snap, len(mask)))

    def _line(self, snap: LineSnapshot, limit: int | None = None) -> Decision:
        """The dispatch of a line snapshot (among the first ``limit`` of the queue: the env's
        slots)."""
        from taktline.agents.jobshop_online import residual_shop
        from taktline.envs.snapshot import pending_dispatch

        if snap.decision is None or snap.decision.kind != "dispatch":
            raise PolicyError(
                "snapshot.decision: the learned scheduler answers dispatch decisions (a free "
                "machine with jobs waiting); pair it with a release rule for release points"
            )
        known = self._spec if self._spec is not None and self._spec.name == snap.line else None
        self._spec = line_spec_for(
            snap, known, snap.line, "post a snapshot of a bundled line or of the env's line"
        )
        shop = residual_shop(snap, self._spec)
        mask = shop.mask & (shop.queue_index < (limit or len(shop.queue_index)))
        with torch.no_grad():
            logits = self.net(torch.from_numpy(shop.features()), torch.from_numpy(mask[None]))
        k = int(shop.queue_index[int(logits[0].argmax())])
        station, machine = pending_dispatch(snap)
        return Decision(
            kind="dispatch",
            station=station.name,
            machine=machine.id,
            job=station.queue[k].id,
            rule=self.name,
        )

    def decide(self, snapshot: Snapshot | Mapping[str, Any]) -> Decision:
        from taktline.agents.policies import _jobshop_decision
        from taktline.envs.jobshop.bundled import resolve_instance
        from taktline.envs.jobshop.snapshots import instance_problem

        snap = as_snapshot(snapshot)
        if isinstance(snap, LineSnapshot):
            return self._line(snap)
        if snap.decision is None:
            raise PolicyError("snapshot.decision: the schedule is complete; nothing to dispatch")
        try:
            inst = resolve_instance(snap.instance)
        except Exception as exc:
            raise PolicyError(
                f"snapshot.instance: the learned scheduler needs the whole instance, and "
                f"{snap.instance!r} names none it can load ({exc}); give a bundled or Taillard "
                "name, or a path to the instance file"
            ) from None
        problem = instance_problem(inst, snap)
        if problem is not None:
            raise PolicyError(f"snapshot: {problem}")
        key = (inst.name, hash(inst.jobs))
        if key not in self._tables:
            self._tables[key] = InstanceTables(inst)
        tables = self._tables[key]
        next_op = np.array([[j.next_op for j in snap.jobs]], dtype=np.int64)
        mask = np.zeros((1, inst.n_jobs), dtype=bool)
        mask[0, [c.job for c in snap.decision.candidates]] = True
        x = features(
            tables,
            next_op,
            np.array([[j.ready for j in snap.jobs]], dtype=np.int64),
            np.array([[m.available for m in snap.machines]], dtype=np.int64),
            np.array([snap.decision.machine]),
            mask,
            unscheduled_load(tables, next_op),
        )
        with torch.no_grad():
            logits = self.net(torch.from_numpy(x), torch.from_numpy(mask))
        return _jobshop_decision(snap, int(logits[0].argmax()))


__all__ = [
    "LearnedScheduler",
    "NetConfig",
    "Rollouts",
    "SchedulerNet",
    "SchedulerPolicy",
    "load_net",
    "mirrored",
    "policy_search",
    "policy_solve",
    "read_weights",
    "replay_features",
    "rollout",
    "save_net",
    "trained_scheme",
    "unmirror_start",
    "unscheduled_load",
]
