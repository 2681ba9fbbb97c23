"""Self-labeling training of the job-shop scheduler network (Corsini et al., NeurIPS 2024).

No optimal schedules and no reward shaping: for each random instance the current network samples
``beta`` schedules in one batched roll-out; the best of them becomes the label, and the network
is trained by cross-entropy to make that schedule's choices (only steps with more than one
candidate count). As the network improves, so do its best samples, and so do its labels.

Instances are Taillard-like (every job visits every machine, times 1-99) of several sizes; the
network is checked greedily every ``eval_every_s`` (or every ``eval_every_instances``) on a
fixed validation set drawn from another seed stream (never the benchmark), and the best
checkpoint is kept. Labelling is ~95% of the time: ``workers`` label instances in parallel as
Ray tasks, each from its own sampling seed, so the weights do not depend on the number of
workers; with ``max_instances`` and ``eval_every_instances`` they do not depend on the
machine's speed either. Every run is an MLflow run (experiment ``train-jobshop``): parameters,
the learning curve (metrics and a picture), the weights.

    taktline train-jobshop --minutes 90 --out jobshop_policy.npz
    taktline train-jobshop --workers 2 --instances 11000 --eval-every-instances 500
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from taktline.agents.jobshop_policy import (
    NetConfig,
    SchedulerNet,
    mirrored,
    replay_features,
    rollout,
    save_net,
)
from taktline.agents.jobshop_search import _batch_row, tabu_search
from taktline.envs.jobshop.generators import taillard_like
from taktline.envs.jobshop.instance import JobShopInstance
from taktline.envs.jobshop.replay import replay_schedule
from taktline.errors import PolicyError, SpecError

#: Training sizes (jobs, machines), drawn uniformly.
DEFAULT_SIZES: tuple[tuple[int, int], ...] = ((10, 10), (15, 10), (15, 15), (20, 10), (20, 15))
#: Validation sizes; ``VALIDATION_PER_SIZE`` instances each.
VALIDATION_SIZES: tuple[tuple[int, int], ...] = ((15, 15), (20, 15))
VALIDATION_PER_SIZE = 8


@dataclass(frozen=True)
class SelfLabelConfig:
    """One training run."""

    minutes: float = 90.0
    """Wall-clock budget of training (validation included)."""
    beta: int = 128
    """Schedules sampled per instance; the best is the label."""
    sizes: tuple[tuple[int, int], ...] = DEFAULT_SIZES
    """Instance sizes (jobs, machines) trained on."""
    lr: float = 1e-3
    """Adam learning rate (cosine-decayed to 10% over the budget)."""
    instances_per_update: int = 4
    """Instances whose labelled steps make one gradient step."""
    dim: int = 64
    """Embedding width of the network."""
    rounds: int = 1
    """Message-passing rounds of the network."""
    heads: int = 0
    """Heads of a self-attention layer among the unfinished jobs (0: none)."""
    eval_every_s: float = 300.0
    """Seconds between greedy validations."""
    seed: int = 0
    """Seed of instances, sampling and initial weights."""
    device: str = "cpu"
    """``cpu`` or ``cuda`` (never required)."""
    threads: int = 1
    """torch CPU threads."""
    scheme: str = "active"
    """Generation scheme of the schedules."""
    init: str | None = None
    """Weights to start from (``None``: random); see :func:`warm_start`."""
    mirror: bool = False
    """Sample half of the ``beta`` schedules on the instance's time-reversed mirror (same
    optimum); the best of both is the label, taught on the instance it was found on."""
    replay: int = 0
    """Labelled instances kept for re-use (0: each label is learned once, when it is made)."""
    updates: int = 1
    """Gradient steps per ``instances_per_update`` new labels; with ``replay`` each step draws
    its instances from the kept ones (the newest always in the first). Labelling costs ~80x a
    gradient step, so re-using labels buys many more steps for little time."""
    ema: float = 0.0
    """Decay of an exponential moving average of the weights (0: none); when set, validation
    checks the average too and the better of the two is kept."""
    validation_per_size: int = 8
    """Validation instances per validation size (the first 8 of each are the fixed set)."""
    workers: int = 1
    """Instances labelled in parallel as Ray tasks (the cluster of ``RAY_ADDRESS``, else a
    local Ray); each instance carries its own sampling seed, so the labels, and the weights,
    are the same whatever the number, only sooner."""
    max_instances: int = 0
    """Stop after this many labelled instances (0: ``minutes`` alone); ``minutes`` still caps
    the run. The learning rate then decays over instances, not time."""
    eval_every_instances: int = 0
    """Validate every this many instances instead of every ``eval_every_s`` (0: by time). With
    ``max_instances`` the run no longer depends on the machine's speed: the same command
    writes the same weights."""
    improve: int = 0
    """Moves of N5 tabu search on the best sample before it becomes the label (0: the plain
    self-label). The improved schedule is taught as the active-scheme choices that rebuild it
    (:func:`~taktline.envs.jobshop.replay.replay_schedule`); counted in moves, not seconds, so
    labels stay the same on any machine."""


@dataclass
class SelfLabelResult:
    """What :func:`train_selflabel` produced."""

    weights: Path
    best_validation: float
    instances: int
    wall_time_s: float
    history: list[dict[str, float]] = field(default_factory=list)
    run_id: str | None = None


def validation_set(
    seed: int = 10_000, per_size: int = VALIDATION_PER_SIZE
) -> list[JobShopInstance]:
    """The fixed validation instances (their own seed stream, disjoint from training's).

    The first ``VALIDATION_PER_SIZE`` of each size are always the same set; a larger
    ``per_size`` adds instances from a second stream, so the set only grows."""
    rng = np.random.default_rng(seed)
    out = [
        taillard_like(n, m, rng, name=f"val_{n}x{m}_{k}")
        for n, m in VALIDATION_SIZES
        for k in range(VALIDATION_PER_SIZE)
    ]
    extra = np.random.default_rng([seed, 1])
    out += [
        taillard_like(n, m, extra, name=f"val_{n}x{m}_{k}")
        for n, m in VALIDATION_SIZES
        for k in range(VALIDATION_PER_SIZE, per_size)
    ]
    return out


def greedy_ratio(
    net: SchedulerNet, instances: list[JobShopInstance], device: str, scheme: str = "active"
) -> float:
    """Mean greedy makespan / trivial lower bound over ``instances``."""
    rng = np.random.default_rng(0)
    ratios = []
    net.eval()
    for inst in instances:
        r = rollout(net, inst, 1, True, rng, scheme=scheme, device=device)
        assert r is not None
        ratios.append(float(r.makespan[0]) / max(1, inst.trivial_lower_bound()))
    return float(np.mean(ratios))


def rule_ratios(instances: list[JobShopInstance], scheme: str = "active") -> dict[str, float]:
    """Mean greedy makespan / trivial lower bound of the two best makespan rules (MWKR, MOPNR),
    the reference lines of the learning curve."""
    from taktline.agents.jobshop_search import CONSTRUCT_RULES, _greedy

    out = {}
    for rule in ("MWKR", "MOPNR"):
        k = CONSTRUCT_RULES.index(rule)
        out[rule] = float(
            np.mean(
                [
                    _greedy(i, k, scheme).makespan / max(1, i.trivial_lower_bound())
                    for i in instances
                ]
            )
        )
    return out


#: Sampling temperatures tried by :func:`calibrate_temperature`.
TEMPERATURES: tuple[float, ...] = (0.5, 0.75, 1.0, 1.5)


def calibrate_temperature(
    weights: Path, samples: int = 128, temperatures: tuple[float, ...] = TEMPERATURES
) -> tuple[float, dict[float, float]]:
    """Choose the sampling temperature of best-of-``samples`` on the validation set (never on
    a benchmark) and store it in the weights file; returns it and the ratio at each one."""
    from taktline.agents.jobshop_policy import (
        LearnedScheduler,
        load_net,
        policy_solve,
        trained_scheme,
    )

    net, meta = load_net(weights)
    scheme = trained_scheme(meta)
    val = validation_set()
    by_t: dict[float, float] = {}
    for t in temperatures:
        sched = LearnedScheduler(net, scheme, t)
        ratios = [
            policy_solve(
                inst, 3600.0, seed=1, samples=samples, batch_size=samples, scheduler=sched
            ).makespan
            / max(1, inst.trivial_lower_bound())
            for inst in val
        ]
        by_t[t] = float(np.mean(ratios))
    best = min(by_t, key=lambda t: by_t[t])
    meta["sampling_temperature"] = best
    meta["validation_best_of"] = {"samples": samples, "ratio_by_temperature": by_t}
    save_net(net, weights, {k: v for k, v in meta.items() if k not in ("config", "n_features")})
    return best, by_t


def warm_start(net: SchedulerNet, weights: str | Path, seed: int) -> dict[str, Any]:
    """Start ``net`` from trained ``weights`` of the same width and at most as many rounds.

    Every layer the two share is copied; a round the file lacks starts near zero (weights of
    scale 1e-3, bias 0), so the network starts computing almost exactly what the file's
    does (the residual update adds ~0) and the new round learns from there. Features are only
    ever appended, so a file made for fewer features fills the first columns of the input
    layer and the new features start with weight 0: the same scores until they learn. Returns
    the file's metadata.

    Raises:
        SpecError: when the file's width differs, it has more rounds than ``net``, or more
            features than this version computes.
    """
    from taktline.agents.jobshop_features import N_FEATURES
    from taktline.agents.jobshop_policy import read_weights

    try:
        data, meta = read_weights(weights)
        dim, rounds = int(meta["config"]["dim"]), int(meta["config"]["rounds"])
        n_features = int(meta["n_features"])
    except PolicyError as exc:
        raise SpecError(f"init: {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise SpecError(f"init: {str(weights)!r} lacks the network's sizes ({exc})") from None
    if dim != net.config.dim or rounds > net.config.rounds or n_features > N_FEATURES:
        raise SpecError(
            f"init: {str(weights)!r} has dim {dim}, {rounds} round(s) and {n_features} features;"
            f" a warm start needs the same --dim ({net.config.dim}), at most --rounds "
            f"{net.config.rounds} and at most {N_FEATURES} features"
        )
    gen = torch.Generator().manual_seed(seed)
    for name, value in net.state_dict().items():
        if name in data.files:
            old = torch.from_numpy(data[name])
            if name == "encode.0.weight" and old.shape[1] < value.shape[1]:
                value.zero_()
                value[:, : old.shape[1]].copy_(old)
            else:
                value.copy_(old)
        elif name.endswith("weight"):
            value.copy_(1e-3 * torch.randn(value.shape, generator=gen))
        else:
            value.zero_()
    return meta


def check_config(cfg: SelfLabelConfig) -> None:
    """Name a bad setting before any work."""
    if not cfg.minutes > 0:
        raise SpecError(f"minutes: must be > 0, got {cfg.minutes}")
    if cfg.beta < 2:
        raise SpecError(f"beta: need at least 2 samples per instance, got {cfg.beta}")
    if cfg.device not in ("cpu", "cuda"):
        raise SpecError(f"device: expected cpu or cuda, got {cfg.device!r}")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise SpecError("device: cuda was asked for but torch sees no GPU here; use --device cpu")
    if cfg.heads < 0 or (cfg.heads and cfg.dim % cfg.heads):
        raise SpecError(
            f"heads: attention heads must divide --dim ({cfg.dim}) and be >= 0 (0: none), got "
            f"{cfg.heads}"
        )
    if cfg.dim < 4 or cfg.rounds < 1:
        raise SpecError(f"dim/rounds: need dim >= 4 and rounds >= 1, got {cfg.dim}/{cfg.rounds}")
    if not cfg.lr > 0:
        raise SpecError(f"lr: must be > 0, got {cfg.lr}")
    if cfg.replay < 0 or cfg.updates < 1:
        raise SpecError(
            f"replay/updates: need replay >= 0 and updates >= 1, got {cfg.replay}/{cfg.updates}"
        )
    if not 0.0 <= cfg.ema < 1.0:
        raise SpecError(f"ema: a decay in [0, 1) (e.g. 0.999; 0 for none), got {cfg.ema}")
    if cfg.validation_per_size < VALIDATION_PER_SIZE:
        raise SpecError(
            f"validation_per_size: the fixed set has {VALIDATION_PER_SIZE} per size; need at "
            f"least that, got {cfg.validation_per_size}"
        )
    if cfg.init is not None and not Path(cfg.init).is_file():
        raise SpecError(
            f"init: no weights file at {cfg.init!r}; pass a .npz that train-jobshop wrote"
        )
    if not cfg.sizes or any(n < 2 or m < 2 for n, m in cfg.sizes):
        raise SpecError(f"sizes: need (jobs, machines) pairs of at least 2, got {cfg.sizes}")
    if cfg.workers < 1:
        raise SpecError(f"workers: need at least 1 (1: label in this process), got {cfg.workers}")
    if cfg.workers > 1 and cfg.device != "cpu":
        raise SpecError(
            f"workers: {cfg.workers} label on CPU cores as Ray tasks; with --device "
            f"{cfg.device} label where the network is, with --workers 1"
        )
    if cfg.improve < 0:
        raise SpecError(f"improve: tabu moves per label, >= 0 (0: none), got {cfg.improve}")
    if cfg.improve and cfg.scheme != "active":
        raise SpecError(
            f"improve: improved labels are taught in the active scheme; got scheme {cfg.scheme!r}"
            " (use --scheme active, or --improve 0)"
        )
    if cfg.max_instances < 0 or cfg.eval_every_instances < 0:
        raise SpecError(
            "max_instances/eval_every_instances: need integers >= 0 (0: by time), got "
            f"{cfg.max_instances}/{cfg.eval_every_instances}"
        )


def train_selflabel(
    cfg: SelfLabelConfig,
    out: Path,
    on_progress: Callable[[float, dict[str, float]], None] | None = None,
) -> SelfLabelResult:
    """Train for ``cfg.minutes``; write the best-validated weights to ``out`` (``.npz``)."""
    import mlflow

    from taktline.training import tracking

    check_config(cfg)
    if cfg.workers > 1:
        from taktline.raycluster import attach

        attach()  # a cluster address that nothing answers is named before any work
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    net = SchedulerNet(NetConfig(cfg.dim, cfg.rounds, cfg.heads))
    if cfg.init is not None:
        warm_start(net, cfg.init, cfg.seed)
    net = net.to(cfg.device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    average = _Average(net, cfg.ema) if cfg.ema > 0 else None
    val = validation_set(per_size=cfg.validation_per_size)
    budget = cfg.minutes * 60.0
    t0 = time.perf_counter()
    history: list[dict[str, float]] = []
    best_val = start_ratio = greedy_ratio(net, val, cfg.device, cfg.scheme)
    save_net(net, out, {"validation_ratio": best_val, "instances": 0, "config_run": asdict(cfg)})
    kept: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    steps = 0
    next_eval = t0 + cfg.eval_every_s
    next_eval_at = cfg.eval_every_instances
    instances = 0
    pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    label_ratio: list[float] = []

    def share_done(now: float) -> float:
        """How far along the budget is (instances when counted, else time)."""
        if cfg.max_instances:
            return min(1.0, instances / cfg.max_instances)
        return min(1.0, (now - t0) / budget)

    tracking.configure()
    exp = tracking.ensure_experiment("train-jobshop")
    with mlflow.start_run(experiment_id=exp, run_name="self-labeling") as run:
        mlflow.log_params({k: str(v)[:500] for k, v in asdict(cfg).items()})
        while True:
            now = time.perf_counter()
            done = now - t0 >= budget or 0 < cfg.max_instances <= instances
            due = instances >= next_eval_at if cfg.eval_every_instances else now >= next_eval
            if due or done:
                ratio = greedy_ratio(net, val, cfg.device, cfg.scheme)
                candidate = net
                elapsed = now - t0
                point = {
                    "minutes": elapsed / 60.0,
                    "instances": float(instances),
                    "gradient_steps": float(steps),
                    "validation_greedy_ratio": ratio,
                    "label_ratio": float(np.mean(label_ratio)) if label_ratio else float("nan"),
                }
                if average is not None:
                    point["validation_greedy_ratio_ema"] = greedy_ratio(
                        average.net, val, cfg.device, cfg.scheme
                    )
                    if point["validation_greedy_ratio_ema"] < ratio:
                        ratio, candidate = point["validation_greedy_ratio_ema"], average.net
                label_ratio.clear()
                history.append(point)
                mlflow.log_metrics({k: v for k, v in point.items() if v == v}, step=instances)
                if ratio < best_val:
                    best_val = ratio
                    meta = {
                        "validation_ratio": ratio,
                        "instances": instances,
                        "minutes": elapsed / 60.0,
                        "weights_kind": "average" if candidate is not net else "live",
                        "config_run": asdict(cfg),
                    }
                    save_net(candidate, out, meta)
                if on_progress is not None:
                    on_progress(share_done(now), point)
                next_eval = time.perf_counter() + cfg.eval_every_s
                next_eval_at = instances + cfg.eval_every_instances
                if done:
                    break
            size = cfg.instances_per_update
            if cfg.max_instances:
                size = min(size, cfg.max_instances - instances)
            if cfg.eval_every_instances:
                size = min(size, next_eval_at - instances)
            group = []
            for k in range(size):
                n, m = cfg.sizes[int(rng.integers(len(cfg.sizes)))]
                group.append((taillard_like(n, m, rng), (cfg.seed, LABEL_STREAM, instances + k)))
            net.eval()
            for (inst, _), (label, actions) in zip(
                group, label_instances(net, group, cfg), strict=True
            ):
                label_ratio.append(label / max(1, inst.trivial_lower_bound()))
                pending.append(actions)
            instances += len(group)
            if len(pending) < cfg.instances_per_update and not (0 < cfg.max_instances <= instances):
                continue
            frac = share_done(time.perf_counter())
            for g in opt.param_groups:
                g["lr"] = cfg.lr * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * frac)))
            net.train()
            for group_steps in _update_groups(pending, kept, cfg, rng):
                x, mask, act = (
                    torch.from_numpy(a).to(cfg.device) for a in _stack_padded(group_steps)
                )
                loss = _label_loss(net, x, mask, act)
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                opt.step()
                steps += 1
                if average is not None:
                    average.update(net)
            pending.clear()
        fig = tracking.learning_curve_figure(
            [{"step": h["instances"], "mean": h["validation_greedy_ratio"]} for h in history],
            "greedy makespan / LB",
            {**rule_ratios(val, cfg.scheme), "start": start_ratio},
            [
                (int(h["instances"]), h["label_ratio"])
                for h in history
                if h["label_ratio"] == h["label_ratio"]
            ],
            steps="instances labelled",
            train_metric="self-label makespan / LB",
        )
        tracking.log_figure_png(fig, "learning_curve.png")
        fig.savefig(out.with_name(out.stem + "_curve.png"))
        temperature, by_t = calibrate_temperature(out, cfg.beta)
        mlflow.log_metrics({f"validation_best_of_{cfg.beta}_t{t:g}": v for t, v in by_t.items()})
        mlflow.log_param("sampling_temperature", temperature)
        mlflow.log_artifact(str(out), "weights")
        run_id = run.info.run_id
    return SelfLabelResult(out, best_val, instances, time.perf_counter() - t0, history, run_id)


#: Stream of the per-instance sampling seeds: ``(seed, LABEL_STREAM, instance index)``.
LABEL_STREAM = 2

Labelled = tuple[int, tuple[np.ndarray, np.ndarray, np.ndarray]]


def label_instances(
    net: SchedulerNet,
    group: list[tuple[JobShopInstance, tuple[int, int, int]]],
    cfg: SelfLabelConfig,
) -> list[Labelled]:
    """:func:`_label` of every ``(instance, sampling seed)`` of ``group``, in order; with
    ``cfg.workers > 1`` as Ray tasks, that many at a time (the cluster of ``RAY_ADDRESS`` when
    set, else a local Ray). Each instance samples from its own seed, so the labels are the
    same wherever and in whatever order they are made."""
    if cfg.workers <= 1 or len(group) <= 1:
        return [_label(net, inst, cfg, np.random.default_rng(list(s))) for inst, s in group]
    import ray

    from taktline.raycluster import attach
    from taktline.training.compare import in_order_on_ray

    attach()
    weights = ray.put({k: v.detach().cpu().numpy() for k, v in net.state_dict().items()})
    calls = [(weights, net.config, inst, s, cfg) for inst, s in group]
    out: list[Labelled] = []
    in_order_on_ray(label_on_worker, calls, cfg.workers, lambda _, r: out.append(r))
    return out


def label_on_worker(
    weights: dict[str, np.ndarray],
    config: NetConfig,
    inst: JobShopInstance,
    seed: tuple[int, int, int],
    cfg: SelfLabelConfig,
) -> Labelled:
    """:func:`_label` in a Ray worker: the network rebuilt from ``weights``, one torch thread."""
    torch.set_num_threads(1)
    net = SchedulerNet(config)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    net.eval()
    return _label(net, inst, cfg, np.random.default_rng(list(seed)))


def _label(
    net: SchedulerNet, inst: JobShopInstance, cfg: SelfLabelConfig, rng: np.random.Generator
) -> Labelled:
    """The best of ``cfg.beta`` sampled schedules (half on the mirror with ``cfg.mirror``): its
    makespan and its replayed steps on the instance (or mirror) it was built on."""
    shares = [(inst, cfg.beta)]
    if cfg.mirror:
        shares = [(inst, cfg.beta - cfg.beta // 2), (mirrored(inst), cfg.beta // 2)]
    best: tuple[int, JobShopInstance, np.ndarray, np.ndarray] | None = None
    for where, n in shares:
        r = rollout(net, where, n, False, rng, scheme=cfg.scheme, device=cfg.device)
        assert r is not None
        k = int(r.makespan.argmin())
        if best is None or int(r.makespan[k]) < best[0]:
            best = (int(r.makespan[k]), where, r.actions[:, k], r.start[k])
    assert best is not None
    makespan, where, actions, start = best
    if cfg.improve:
        found = tabu_search(
            where,
            _batch_row(where, start),
            time_limit_s=float("inf"),
            seed=int(rng.integers(2**31)),
            max_iterations=cfg.improve,
        )
        if found.makespan < makespan:
            # as Giffler-Thompson choices; the replay's makespan is at most the schedule's
            replayed = replay_schedule(where, found.schedule)
            makespan = replayed.makespan
            actions = np.array([so.job for so in replayed.schedule])
    return makespan, replay_features(where, actions, cfg.scheme)


class _Average:
    """Exponential moving average of a network's weights (a copy updated after each step)."""

    def __init__(self, net: SchedulerNet, decay: float) -> None:
        import copy

        self.net = copy.deepcopy(net)
        self.decay = decay

    @torch.no_grad()
    def update(self, net: SchedulerNet) -> None:
        for mine, theirs in zip(self.net.parameters(), net.parameters(), strict=True):
            mine.mul_(self.decay).add_(theirs, alpha=1.0 - self.decay)


def _update_groups(
    new: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    kept: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    cfg: SelfLabelConfig,
    rng: np.random.Generator,
) -> list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """The instance groups of the gradient steps for ``new`` labels: the new group first, then
    (``cfg.updates - 1`` times) as many instances drawn from the kept ones, which ``new`` joins
    (the oldest leave once more than ``cfg.replay`` are kept)."""
    groups = [list(new)]
    if cfg.replay > 0:
        kept.extend(new)
        del kept[: max(0, len(kept) - cfg.replay)]
        for _ in range(cfg.updates - 1):
            pick = rng.choice(len(kept), size=min(len(new), len(kept)), replace=False)
            groups.append([kept[int(i)] for i in pick])
    else:
        groups *= cfg.updates
    return groups


def _stack_padded(
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps of instances of different sizes in one batch: extra job slots are finished jobs
    (no candidate, left out of every summary)."""
    width = max(p[0].shape[1] for p in parts)
    xs, masks = [], []
    for x, mask, _ in parts:
        pad = width - x.shape[1]
        if pad:
            filler = np.zeros((x.shape[0], pad, x.shape[2]), dtype=x.dtype)
            filler[..., 1] = 1.0
            x = np.concatenate([x, filler], axis=1)
            mask = np.concatenate([mask, np.zeros((mask.shape[0], pad), dtype=bool)], axis=1)
        xs.append(x)
        masks.append(mask)
    return np.concatenate(xs), np.concatenate(masks), np.concatenate([p[2] for p in parts])


def _label_loss(net: SchedulerNet, x: torch.Tensor, mask: torch.Tensor, act: torch.Tensor) -> Any:
    """Cross-entropy of the labelled choices (steps already restricted to > 1 candidate)."""
    logits = net(x, mask)
    return F.cross_entropy(logits, act)
