"""``taktline/JobShop-v0``: dispatching in a (flexible) job shop, one operation per step.

Decisions follow the active-schedule (Giffler–Thompson) scheme of
:class:`~taktline.envs.jobshop.schedule.JobShopState`: the action is a job slot, the mask holds
the jobs of the conflict set on the decision machine M*, and every active schedule (so an
optimal one) is reachable. With ``skip_forced=True`` (default) a decision with one candidate is
taken automatically, so every step is a real choice; the reward of the skipped moves is added to
the step that led to them.

Rewards (``reward=``):

* ``"dense"`` (default): minus the growth of the partial makespan at each step, so the return
  is exactly ``-makespan`` (times ``reward_scale``);
* ``"sparse"``: 0, and ``-makespan * reward_scale`` at the last step.

A step decodes the action into a :class:`~taktline.envs.decision.Decision` (the codec's
``decode`` of the env's :meth:`JobShopEnv.snapshot`, read from the state directly) and applies
it, as a served policy's answer would be applied. :meth:`JobShopEnv.fork` copies the env at a
decision point; ``reset(options={"snapshot": ...})`` goes on from a snapshot's partial schedule.

``instance`` is a bundled name (``"ta01"``, ``"ft06"``, ``"la17"``), an instance file, a
:class:`JobShopInstance`, or a generator spec such as
``{"generator": "taillard_like", "n_jobs": 10, "n_machines": 10}`` (also ``random_routing`` and
``flexible``, with their keyword arguments): then every ``reset`` draws a new instance from the
env's generator. ``max_jobs``/``max_machines`` pad observations and actions so one policy can
train and run across sizes.

>>> env = JobShopEnv(instance="ft06")
>>> obs, info = env.reset(seed=0)
>>> done, ret = False, 0.0
>>> while not done:
...     obs, r, done, _, info = env.step(int(env.action_masks().argmax()))
...     ret += r
>>> ret == -info["makespan"]
True
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from taktline.envs.encoding_jobshop import JobShopCodec, JobShopView, jobshop_snapshot
from taktline.envs.jobshop import generators
from taktline.envs.jobshop.bundled import resolve_instance
from taktline.envs.jobshop.instance import JobShopInstance
from taktline.envs.jobshop.schedule import SCHEMES, JobShopState
from taktline.envs.snapshot import JobShopSnapshot
from taktline.envs.spaces import MaskedDiscrete, resolve_action
from taktline.errors import PolicyError, SpecError

GENERATORS: dict[str, Callable[..., JobShopInstance]] = {
    "taillard_like": generators.taillard_like,
    "random_routing": generators.random_routing,
    "flexible": generators.flexible,
}
REWARDS = ("dense", "sparse")


def _generator(spec: dict[str, Any]) -> tuple[Callable[..., JobShopInstance], dict[str, Any]]:
    kw = dict(spec)
    name = kw.pop("generator", None)
    if name not in GENERATORS:
        raise SpecError(
            f"instance.generator: expected one of {', '.join(GENERATORS)}, got {name!r}; e.g. "
            '{"generator": "taillard_like", "n_jobs": 10, "n_machines": 10}'
        )
    for key in ("n_jobs", "n_machines"):
        if not isinstance(kw.get(key), int):
            raise SpecError(f"instance.{key}: the generator needs an integer, got {kw.get(key)!r}")
    # JSON gives lists where the generators take (low, high) tuples
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in kw.items()}
    return GENERATORS[name], kw


def instance_size(instance: str | dict[str, Any] | JobShopInstance) -> tuple[int, int]:
    """``(n_jobs, n_machines)`` of an ``instance`` kwarg (a generator spec's size)."""
    if isinstance(instance, dict):
        _, kw = _generator(instance)
        return int(kw["n_jobs"]), int(kw["n_machines"])
    inst = instance if isinstance(instance, JobShopInstance) else resolve_instance(instance)
    return inst.n_jobs, inst.n_machines


class _Tables:
    """Per-instance lookup tables of the fast observation path (shared, read-only)."""

    __slots__ = (
        "alts",
        "due",
        "first_machine",
        "load",
        "min_time",
        "n_ops",
        "suffix",
        "time_scale",
    )

    def __init__(self, inst: JobShopInstance) -> None:
        self.alts = inst.jobs
        self.n_ops = [len(ops) for ops in inst.jobs]
        # one sentinel entry past the last operation (the job is done)
        self.first_machine = [[alts[0][0] for alts in ops] + [-1] for ops in inst.jobs]
        self.min_time = [[min(p for _, p in alts) for alts in ops] + [0] for ops in inst.jobs]
        self.suffix = []
        for times in self.min_time:
            s = [0] * len(times)
            for i in range(len(times) - 2, -1, -1):
                s[i] = s[i + 1] + times[i]
            self.suffix.append(s)
        self.load = [0] * inst.n_machines
        for ops in inst.jobs:
            for alts in ops:
                for m, p in alts:
                    self.load[m] += p
        self.due = (
            [float(d) for d in inst.due_dates] if inst.due_dates else [float("nan")] * inst.n_jobs
        )
        self.time_scale = max(p for ops in inst.jobs for alts in ops for _, p in alts)


class JobShopEnv(gym.Env[Any, np.int64]):
    """Job-shop dispatching: which job's next operation starts on the decision machine?

    See the module docstring for rewards and instance kinds.

    Args:
        instance: Bundled name, file path, :class:`JobShopInstance` or generator spec.
        max_jobs: Job slots (default: the instance's jobs).
        max_machines: Machine slots (default: the instance's machines).
        reward: ``"dense"`` or ``"sparse"``.
        reward_scale: Multiplies every reward (1.0: the return is ``-makespan``).
        scheme: ``"active"`` (Giffler–Thompson, reaches an optimum) or ``"non-delay"``.
        skip_forced: Take decisions with a single candidate automatically.
        dict_obs: Observations as ``{"observations", "action_mask"}`` (RLlib).
        render_mode: ``"ansi"`` or ``"rgb_array"`` (the Gantt chart so far).
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}  # noqa: RUF012

    def __init__(
        self,
        instance: str | dict[str, Any] | JobShopInstance = "ft06",
        max_jobs: int | None = None,
        max_machines: int | None = None,
        reward: str = "dense",
        reward_scale: float = 1.0,
        scheme: str = "active",
        skip_forced: bool = True,
        dict_obs: bool = False,
        render_mode: str | None = None,
    ) -> None:
        if reward not in REWARDS:
            raise PolicyError(f"reward: expected one of {', '.join(REWARDS)}, got {reward!r}")
        if scheme not in SCHEMES:
            raise PolicyError(f"scheme: expected one of {', '.join(SCHEMES)}, got {scheme!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise PolicyError(
                f"render_mode: expected one of {self.metadata['render_modes']}, got {render_mode!r}"
            )
        self._fixed: JobShopInstance | None = None
        self._gen: tuple[Callable[..., JobShopInstance], dict[str, Any]] | None = None
        if isinstance(instance, dict):
            self._gen = _generator(instance)
            n_j, n_m = int(self._gen[1]["n_jobs"]), int(self._gen[1]["n_machines"])
        else:
            self._fixed = (
                instance if isinstance(instance, JobShopInstance) else resolve_instance(instance)
            )
            n_j, n_m = self._fixed.n_jobs, self._fixed.n_machines
        self.codec = JobShopCodec(
            n_j if max_jobs is None else max_jobs,
            n_m if max_machines is None else max_machines,
            dict_obs,
        )
        self.codec.check_size(n_j, n_m, "instance")
        self.observation_space = self.codec.observation_space
        self.action_space = MaskedDiscrete(self.codec.max_jobs, self)
        self.reward_mode = reward
        self.reward_scale = float(reward_scale)
        self.scheme = scheme
        self.skip_forced = skip_forced
        self.render_mode = render_mode
        self.state: JobShopState | None = None
        self.instance: JobShopInstance | None = None
        self._tables: _Tables | None = None
        self._load: list[int] = []
        self._mask = np.zeros(self.codec.max_jobs, dtype=bool)
        self.decision_count = 0

    # -- the Gymnasium API -------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Start a new schedule, or go on from a snapshot's.

        Args:
            seed: Seeds the env's generator (generated instances are drawn from it).
            options: ``{"instance": name | path | JobShopInstance}`` plays that instance this
                episode (it must fit the padding), e.g. to evaluate on a test set;
                ``{"snapshot": JobShopSnapshot | dict}`` restores a partial schedule of the
                episode's instance (exactly: ``JobShopState.from_snapshot``) and the episode
                goes on from there (a dense return then counts the makespan growth from it).
        """
        super().reset(seed=seed)
        options = options or {}
        snapshot = options.get("snapshot")
        if options.get("instance") is not None:
            given = options["instance"]
            inst = given if isinstance(given, JobShopInstance) else resolve_instance(given)
            self.codec.check_size(inst.n_jobs, inst.n_machines, "options.instance")
        elif self._gen is not None:
            if snapshot is not None:
                raise PolicyError(
                    "options.snapshot: this env draws its instances; pass the snapshot's "
                    'instance too: reset(options={"snapshot": ..., "instance": ...})'
                )
            fn, kw = self._gen
            inst = fn(rng=self.np_random, **kw)
            self.codec.check_size(inst.n_jobs, inst.n_machines, "generated instance")
        else:
            assert self._fixed is not None
            inst = self._fixed
        if self._tables is None or inst is not self.instance:
            self._tables = _Tables(inst)
        self.instance = inst
        self._load = list(self._tables.load)
        if snapshot is None:
            self.state = JobShopState(inst, self.scheme)
        else:
            self.state = JobShopState.from_snapshot(inst, snapshot)
            if self.state.scheme != self.scheme:
                raise PolicyError(
                    f"options.snapshot.scheme: {self.state.scheme!r}, but this env builds "
                    f"{self.scheme!r} schedules; make the env with scheme={self.state.scheme!r}"
                )
            for j, done_ops in enumerate(self.state.next_op):
                for alts in inst.jobs[j][:done_ops]:
                    for m, p in alts:
                        self._load[m] -= p
        if self.skip_forced:
            self._skip()
        return self._observe(), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        state = self.state
        if state is None or state.done:
            raise gym.error.ResetNeeded("call reset() before step() (the episode is over)")
        before = state.makespan
        a = resolve_action(action, self._mask, self.decision_count)
        # decode, then apply the decision, as a served policy's action would be
        # (decode raises the mask's error for an infeasible action, a = None)
        decision = self.codec.decode_state(state, int(action) if a is None else a)
        self._unload(int(decision.job or 0))  # a job-shop decision always names its job
        state.apply_decision(decision)
        if self.skip_forced:
            self._skip()
        done = state.done
        if self.reward_mode == "dense":
            reward = -(state.makespan - before) * self.reward_scale
        else:
            reward = -state.makespan * self.reward_scale if done else 0.0
        info: dict[str, Any] = {}
        if done:
            info = self._final_info()
        return self._observe(), float(reward), done, False, info

    def action_masks(self) -> np.ndarray:
        """The feasibility mask over job slots (for sb3-contrib MaskablePPO)."""
        return self._mask.copy()

    def snapshot(self) -> JobShopSnapshot:
        """The job-shop snapshot now (``codec.encode`` of it is the observation)."""
        if self.state is None:
            raise gym.error.ResetNeeded("call reset() first")
        return jobshop_snapshot(self.state)

    def fork(self) -> JobShopEnv:
        """An independent copy at this decision point that continues exactly as this env
        would: same state, observation, decision count and generator state (for the instances
        later resets draw). The instance and lookup tables are shared, read-only.
        """
        if self.state is None:
            raise gym.error.ResetNeeded("call reset() before fork()")
        new = copy.copy(self)
        new.state = self.state.fork()
        new._load = list(self._load)
        new._mask = self._mask.copy()
        new.action_space = MaskedDiscrete(self.codec.max_jobs, new)
        new._np_random = copy.deepcopy(self._np_random)
        return new

    def render(self) -> Any:
        if self.render_mode is None:
            gym.logger.warn("render() without render_mode; pass render_mode='ansi' or 'rgb_array'")
            return None
        if self.state is None:
            raise gym.error.ResetNeeded("call reset() first")
        from taktline.envs.render import render_gantt_ansi, render_gantt_rgb

        inst = self.state.instance
        if self.render_mode == "ansi":
            return render_gantt_ansi(self.state.schedule, inst.n_machines, inst.name)
        return render_gantt_rgb(self.state.schedule, inst.n_machines, inst.name)

    # -- internals ---------------------------------------------------------------------
    def _unload(self, job: int) -> None:
        """Take ``job``'s next operation off the machines' potential load (it is scheduled)."""
        assert self.state is not None and self.instance is not None
        load = self._load
        for m, p in self.instance.jobs[job][self.state.next_op[job]]:
            load[m] -= p

    def _skip(self) -> None:
        # a forced move is no decision (one candidate): applied as the env's own transition
        state = self.state
        assert state is not None
        while not state.done and len(state.candidate_jobs) == 1:
            self._unload(state.candidate_jobs[0])
            state.apply(state.candidate_jobs[0])

    def view(self) -> JobShopView:
        """The observation's numbers read straight from the state (fast path of ``encode``)."""
        st, t = self.state, self._tables
        assert st is not None and t is not None
        nxt = st.next_op
        rng = range(len(nxt))
        fm, mt, sf, no = t.first_machine, t.min_time, t.suffix, t.n_ops
        return JobShopView(
            now=st.now,
            makespan=st.makespan,
            time_scale=t.time_scale,
            ready=st.job_ready,
            next_machine=[fm[j][nxt[j]] for j in rng],
            next_time=[mt[j][nxt[j]] for j in rng],
            remaining_work=[sf[j][nxt[j]] for j in rng],
            remaining_ops=[no[j] - nxt[j] for j in rng],
            n_ops=no,
            due=t.due,
            available=st.machine_available,
            load=self._load,
            cand_jobs=st.candidate_jobs,
            cand_starts=st.candidate_starts,
            cand_times=st.candidate_times,
            machine=st.candidate_machine,
        )

    def _observe(self) -> Any:
        obs, mask = self.codec.features(self.view())
        self._mask = mask
        self.decision_count += 1
        return self.codec.observation(obs, mask)

    def _final_info(self) -> dict[str, Any]:
        assert self.state is not None and self.instance is not None
        inst, ready = self.instance, self.state.job_ready  # job_ready: each job's completion
        ms = self.state.makespan
        releases = inst.release_dates or (0,) * inst.n_jobs
        kpis: dict[str, Any] = {
            "makespan": float(ms),
            "mean_flow_time": sum(c - r for c, r in zip(ready, releases, strict=True))
            / inst.n_jobs,
        }
        if inst.due_dates:
            late = [max(0, c - d) for c, d in zip(ready, inst.due_dates, strict=True)]
            kpis["total_tardiness"] = float(sum(late))
            kpis["max_tardiness"] = float(max(late))
            kpis["share_late"] = sum(1 for x in late if x > 0) / inst.n_jobs
        ref, kind = self.instance.reference()
        if ref:
            kpis["reference"] = float(ref)
            kpis["reference_kind"] = kind
            kpis["gap"] = ms / ref - 1.0
        return {"makespan": ms, "kpis": kpis}
