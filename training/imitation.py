"""Expert iteration: a network that imitates the lookahead's decisions (DAgger).

The lookahead (:mod:`taktline.agents.lookahead`) decides well but slowly (tens of ms per
decision: it rolls candidates out on restored twins). :func:`imitate` distils it into a masked
MLP that decides in well under a millisecond, in ``taktline/LineDispatch-v0`` with
``action_mode="job"`` (the env every line policy is judged in; its codec is the bundle's):

1. Iteration 0 rolls the **expert** out and records every decision with more than one feasible
   job: the observation, the mask and the expert's action.
2. Iteration ``i >= 1`` rolls out a **mixture**: at each decision the expert's action is taken
   with probability ``beta**i``, else the learner's greedy one (DAgger: the learner meets the
   states its own mistakes lead to). Every visited state is labelled with the expert's choice
   (``expert.choose(env, obs, mask)`` on the env at that state; it does not step the env).
3. After each iteration the network trains on the aggregate by cross-entropy on the masked
   logits (minibatches, a few epochs, Adam), early-stopped on a held-out slice of the states
   (blocks of consecutive decisions, so that a held-out state's neighbours are not trained on).

Everything runs within ``minutes`` of wall time (collection and training; an episode cut by
the budget keeps its labels). Training episodes are seeded ``500_000 + 1000 * seed + i``, far
from the held-out seeds the verdict is played on (``eval_seed ..``) and from compare's pilot
seeds. The result is a :class:`~taktline.agents.bundle.PolicyBundle` and one MLflow run
(experiment ``imitate``): params, per-iteration accuracy and loss, throughput, then
:func:`taktline.training.compare.compare` of the bundle, the rules (and the expert) on held-out
seeds. The bundle is registered only when it beats the best rule (paired 95% CI above 0).

>>> cfg = ImitationConfig(line="serial5", expert="SPT", minutes=0.5)
>>> cfg.beta_at(0), cfg.beta_at(2)
(1.0, 0.25)
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch.nn import functional as F

from taktline.agents.bundle import PolicyBundle, make_lineage
from taktline.agents.networks import NumpyMLP, build_network
from taktline.agents.policies import Policy, load_policy
from taktline.errors import PolicyError, SpecError

ENV_ID = "taktline/LineDispatch-v0"
TRAIN_SEED = 500_000
"""Training episodes are seeded from here (held-out evaluation seeds start at ``eval_seed``)."""
BLOCK = 32
"""Consecutive decisions that go to the held-out slice together."""


@dataclass(frozen=True)
class ImitationConfig:
    """One imitation run (the flags of ``taktline imitate``)."""

    line: str
    """A bundled line name or a spec file (it needs a default ``horizon``)."""
    expert: str = "LOOKAHEAD(base=SAME,horizon=60,k=8)"
    """The policy imitated: any reference ``load_policy`` takes, usually a ``LOOKAHEAD(...)``."""
    minutes: float = 30.0
    """Wall-time budget of collection and training (the final evaluation comes on top)."""
    iterations: int = 0
    """DAgger iterations (0: as many as the budget allows)."""
    episodes_per_iter: int = 2
    """Episodes rolled out per iteration (at least ``workers`` to keep every worker busy)."""
    workers: int = 1
    """Episodes labelled in parallel, as Ray tasks (the expert's labels are 95% of the time);
    the states are the same whatever the number, only sooner."""
    beta: float = 0.5
    """Iteration ``i`` takes the expert's action with probability ``beta**i`` (0: learner only)."""
    network: str = "mlp"
    """``mlp`` (over the whole observation) or ``slots`` (one scorer shared over the queue
    slots, :class:`~taktline.agents.networks.SlotScorer`)."""
    hidden: tuple[int, ...] = (128, 128)
    """Hidden layer widths of the MLP (``slots``: the first is its embedding width)."""
    activation: str = "relu"
    """``relu`` or ``tanh`` (both have the fast numpy kernel)."""
    epochs: int = 20
    """At most this many passes over the aggregate per iteration."""
    patience: int = 3
    """Stop an iteration's training after this many epochs without a better held-out loss."""
    batch_size: int = 64
    """Minibatch size."""
    lr: float = 1e-3
    """Adam's learning rate."""
    holdout: float = 0.15
    """Share of the states (in blocks of consecutive decisions) held out."""
    departure_weight: float = 1.0
    """Loss weight of the states where the expert departs from its base rule (1: plain
    imitation). Where the expert agrees with its base rule on almost every state (98% on the
    body shop), its gain sits in the few departures, which plain cross-entropy barely sees."""
    seed: int = 0
    """Seed of training episodes, the mixture, the split and the network's initialisation."""
    eval_episodes: int = 10
    """Held-out seeds of the final comparison (at most)."""
    eval_seed: int = 0
    """The first held-out seed."""
    eval_minutes: float | None = None
    """Wall-time budget of the final comparison (at least two rounds run)."""
    eval_expert: bool = True
    """Play the expert too in the final comparison (slow: it is the lookahead)."""
    rules: tuple[str, ...] | None = None
    """The baseline rules (default: every built-in dispatching rule)."""
    register: str | None = None
    """Registered model name; used only when the policy beats the best rule."""
    out: str = "imitation_bundle"
    """Where the bundle is saved."""
    weight_by_gain: bool = False
    """Scale each departure's weight by the expert's estimated gain over its base rule (the
    lookahead's mean objective difference), relative to the mean departure's."""
    save_states: str | None = None
    """Write the labelled states here (``.npz``) after collection, to retrain without the
    expert (its labels are 96% of an imitation's time)."""
    states: str | None = None
    """Start from labelled states a run saved (same line and expert); collection goes on
    from there with the learner in the loop."""

    def __post_init__(self) -> None:
        checks = [
            ("minutes", self.minutes > 0 and math.isfinite(self.minutes), "a positive number"),
            ("iterations", self.iterations >= 0, "an integer >= 0 (0: until the budget ends)"),
            ("episodes_per_iter", self.episodes_per_iter >= 1, "an integer >= 1"),
            ("workers", self.workers >= 1, "an integer >= 1"),
            ("beta", 0 <= self.beta <= 1, "a number in [0, 1]"),
            ("epochs", self.epochs >= 1, "an integer >= 1"),
            ("patience", self.patience >= 1, "an integer >= 1"),
            ("batch_size", self.batch_size >= 1, "an integer >= 1"),
            ("lr", self.lr > 0, "a positive number"),
            ("holdout", 0 < self.holdout < 1, "a share in (0, 1)"),
            (
                "departure_weight",
                math.isfinite(self.departure_weight) and self.departure_weight >= 1,
                "a number >= 1 (1: no extra weight)",
            ),
            ("seed", self.seed >= 0, "an integer >= 0"),
            ("eval_episodes", self.eval_episodes >= 2, "an integer >= 2 (a paired CI)"),
            ("eval_seed", self.eval_seed >= 0, "an integer >= 0"),
            ("eval_minutes", self.eval_minutes is None or self.eval_minutes > 0, "> 0"),
            ("hidden", len(self.hidden) >= 1 and min(self.hidden) >= 1, "widths >= 1"),
            ("activation", self.activation in ("relu", "tanh"), "relu or tanh"),
            ("network", self.network in ("mlp", "slots"), "mlp or slots"),
        ]
        for name, ok, want in checks:
            if not ok:
                raise PolicyError(
                    f"imitate {name} (--{name.replace('_', '-')}): must be {want}, "
                    f"got {getattr(self, name)!r}"
                )

    def beta_at(self, iteration: int) -> float:
        """Probability that the expert's action is taken in ``iteration``."""
        return 1.0 if iteration == 0 else float(self.beta**iteration)


@dataclass
class Dataset:
    """The aggregated states: observation, mask, expert action, held out or not."""

    obs: list[np.ndarray] = field(default_factory=list)
    mask: list[np.ndarray] = field(default_factory=list)
    label: list[int] = field(default_factory=list)
    base: list[int] = field(default_factory=list)
    """The expert's base rule's action (-1 without one): a second baseline of accuracy."""
    held_out: list[bool] = field(default_factory=list)
    gain: list[float] = field(default_factory=list)
    """The expert's estimated gain of its choice over the base rule's (0 where none)."""

    def __len__(self) -> int:
        return len(self.label)

    def extend(self, other: Dataset) -> None:
        """Append ``other``'s states."""
        self.obs += other.obs
        self.mask += other.mask
        self.label += other.label
        self.base += other.base
        self.held_out += other.held_out
        self.gain += other.gain

    def save(self, path: str | Path, meta: dict[str, Any]) -> None:
        """The states and ``meta`` (line, expert, episodes) to one ``.npz``."""
        np.savez_compressed(
            path,
            obs=np.asarray(self.obs, np.float32),
            mask=np.asarray(self.mask, bool),
            label=np.asarray(self.label, np.int64),
            base=np.asarray(self.base, np.int64),
            held_out=np.asarray(self.held_out, bool),
            gain=np.asarray(self.gain, np.float64),
            meta=np.array(json.dumps(meta)),
        )

    @classmethod
    def load(cls, path: str | Path) -> tuple[Dataset, dict[str, Any]]:
        """States a run saved, with their meta.

        Raises:
            PolicyError: for a file that is not one.
        """
        try:
            with np.load(path, allow_pickle=False) as f:
                meta = json.loads(str(f["meta"]))
                data = cls(
                    list(f["obs"]),
                    list(f["mask"]),
                    [int(v) for v in f["label"]],
                    [int(v) for v in f["base"]],
                    [bool(v) for v in f["held_out"]],
                    [float(v) for v in f["gain"]],
                )
        except (OSError, ValueError, KeyError) as exc:
            raise PolicyError(
                f"imitate --states: {str(path)!r} is not a states file written by "
                f"`taktline imitate --save-states` ({exc})"
            ) from None
        return data, meta

    def tensors(
        self, held_out: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(obs, mask, label, departs, gain)`` of the held-out (or training) states;
        ``departs``: the label differs from a known base-rule action."""
        idx = [i for i, h in enumerate(self.held_out) if h == held_out]
        x = torch.from_numpy(np.asarray([self.obs[i] for i in idx], np.float32))
        m = torch.from_numpy(np.asarray([self.mask[i] for i in idx], bool))
        y = torch.as_tensor([self.label[i] for i in idx], dtype=torch.long)
        departs = [self.base[i] >= 0 and self.base[i] != self.label[i] for i in idx]
        gain = torch.as_tensor([self.gain[i] for i in idx], dtype=torch.float32)
        return x, m, y, torch.as_tensor(departs, dtype=torch.bool), gain


@dataclass
class Throughput:
    """Where the wall time went."""

    env_steps: int = 0
    labels: int = 0
    env_s: float = 0.0
    expert_s: float = 0.0
    learner_s: float = 0.0
    train_s: float = 0.0

    def add(self, other: Throughput) -> None:
        """Add a worker's counts and times."""
        self.env_steps += other.env_steps
        self.labels += other.labels
        self.env_s += other.env_s
        self.expert_s += other.expert_s
        self.learner_s += other.learner_s

    def as_dict(self, wall_s: float, workers: int = 1) -> dict[str, float]:
        """Rates per wall second and shares of the ``workers`` x ``wall_s`` core time."""
        wall = max(wall_s, 1e-9)
        cores = wall * max(1, workers)
        return {
            "env_steps_per_s": self.env_steps / wall,
            "labels_per_s": self.labels / max(self.expert_s, 1e-9),
            "labels_per_wall_s": self.labels / wall,
            "workers": float(workers),
            "share_expert": self.expert_s / cores,
            "share_env": self.env_s / cores,
            "share_network": (self.learner_s + self.train_s) / cores,
            "env_steps": float(self.env_steps),
            "labels": float(self.labels),
            "wall_s": wall_s,
        }


def make_env(line: str) -> gym.Env[Any, Any]:
    """``LineDispatch-v0`` on ``line`` with job actions, the spec's horizon and warmup."""
    import taktline.envs  # noqa: F401  (registers the ids)

    return gym.make(ENV_ID, disable_env_checker=True, **env_kwargs_of(line))


def log_line_policy(bundle_dir: str | Path, line: str, seed: int) -> str:
    """Log a ``LineDispatch-v0`` bundle of ``line`` as the active MLflow run's pyfunc model
    (the input example: the observation at ``seed``'s first decision); returns its URI."""
    from taktline.training import tracking

    probe = make_env(line)
    probe.reset(seed=seed)
    obs, mask = probe.unwrapped.codec.encode(probe.unwrapped.snapshot())  # type: ignore[attr-defined]
    probe.close()
    return tracking.log_policy_model(bundle_dir, obs, mask)


def env_kwargs_of(line: str) -> dict[str, Any]:
    """The env kwargs the bundle records (those ``compare`` plays it with).

    Raises:
        SpecError: for a line without a default horizon.
    """
    from taktline.envs.spec import load_spec

    spec = load_spec(line)
    if spec.horizon is None:
        raise SpecError(
            f"line {spec.name!r}: has no default horizon; add `horizon:` to the spec to imitate "
            "on it"
        )
    return {
        "line": str(Path(line)) if Path(line).suffix else line,
        "horizon": float(spec.horizon),
        "warmup": float(spec.warmup),
        "action_mode": "job",
    }


def collect_episode(
    env: gym.Env[Any, Any],
    expert: Policy,
    learner: Callable[[np.ndarray, np.ndarray], np.ndarray] | None,
    beta: float,
    seed: int,
    rng: np.random.Generator,
    data: Dataset,
    tp: Throughput,
    deadline: float,
    holdout: float,
) -> float | None:
    """Roll one episode out under the mixture and label its states; returns the episode's
    profit (``None`` when the deadline, a ``time.time()`` value, cut it)."""
    clock = time.perf_counter
    base_rule: Policy | None = getattr(expert, "base", None)
    t0 = clock()
    obs, _ = env.reset(seed=seed)
    tp.env_s += clock() - t0
    unwrapped: Any = env.unwrapped
    expert.begin_episode(env)
    step, block_out = 0, False
    while True:
        if time.time() > deadline:
            return None
        mask = unwrapped.action_masks()
        if mask.sum() > 1:
            t0 = clock()
            label = int(expert.choose(env, obs, mask))
            tp.expert_s += clock() - t0
            if step % BLOCK == 0:
                block_out = bool(rng.random() < holdout)
            data.obs.append(np.asarray(obs, np.float32))
            data.mask.append(mask.copy())
            data.label.append(label)
            data.base.append(-1 if base_rule is None else int(base_rule.choose(env, obs, mask)))
            data.held_out.append(block_out)
            data.gain.append(float(getattr(expert, "last_gain", 0.0)))
            tp.labels += 1
            step += 1
            action = label
            if learner is not None and rng.random() >= beta:
                t0 = clock()
                logits = learner(np.asarray(obs, np.float32)[None], mask[None])[0]
                action = int(np.where(mask, logits, -np.inf).argmax())
                tp.learner_s += clock() - t0
        else:
            action = int(mask.argmax())
        t0 = clock()
        obs, _, term, trunc, info = env.step(action)
        tp.env_s += clock() - t0
        tp.env_steps += 1
        if term or trunc:
            return float(info["kpis"]["profit"])


@dataclass(frozen=True)
class EpisodeJob:
    """One episode of collection, everything a worker process needs to play it."""

    line: str
    expert: str
    network_spec: dict[str, Any] | None
    """The learner's network (``None`` in iteration 0: the expert alone)."""
    weights: dict[str, np.ndarray] | None
    beta: float
    seed: int
    """The episode's env seed."""
    rng_seed: tuple[int, int]
    """Seed of the mixture and the held-out blocks: (run seed, episode index)."""
    deadline: float
    """``time.time()`` after which the episode is cut."""
    holdout: float


def play_episode(job: EpisodeJob) -> tuple[Dataset, Throughput, float | None]:
    """Play and label one episode (in this process or a Ray worker): a fresh env and expert,
    so the states depend on the job alone, not on where or after what it ran."""
    torch.set_num_threads(1)
    env = make_env(job.line)
    expert = load_policy(job.expert, seed=job.rng_seed[0])
    learner = None
    if job.network_spec is not None and job.weights is not None:
        net = build_network(job.network_spec)
        net.load_state_dict({k: torch.from_numpy(v) for k, v in job.weights.items()})
        learner = _learner_of(net.eval())
    data, tp = Dataset(), Throughput()
    rng = np.random.default_rng(list(job.rng_seed))
    try:
        profit = collect_episode(
            env, expert, learner, job.beta, job.seed, rng, data, tp, job.deadline, job.holdout
        )
    finally:
        env.close()
    return data, tp, profit


def play_episodes(
    jobs: list[EpisodeJob], workers: int
) -> list[tuple[Dataset, Throughput, float | None]]:
    """:func:`play_episode` of every job, in job order; ``workers > 1``: as Ray tasks, that many
    at a time (the cluster of ``RAY_ADDRESS`` when set, else a local Ray)."""
    if workers <= 1 or len(jobs) <= 1:
        return [play_episode(job) for job in jobs]
    from taktline.training.compare import in_order_on_ray

    out: list[tuple[Dataset, Throughput, float | None]] = []
    in_order_on_ray(play_episode, [(job,) for job in jobs], workers, lambda _, r: out.append(r))
    return out


def train_network(
    net: torch.nn.Module, data: Dataset, cfg: ImitationConfig, generator: torch.Generator
) -> dict[str, float]:
    """Train ``net`` on the aggregate, keep the epoch with the best held-out loss; returns
    the held-out accuracy and loss, the training loss, the epochs run and the baselines."""
    x, m, y, d, g = data.tensors(held_out=False)
    vx, vm, vy, departs, vg = data.tensors(held_out=True)
    if len(vy) == 0:  # too few states for a held-out block yet: judge on the training states
        vx, vm, vy, departs, vg = x, m, y, d, g
    w = _state_weights(d, g, cfg)
    vw = _state_weights(departs, vg, cfg)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)

    def held_out_loss() -> tuple[float, float, float]:
        net.eval()
        with torch.no_grad():
            logits = net(vx, vm)
            loss = float(_weighted_ce(logits, vy, vw))
            hit = (logits.argmax(1) == vy).float()
            acc = float(hit.mean())
            dep = float(hit[departs].mean()) if bool(departs.any()) else math.nan
        return loss, acc, dep

    best_loss, best_acc, best_dep = held_out_loss()
    best_state = {k: v.clone() for k, v in net.state_dict().items()}
    bad, epochs, train_loss = 0, 0, math.nan
    for _ in range(cfg.epochs):
        net.train()
        order = torch.randperm(len(y), generator=generator)
        total = 0.0
        for i in range(0, len(y), cfg.batch_size):
            b = order[i : i + cfg.batch_size]
            loss = _weighted_ce(net(x[b], m[b]), y[b], w[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
        train_loss = total / max(len(y), 1)
        epochs += 1
        loss_v, acc_v, dep_v = held_out_loss()
        if loss_v < best_loss:
            best_loss, best_acc, best_dep, bad = loss_v, acc_v, dep_v, 0
            best_state = {k: v.clone() for k, v in net.state_dict().items()}
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    net.load_state_dict(best_state)
    net.eval()
    labels = vy.numpy()
    held = [i for i, h in enumerate(data.held_out) if h] or list(range(len(data)))
    base = np.asarray([data.base[i] for i in held])
    return {
        "heldout_accuracy": best_acc,
        "heldout_departure_accuracy": best_dep,
        "heldout_departure_share": float(departs.float().mean()) if len(vy) else math.nan,
        "heldout_loss": best_loss,
        "train_loss": train_loss,
        "epochs": float(epochs),
        "majority_accuracy": float(np.bincount(labels).max() / len(labels)),
        "base_rule_accuracy": float((base == labels).mean()) if (base >= 0).all() else math.nan,
        "heldout_states": float(len(labels)),
    }


def _learner_of(net: torch.nn.Module) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The learner's logits in the collection loop: the numpy kernel of an MLP (the fast
    path), else the torch network itself."""
    fast = NumpyMLP.from_module(net)
    if fast is not None:
        return fast

    def logits(obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = net(torch.from_numpy(obs), torch.from_numpy(mask))
        return out.numpy()  # type: ignore[no-any-return]

    return logits


def _train_one_thread(
    net: torch.nn.Module, data: Dataset, cfg: ImitationConfig, generator: torch.Generator
) -> dict[str, float]:
    """:func:`train_network` on one torch thread: small minibatches gain nothing from two, and
    on a shared (busy) CPU torch's spinning threads made a step 20x slower (64 ms vs 2.9 ms
    measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_network(net, data, cfg, generator)
    finally:
        torch.set_num_threads(threads)


def _state_weights(departs: torch.Tensor, gain: torch.Tensor, cfg: ImitationConfig) -> torch.Tensor:
    """1 where the expert keeps its base rule's job; ``departure_weight`` where it departs,
    scaled by the departure's estimated gain over the mean departure's with ``weight_by_gain``
    (a departure the scenarios barely preferred counts less than one they clearly did)."""
    w = torch.ones(len(departs))
    if not bool(departs.any()):
        return w
    extra = torch.full((int(departs.sum()),), float(cfg.departure_weight))
    if cfg.weight_by_gain:
        g = gain[departs].clamp(min=0.0)
        extra = extra * g / g.mean().clamp(min=1e-9)
    w[departs] = extra
    return w


def _weighted_ce(logits: torch.Tensor, label: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with a weight per state, normalised by the weights' sum."""
    per_state = F.cross_entropy(logits, label, reduction="none")
    return (per_state * weight).sum() / weight.sum().clamp(min=1e-9)


@dataclass
class ImitationResult:
    """What :func:`imitate` produced."""

    bundle_dir: Path
    policy_name: str
    history: list[dict[str, float]]
    dataset_size: int
    throughput: dict[str, float]
    run_id: str | None = None
    comparison: Any = None
    verdict: dict[str, Any] | None = None
    model_version: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain data (``--json``)."""
        rows = self.comparison.rows() if self.comparison is not None else []
        return {
            "bundle": str(self.bundle_dir),
            "policy": self.policy_name,
            "history": self.history,
            "dataset_size": self.dataset_size,
            "throughput": self.throughput,
            "mlflow_run_id": self.run_id,
            "rows": rows,
            "reference": self.comparison.reference if self.comparison is not None else None,
            "verdict": self.verdict,
            "registered_version": self.model_version,
        }


def imitate(
    cfg: ImitationConfig,
    on_progress: Callable[[float, dict[str, float]], None] | None = None,
    on_round: Callable[[int, int], None] | None = None,
) -> ImitationResult:
    """DAgger on the expert, then the held-out verdict and (only on a win) registration.

    Args:
        cfg: The run.
        on_progress: Called with (share of the budget used, the latest iteration's metrics).
        on_round: Called with (rounds done, rounds planned) during the final comparison.

    Raises:
        PolicyError, SpecError: bad configuration, named before any work.
    """
    import mlflow

    from taktline.training import tracking

    env_kwargs = env_kwargs_of(cfg.line)
    load_policy(cfg.expert, seed=cfg.seed)  # a bad reference is named before any work
    for r in cfg.rules or ():
        load_policy(r)
    env = make_env(cfg.line)
    base: Any = env.unwrapped
    obs_dim = int(gym.spaces.flatdim(env.observation_space))
    n_actions = int(env.action_space.n)  # type: ignore[attr-defined]
    kwargs: dict[str, Any] = {"obs_dim": obs_dim, "n_actions": n_actions}
    if cfg.network == "slots":
        kwargs.update(slot_size=int(base.codec.slot_size), hidden=int(cfg.hidden[0]))
    else:
        kwargs.update(hidden=list(cfg.hidden), activation=cfg.activation)
    network_spec = {"class": cfg.network, "kwargs": kwargs}
    torch.manual_seed(cfg.seed)
    net = build_network(network_spec)
    generator = torch.Generator().manual_seed(cfg.seed)
    data = Dataset()
    episode, it = 0, 0
    states_meta = {
        "line": base.spec_line.name,
        "spec_hash": base.spec_line.spec_hash(),
        "expert": cfg.expert,
        "obs_dim": obs_dim,
        "n_actions": n_actions,
    }
    if cfg.states is not None:
        data, meta = Dataset.load(cfg.states)
        for key, value in states_meta.items():
            if meta.get(key) != value:
                raise PolicyError(
                    f"imitate --states: {cfg.states!r} was labelled with {key} "
                    f"{meta.get(key)!r}, this run has {value!r}; label anew without --states"
                )
        episode, it = int(meta["episodes"]), 1
    tp = Throughput()
    history: list[dict[str, float]] = []
    tracking.configure()
    exp = tracking.ensure_experiment("imitate")
    with mlflow.start_run(experiment_id=exp, run_name=f"imitate {base.spec_line.name}") as run:
        mlflow.log_params({k: str(v)[:500] for k, v in asdict(cfg).items()})
        start = time.perf_counter()
        deadline = start + 60.0 * cfg.minutes
        if len(data):  # saved states: the learner first learns them, then joins the loop
            history.append(
                {
                    **_train_one_thread(net, data, cfg, generator),
                    "iteration": 0.0,
                    "dataset_size": float(len(data)),
                }
            )
            tracking.log_metrics(history[-1], 0)
        wall_deadline = time.time() + 60.0 * cfg.minutes
        while (cfg.iterations == 0 or it < cfg.iterations) and time.perf_counter() < deadline:
            weights = None
            if it > 0:
                weights = {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}
            jobs = [
                EpisodeJob(
                    line=cfg.line,
                    expert=cfg.expert,
                    network_spec=network_spec if weights is not None else None,
                    weights=weights,
                    beta=cfg.beta_at(it),
                    seed=TRAIN_SEED + 1000 * cfg.seed + episode + k,
                    rng_seed=(cfg.seed, episode + k),
                    deadline=wall_deadline,
                    holdout=cfg.holdout,
                )
                for k in range(cfg.episodes_per_iter)
            ]
            episode += len(jobs)
            profits = []
            for part, part_tp, p in play_episodes(jobs, cfg.workers):
                data.extend(part)
                tp.add(part_tp)
                if p is not None:
                    profits.append(p)
            if not len(data):
                break
            t0 = time.perf_counter()
            metrics = _train_one_thread(net, data, cfg, generator)
            tp.train_s += time.perf_counter() - t0
            metrics.update(
                iteration=float(it),
                beta=cfg.beta_at(it),
                dataset_size=float(len(data)),
                rollout_profit=float(np.mean(profits)) if profits else math.nan,
                episodes_done=float(len(profits)),
            )
            history.append(metrics)
            tracking.log_metrics(metrics, it)
            if on_progress is not None:
                used = (time.perf_counter() - start) / (60.0 * cfg.minutes)
                on_progress(min(used, 1.0), metrics)
            it += 1
        env.close()
        if cfg.save_states is not None:
            data.save(cfg.save_states, {**states_meta, "episodes": episode})
            mlflow.log_param("states_file", cfg.save_states)
        if not history:
            raise PolicyError(
                f"imitate --minutes: {cfg.minutes} was too short to label a single decision; "
                "give more minutes"
            )
        wall = time.perf_counter() - start
        throughput = tp.as_dict(wall, cfg.workers)
        tracking.log_metrics({f"throughput.{k}": v for k, v in throughput.items()}, it)
        name = cfg.register or f"imitate-{base.spec_line.name}"
        bundle = PolicyBundle(
            env_id=ENV_ID,
            env_kwargs=env_kwargs,
            spec_hash=base.spec_line.spec_hash(),
            observation_space=env.observation_space,
            action_space=gym.spaces.Discrete(n_actions),
            network=net,
            network_spec=network_spec,
            lineage=make_lineage(
                name=name,
                backend="imitation",
                expert=cfg.expert,
                iterations=len(history),
                dataset_size=len(data),
                seed=cfg.seed,
                config=asdict(cfg),
                mlflow_run_id=run.info.run_id,
                heldout_accuracy=history[-1]["heldout_accuracy"],
            ),
        )
        out = Path(cfg.out)
        bundle.save(out)
        result = ImitationResult(
            out, load_policy(str(out)).name, history, len(data), throughput, run.info.run_id
        )
        _verdict(cfg, result, bundle, on_round)
    return result


def _verdict(
    cfg: ImitationConfig,
    result: ImitationResult,
    bundle: PolicyBundle,
    on_round: Callable[[int, int], None] | None,
) -> None:
    """The held-out comparison, logged to the active run; registration only on a win."""
    import mlflow

    from taktline.training import tracking
    from taktline.training.compare import bar_chart, compare
    from taktline.training.run import verdict_of, verdict_tags

    comparison = compare(
        cfg.line,
        [str(result.bundle_dir)],
        rules=list(cfg.rules) if cfg.rules else None,
        lookahead=cfg.expert if cfg.eval_expert else None,
        episodes=cfg.eval_episodes,
        minutes=cfg.eval_minutes,
        seed=cfg.eval_seed,
        on_round=on_round,
    )
    result.comparison = comparison
    verdict = verdict_of(comparison.evaluation, result.policy_name, comparison.rules)
    result.verdict = verdict
    tags = verdict_tags(verdict)
    mlflow.set_tags({f"taktline.{k}": v for k, v in tags.items()})
    for row in comparison.rows():
        if row["policy"] == result.policy_name:
            tracking.log_metrics(
                {
                    "eval.profit_mean": row["mean"],
                    "eval.diff_mean": row["diff_mean"],
                    "eval.latency_p50_ms": row["latency_p50_ms"],
                    "eval.latency_p99_ms": row["latency_p99_ms"],
                },
                len(result.history),
            )
    mlflow.log_dict(comparison.as_dict(), "compare/comparison.json")
    chart = bar_chart(comparison, result.bundle_dir.parent / f"{result.bundle_dir.name}.png")
    mlflow.log_artifact(str(chart), "compare")
    bundle.lineage["verdict"] = verdict
    bundle.save(result.bundle_dir)  # the saved bundle carries its verdict (digests redone)
    model_uri = log_line_policy(result.bundle_dir, cfg.line, cfg.eval_seed)
    if cfg.register and verdict is not None and verdict["won"]:
        result.model_version = tracking.register(
            model_uri, cfg.register, "candidate", tags={"run_id": result.run_id or "", **tags}
        )
