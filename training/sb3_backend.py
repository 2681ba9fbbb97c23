"""The local training backend: stable-baselines3 (MaskablePPO, PPO, DQN), tracked in MLflow.

``train(config)`` runs on this machine: ``n_envs`` environments in this process
(``DummyVecEnv``; ``vec_env: subproc`` for one process each), checkpoints every
``checkpoint.every_steps`` (locally under
``<output_dir>/<run id>/`` and as run artifacts), a greedy evaluation every
``eval.every_steps`` on fixed seeds, and at the end the best policy as a bundle, an MLflow
model and a registered version with the ``candidate`` alias. ``train(config, resume=RUN_ID)``
continues a stopped or killed run from its last checkpoint, in the same MLflow run.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from rich.console import Console
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import KVWriter
from stable_baselines3.common.vec_env import VecEnvWrapper, VecNormalize

from taktline.errors import PolicyError
from taktline.training import tracking
from taktline.training.config import TrainConfig
from taktline.training.run import (
    CHECKPOINT_DIR,
    Run,
    RunState,
    TrainResult,
    check_env,
    fetch_checkpoint,
    finish,
    fresh_checkpoint_folder,
    log_baselines,
    make_env,
    publish_checkpoint,
    swap_in,
)
from taktline.training.sb3_policies import export_network, import_network, sb3_policy_setup

CHECKPOINT_FILE = "checkpoint.zip"
NORMALIZE_FILE = "vecnormalize.pkl"


class MlflowWriter(KVWriter):
    """Forwards SB3's logger (losses, entropy, fps, episode return) to MLflow metrics."""

    def write(
        self, key_values: dict[str, Any], key_excluded: dict[str, Any], step: int = 0
    ) -> None:
        metrics = {
            k.replace("/", "."): float(v)
            for k, v in key_values.items()
            if isinstance(v, int | float | np.floating | np.integer) and not isinstance(v, bool)
        }
        tracking.log_metrics(metrics, step)

    def close(self) -> None:
        """Nothing to close."""


class TimedVecEnv(VecEnvWrapper):
    """Counts the seconds spent inside the envs (``reset``, ``step_async``, ``step_wait``) and
    the env steps taken, so the run can log the env's share of its wall time.

    With ``SubprocVecEnv`` this includes the pipe round trips: the cost of stepping the envs as
    the training loop sees it, which is what a faster vec env choice would change.
    """

    def __init__(self, venv: Any) -> None:
        super().__init__(venv)
        self.env_s = 0.0
        self.steps = 0

    def reset(self) -> Any:
        start = time.perf_counter()
        obs = self.venv.reset()
        self.env_s += time.perf_counter() - start
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        start = time.perf_counter()
        self.venv.step_async(actions)
        self.env_s += time.perf_counter() - start

    def step_wait(self) -> Any:
        start = time.perf_counter()
        out = self.venv.step_wait()
        self.env_s += time.perf_counter() - start
        self.steps += self.num_envs
        return out


class Trainer(BaseCallback):
    """One callback for the run's cadences: KPIs, evaluation, checkpoints, budget, progress."""

    def __init__(self, run: _SB3Run) -> None:
        super().__init__()
        self.run = run
        self._kpis: list[dict[str, float]] = []
        self._returns: list[float] = []
        self._window: tuple[float, float, int] | None = None  # (wall, env_s, steps) at its start

    def _timed(self) -> TimedVecEnv | None:
        venv = self.model.get_env()
        while venv is not None and not isinstance(venv, TimedVecEnv):
            venv = getattr(venv, "venv", None)
        return venv

    def _on_training_start(self) -> None:
        timed = self._timed()
        if timed is not None:
            self._window = (time.perf_counter(), timed.env_s, timed.steps)

    def _on_step(self) -> bool:
        run, n = self.run, self.num_timesteps
        for info in self.locals.get("infos", ()):
            if "episode" in info:
                self._returns.append(float(info["episode"]["r"]))
            kp = info.get("kpis")
            if kp:
                self._kpis.append(
                    {k: float(v) for k, v in kp.items() if isinstance(v, int | float)}
                )
        run.progress.update(n)
        budget = run.cfg.budget.total_timesteps
        if n >= run.next_eval and n < budget:  # the budget's own evaluation comes after learn
            run.evaluate(self.model, n)
            run.next_eval = (n // run.cfg.eval.every_steps + 1) * run.cfg.eval.every_steps
        if n >= run.next_checkpoint and n < budget:
            run.checkpoint(self.model, n)
            run.next_checkpoint = (
                n // run.cfg.checkpoint.every_steps + 1
            ) * run.cfg.checkpoint.every_steps
        # stop at the budget, not at the end of the rollout it falls in: a run resumed from a
        # checkpoint taken mid-rollout would otherwise overrun it by up to a rollout per resume
        return n < budget and not run.out_of_time()

    def _on_rollout_end(self) -> None:
        n = self.num_timesteps
        metrics: dict[str, float] = {}
        if self._returns:
            mean_ret = float(np.mean(self._returns))
            metrics["train.episode_return"] = mean_ret
            self.run.state.train_curve.append((n, mean_ret))
        for key in sorted({k for kp in self._kpis for k in kp}):
            values = [kp[key] for kp in self._kpis if key in kp]
            metrics[f"train.kpi.{key}"] = float(np.mean(values))
        metrics.update(self._time_metrics())
        tracking.log_metrics(metrics, n)
        self._kpis, self._returns = [], []

    def _time_metrics(self) -> dict[str, float]:
        """``time.env_share`` (seconds inside the envs over wall seconds) and
        ``time.env_steps_per_s`` (env steps over wall seconds) since the last rollout's end;
        the window holds one rollout and the update before it, so the share is the env's part
        of training, not only of sampling."""
        timed = self._timed()
        if timed is None or self._window is None:
            return {}
        now = time.perf_counter()
        wall0, env0, steps0 = self._window
        self._window = (now, timed.env_s, timed.steps)
        wall = now - wall0
        if wall <= 0:
            return {}
        return {
            "time.env_share": (timed.env_s - env0) / wall,
            "time.env_steps_per_s": (timed.steps - steps0) / wall,
        }


class _SB3Run(Run):
    """A run whose model is an SB3 algorithm (its checkpoint a ``.zip``)."""

    backend = "sb3"

    def network_of(self, model: Any) -> torch.nn.Module:
        return export_network(model, self.network_spec)

    def lineage_of(self, model: Any) -> dict[str, Any]:
        return {"algorithm": self.cfg.algorithm}

    # -- checkpoints -------------------------------------------------------------------------
    def checkpoint(self, model: Any, step: int) -> None:
        """Save model + state locally (atomically) and as run artifacts."""
        self._stamp(step)
        final = self.dir / CHECKPOINT_DIR
        ck = fresh_checkpoint_folder(final)  # written whole, then swapped in: never half of one
        model.save(ck / CHECKPOINT_FILE)
        metrics = {"checkpoint.step": float(step)}
        venv = model.get_env()
        if isinstance(venv, VecNormalize):  # its reward statistics resume too (norm_obs or not)
            venv.save(str(ck / NORMALIZE_FILE))
            metrics.update(_ret_rms_metrics(venv, "normalizer"))
        best = self.dir / "best_bundle"
        if best.exists():  # the best policy so far, consistent with the state's best_mean
            shutil.copytree(best, ck / "best_bundle")
        self.seal(ck)
        swap_in(ck, final)
        publish_checkpoint(final, CHECKPOINT_DIR, metrics, step)


def _ret_rms_metrics(venv: Any, prefix: str) -> dict[str, float]:
    """The reward normaliser's running statistics as metrics (``<prefix>.ret_rms.mean``...)."""
    rms = venv.ret_rms
    return {
        f"{prefix}.ret_rms.mean": float(rms.mean),
        f"{prefix}.ret_rms.var": float(rms.var),
        f"{prefix}.ret_rms.count": float(rms.count),
    }


def _algorithm(cfg: TrainConfig) -> Any:
    if cfg.algorithm == "maskable_ppo":
        from sb3_contrib import MaskablePPO

        return MaskablePPO
    if cfg.algorithm == "ppo":
        from stable_baselines3 import PPO

        return PPO
    from stable_baselines3 import DQN

    return DQN


def _vec_env(cfg: TrainConfig, seed: int, ck_dir: Path | None = None) -> Any:
    from functools import partial

    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    cls = SubprocVecEnv if cfg.vec_env == "subproc" and cfg.n_envs > 1 else DummyVecEnv
    venv = make_vec_env(
        partial(make_env, cfg.env.id, dict(cfg.env.kwargs)),
        n_envs=cfg.n_envs,
        seed=seed,
        vec_env_cls=cls,
    )
    venv = TimedVecEnv(venv)
    if cfg.normalize_reward:
        if ck_dir is not None:  # verified against the state file's digests before this
            saved = ck_dir / NORMALIZE_FILE
            if not saved.is_file():
                venv.close()
                raise PolicyError(
                    f"--resume: the checkpoint {ck_dir} has no {NORMALIZE_FILE}, so the reward "
                    "statistics cannot be restored; resume with --set normalize_reward=false "
                    "or start a new run"
                )
            venv = VecNormalize.load(str(saved), venv)
        else:
            venv = VecNormalize(venv, norm_obs=False, norm_reward=True, gamma=_gamma(cfg))
    return venv


def _gamma(cfg: TrainConfig) -> float:
    return float(cfg.hyperparameters.get("gamma", 0.99))


def train(
    cfg: TrainConfig, resume: str | None = None, console: Console | None = None
) -> TrainResult:
    """Train (or resume) a policy as ``cfg`` says; see the module docstring."""
    import mlflow
    import torch

    console = console or Console(stderr=True)
    check_env(cfg)  # here, once: not in each subprocess with a traceback apiece
    torch.set_num_threads(cfg.torch_threads)
    uri = tracking.configure()
    console.print(tracking.describe_store(uri))
    exp_id = tracking.ensure_experiment(cfg.tracking.experiment)
    state = RunState()
    ck_dir: Path | None = None
    if resume:
        # verified against the state's digests before anything in it is unpickled
        ck_dir, state = fetch_checkpoint(resume, Path(cfg.output_dir) / resume)
        if not (ck_dir / CHECKPOINT_FILE).is_file():
            raise PolicyError(
                f"--resume {resume}: the checkpoint {ck_dir} has no {CHECKPOINT_FILE}"
            )
        best = Path(cfg.output_dir) / resume / "best_bundle"
        if (ck_dir / "best_bundle").is_dir() and ck_dir / "best_bundle" != best:
            shutil.rmtree(best, ignore_errors=True)
            shutil.copytree(ck_dir / "best_bundle", best)
    active = mlflow.start_run(
        run_id=resume,
        experiment_id=None if resume else exp_id,
        run_name=None if resume else cfg.name,
    )
    with active as mlrun:
        run_id = mlrun.info.run_id
        how = f"resumed at step {state.num_timesteps}" if resume else "new"
        console.print(f"run {run_id} ({how}); checkpoints in {Path(cfg.output_dir) / run_id}")
        if not resume:
            tracking.log_config(cfg)
            mlflow.set_tags({"taktline.backend": "sb3", "taktline.env_id": cfg.env.id})
        run = _SB3Run(cfg, run_id, state, console)
        venv = _vec_env(cfg, cfg.seed + state.num_timesteps, ck_dir)
        if resume and isinstance(venv, VecNormalize):  # what the resumed run starts from
            tracking.log_metrics(_ret_rms_metrics(venv, "resume"), state.num_timesteps)
        try:
            result = _learn(cfg, run, venv, ck_dir)
        finally:
            venv.close()
            run.progress.close()
    return result


def _learn(cfg: TrainConfig, run: _SB3Run, venv: Any, ck_dir: Path | None) -> TrainResult:
    from stable_baselines3.common.logger import Logger

    algo = _algorithm(cfg)
    obs_space, act_space = venv.observation_space, venv.action_space
    if not isinstance(act_space, gym.spaces.Discrete):
        raise PolicyError(f"{cfg.env.id}: needs a Discrete action space, got {act_space}")
    run.spaces = (obs_space, act_space)
    probe = make_env(cfg.env.id, dict(cfg.env.kwargs))
    run.spec_hash = getattr(
        getattr(probe.unwrapped, "spec_line", None), "spec_hash", lambda: None
    )()
    probe.close()
    policy, policy_kwargs, run.network_spec = sb3_policy_setup(
        cfg.policy.network, cfg.policy.kwargs, obs_space, act_space, cfg.algorithm
    )
    if ck_dir is not None:
        model = algo.load(ck_dir / CHECKPOINT_FILE, env=venv, device="cpu")
    else:
        try:
            model = algo(
                policy,
                venv,
                policy_kwargs=policy_kwargs,
                seed=cfg.seed,
                device="cpu",
                verbose=0,
                **cfg.hyperparameters,
            )
        except TypeError as exc:
            raise PolicyError(f"hyperparameters: {exc} (see the {cfg.algorithm} docs)") from exc
        if cfg.policy.init is not None:
            import_network(model, cfg.policy.init)
    model.set_logger(Logger(folder=None, output_formats=[MlflowWriter()]))
    log_baselines(run)
    if run.state.num_timesteps == 0:
        run.evaluate(model, 0)
    remaining = cfg.budget.total_timesteps - run.state.num_timesteps
    if remaining > 0 and not run.out_of_time():
        model.learn(remaining, callback=Trainer(run), reset_num_timesteps=False)
    steps = int(model.num_timesteps)
    if not run.state.history or run.state.history[-1]["step"] != steps:
        run.evaluate(model, steps)
    run.checkpoint(model, steps)
    run.progress.close()
    return finish(cfg, run, steps)
