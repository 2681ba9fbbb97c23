"""Run bookkeeping shared by the training backends (SB3 and RLlib).

A :class:`Run` keeps the budget, evaluates greedily on fixed cases, keeps the best policy as a
bundle, and :func:`finish` compares it with the rules, draws the pictures, logs the MLflow model
and registers it. The backends add how a model is exported and checkpointed.
"""

from __future__ import annotations

import abc
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from rich.console import Console

from taktline.agents.bundle import PolicyBundle, make_lineage
from taktline.agents.policies import NeuralPolicy, RulePolicy
from taktline.training import tracking
from taktline.training.config import TrainConfig
from taktline.training.evaluate import DEFAULT_METRIC, Case, evaluate_cases, render_table
from taktline.training.progress import TrainProgress

STATE_FILE = "state.json"
"""A checkpoint's :class:`RunState` file (written last: it commits the checkpoint)."""


def make_env(env_id: str, env_kwargs: dict[str, Any]) -> gym.Env[Any, Any]:
    """One training env (importable, so subprocesses can build it)."""
    import taktline.envs  # noqa: F401  (registers the ids in a fresh subprocess)

    return gym.make(env_id, disable_env_checker=True, **env_kwargs)


@dataclass
class RunState:
    """What a checkpoint remembers besides the model (``state.json``)."""

    num_timesteps: int = 0
    elapsed_s: float = 0.0
    best_mean: float | None = None
    best_step: int | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    train_curve: list[tuple[int, float]] = field(default_factory=list)

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.__dict__))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> RunState:
        data = json.loads(path.read_text())
        data["train_curve"] = [tuple(x) for x in data.get("train_curve", [])]
        return cls(**data)


@dataclass
class TrainResult:
    """The outcome of :func:`train`."""

    run_id: str
    num_timesteps: int
    best_bundle: Path | None
    best_mean: float | None
    metric: str
    model_uri: str | None = None
    model_version: str | None = None
    evaluation: dict[str, Any] | None = None


class Run(abc.ABC):
    """State and actions of one training run, whatever the backend.

    A backend subclasses it with :meth:`network_of`, :meth:`checkpoint` and :attr:`backend`;
    the budget, the evaluation on fixed cases, the best bundle and the final report are shared.
    """

    def __init__(self, cfg: TrainConfig, run_id: str, state: RunState, console: Console) -> None:
        self.cfg = cfg
        self.run_id = run_id
        self.state = state
        self.console = console
        self.dir = Path(cfg.output_dir) / run_id
        self.dir.mkdir(parents=True, exist_ok=True)
        self.metric, self.higher = DEFAULT_METRIC.get(cfg.env.id, ("return", True))
        eval_kwargs = {**cfg.env.kwargs, **cfg.eval.env_kwargs}
        self.cases = [
            Case(f"seed {cfg.eval.seed + i}", eval_kwargs, cfg.eval.seed + i)
            for i in range(cfg.eval.episodes)
        ]
        every = cfg.eval.every_steps
        self.next_eval = (state.num_timesteps // every + 1) * every
        ck = cfg.checkpoint.every_steps
        self.next_checkpoint = (state.num_timesteps // ck + 1) * ck
        self.started = time.monotonic()
        self.network_spec: dict[str, Any] = {}
        self.spaces: tuple[gym.spaces.Space[Any], gym.spaces.Discrete] | None = None
        self.spec_hash: str | None = None
        self.baselines: dict[str, float] = {}
        self.progress = TrainProgress(
            cfg.budget.total_timesteps, state.num_timesteps, console, enabled=cfg.progress
        )

    # -- budget ------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return self.state.elapsed_s + (time.monotonic() - self.started)

    def out_of_time(self) -> bool:
        limit = self.cfg.budget.max_minutes
        return limit is not None and self.elapsed() >= 60.0 * limit

    # -- bundles -----------------------------------------------------------------------------
    backend = "?"
    """The backend's name in a bundle's lineage."""

    @abc.abstractmethod
    def network_of(self, model: Any) -> torch.nn.Module:
        """The policy network of ``model`` as a plain torch module (the backend exports it)."""

    def lineage_of(self, model: Any) -> dict[str, Any]:
        """Backend-specific lineage of a bundle of ``model`` (algorithm, iteration...)."""
        return {}

    def bundle(self, model: Any, step: int) -> PolicyBundle:
        """The policy of ``model`` at ``step`` as a bundle with the run's lineage."""
        assert self.spaces is not None
        return PolicyBundle(
            env_id=self.cfg.env.id,
            env_kwargs=dict(self.cfg.env.kwargs),
            spec_hash=self.spec_hash,
            observation_space=self.spaces[0],
            action_space=self.spaces[1],
            network=self.network_of(model),
            network_spec=self.network_spec,
            lineage=make_lineage(
                name=self.cfg.name,
                config=self.cfg.model_dump(mode="json"),
                seed=self.cfg.seed,
                mlflow_run_id=self.run_id,
                backend=self.backend,
                num_timesteps=step,
                **self.lineage_of(model),
            ),
        )

    # -- evaluation --------------------------------------------------------------------------
    def evaluate(self, model: Any, step: int) -> float:
        """Greedy evaluation on the fixed cases; keeps the best bundle."""
        bundle = self.bundle(model, step)
        ev = evaluate_cases(
            [NeuralPolicy(bundle, name="policy")],
            self.cfg.env.id,
            self.cases,
            self.metric,
            self.higher,
            log=False,
        )
        mean = float(np.mean(ev.values["policy"]))
        kp = ev.kpis["policy"]
        metrics = {
            f"eval.{self.metric}": mean,
            "eval.return": float(np.mean([k["return"] for k in kp])),
        }
        gaps = ev.gaps("policy")
        if gaps is not None:
            metrics["eval.gap"] = float(np.mean(gaps))
        tracking.log_metrics(metrics, step)
        self.state.history.append({"step": step, "mean": mean})
        sign = 1.0 if self.higher else -1.0
        best = self.state.best_mean
        if best is None or sign * mean > sign * best:
            self.state.best_mean, self.state.best_step = mean, step
            target = self.dir / "best_bundle"
            if target.exists():
                shutil.rmtree(target)
            bundle.save(target)
        self.progress.kpi(f"{self.metric} {mean:.1f} (best {self.state.best_mean:.1f})")
        return mean

    # -- checkpoints -------------------------------------------------------------------------
    @abc.abstractmethod
    def checkpoint(self, model: Any, step: int) -> None:
        """Save the model and :attr:`state` so that ``resume`` continues from ``step``."""

    def _stamp(self, step: int) -> None:
        """Bring :attr:`state` to ``step`` and restart the elapsed-time clock (checkpoints)."""
        self.state.num_timesteps = step
        self.state.elapsed_s = self.elapsed()
        self.started = time.monotonic()


def publish_checkpoint(
    folder: Path, artifact_path: str, metrics: dict[str, float], step: int
) -> None:
    """Upload a checkpoint folder to the run's artifacts, its state file last.

    A resume from the tracking store reads the state file first (the step to resume at). Sent
    after the model files and the ``checkpoint.*`` metrics, it never names a step whose files
    or metrics a kill kept from the store; a kill before it leaves the previous checkpoint.
    """
    import mlflow

    for path in sorted(folder.iterdir()):
        if path.name == STATE_FILE:
            continue
        if path.is_dir():
            mlflow.log_artifacts(str(path), artifact_path=f"{artifact_path}/{path.name}")
        else:
            mlflow.log_artifact(str(path), artifact_path=artifact_path)
    tracking.log_metrics(metrics, step)
    mlflow.log_artifact(str(folder / STATE_FILE), artifact_path=artifact_path)


def log_baselines(run: Run) -> None:
    """The rules' mean on the evaluation cases (horizontal lines of the learning curve)."""
    names = run.cfg.eval.baselines
    if not names:
        return
    ev = evaluate_cases(
        [RulePolicy(n) for n in names], run.cfg.env.id, run.cases, run.metric, run.higher, log=False
    )
    for row in ev.summary():
        run.baselines[row["policy"]] = row["mean"]
    tracking.log_metrics({f"baseline.{k}.{run.metric}": v for k, v in run.baselines.items()}, 0)


def finish(cfg: TrainConfig, run: Run, steps: int) -> TrainResult:
    """Final comparison, pictures, the MLflow model and its registration."""
    best_dir = run.dir / "best_bundle"
    result = TrainResult(
        run.run_id, steps, best_dir if best_dir.exists() else None, run.state.best_mean, run.metric
    )
    if result.best_bundle is None:
        return result
    best = NeuralPolicy(PolicyBundle.load(best_dir), name=f"{cfg.name}[greedy]")
    policies = [best, *(RulePolicy(n) for n in cfg.eval.baselines)]
    ev = evaluate_cases(policies, cfg.env.id, run.cases, run.metric, run.higher, log=True)
    run.console.print(render_table(ev, reference=best.name))
    result.evaluation = ev.as_dict(reference=best.name)
    fig = tracking.learning_curve_figure(
        run.state.history, run.metric, run.baselines, run.state.train_curve
    )
    tracking.log_figure_png(fig, "learning_curve.png")
    tracking.log_picture(cfg.env.id, run.cases[0].env_kwargs, best, run.cases[0].seed)
    probe = make_env(cfg.env.id, dict(cfg.env.kwargs))
    probe.reset(seed=run.cases[0].seed)
    base: Any = probe.unwrapped
    obs, mask = base.codec.encode(base.snapshot())
    probe.close()
    result.model_uri = tracking.log_policy_model(best_dir, obs, mask)
    if cfg.tracking.register_model:
        result.model_version = tracking.register(
            result.model_uri,
            cfg.name,
            cfg.tracking.alias,
            tags={"run_id": run.run_id, f"best_{run.metric}": f"{run.state.best_mean:.4g}"},
        )
        run.console.print(
            f"registered {cfg.name} version {result.model_version} as @{cfg.tracking.alias}"
        )
    return result
