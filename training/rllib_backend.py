"""The distributed training backend: RLlib PPO on Ray (new API stack), tracked in MLflow.

``train(config)`` runs the same configs as the SB3 backend, with the same MLflow run
structure (params, per-step metrics, evaluations, KPIs, checkpoints, pictures, the policy
model and its registered version) and the same policy bundle at the end:

* :func:`ppo_config` maps a :class:`~taktline.training.config.TrainConfig` onto a
  ``PPOConfig`` in one place. ``hyperparameters`` take the SB3 names (``learning_rate``,
  ``n_steps`` per env, ``batch_size``, ``n_epochs``, ``gae_lambda``, ``ent_coef``,
  ``clip_range``, ``vf_coef``, ``max_grad_norm``) or any native ``PPOConfig`` key
  (``num_env_runners``, ``num_envs_per_env_runner``, ``vf_clip_param``...). By default the
  ``n_envs`` environments are spread over ``min(n_envs, cluster CPUs)`` env runners.
* The RLModule is :class:`~taktline.training.rllib_module.MaskedPolicyModule`: the actor is
  the bundle's own network, so the export copies a ``state_dict`` and the bundle acts without
  Ray.
* The env runners are :class:`~taktline.training.rllib_runner.MaskedEnvRunner` (RLlib's runner
  with a lean sampling loop); ``hyperparameters.env_runner_cls=rllib`` selects RLlib's own
  ``SingleAgentEnvRunner`` instead (for comparison, or an env the lean loop does not know).
* Env runners that die are restarted (RLlib fault tolerance) and training goes on; checkpoints
  every ``checkpoint.every_steps`` (``algo.save_to_path``, locally and as run artifacts) let
  ``train(config, resume=RUN_ID)`` continue a killed driver in the same MLflow run with the
  same iteration count.

Ray: with no address a local Ray is started with the machine's cores; ``RAY_ADDRESS`` (or
``address=``) attaches to an existing cluster instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
from rich.console import Console

from taktline.errors import SpecError
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
    publish_checkpoint,
    swap_in,
)

if TYPE_CHECKING:
    import torch

RLLIB_DIR = "rllib"

# SB3 hyperparameter names -> PPOConfig attributes (the same YAML trains on both backends)
SB3_NAMES = {
    "learning_rate": "lr",
    "batch_size": "minibatch_size",
    "n_epochs": "num_epochs",
    "gamma": "gamma",
    "gae_lambda": "lambda_",
    "ent_coef": "entropy_coeff",
    "clip_range": "clip_param",
    "vf_coef": "vf_loss_coeff",
    "max_grad_norm": "grad_clip",
    "target_kl": "kl_target",
}

OnIteration = Callable[[dict[str, float]], None]
"""Called after every training iteration with its metrics, ``steps``, the latest evaluation
``eval.<metric>`` and the best one so far ``eval.best`` (Tune reports them)."""


# ---- Ray ------------------------------------------------------------------------------------
def connect(address: str | None = None, console: Console | None = None) -> str:
    """:func:`taktline.raycluster.attach`, printing where to ``console``; returns it."""
    from taktline.raycluster import attach

    text = attach(address)
    if console is not None:
        console.print(text)
    return text


def cluster_cpus() -> int:
    """CPUs of the connected Ray cluster (at least 1)."""
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


# ---- config -> PPOConfig --------------------------------------------------------------------
def network_spec(
    cfg: TrainConfig, obs_space: gym.spaces.Space[Any], n_actions: int
) -> dict[str, Any]:
    """The bundle's ``network_spec`` for ``cfg.policy`` on a flat observation space."""
    kw = dict(cfg.policy.kwargs)
    if cfg.policy.network == "attention":
        allowed = {"d_model", "n_heads", "n_layers"}
        bad = set(kw) - allowed
        if bad:
            raise SpecError(
                f"policy.kwargs: {sorted(bad)} not understood by 'attention'; use "
                "d_model, n_heads, n_layers"
            )
        return {"class": "attention", "kwargs": {"max_jobs": n_actions, **kw}}
    bad = set(kw) - {"hidden", "activation"}
    if bad:
        raise SpecError(
            f"policy.kwargs: {sorted(bad)} not understood by 'mlp'; use hidden, activation"
        )
    return {
        "class": "mlp",
        "kwargs": {
            "obs_dim": int(gym.spaces.flatdim(obs_space)),
            "n_actions": n_actions,
            "hidden": [int(h) for h in kw.get("hidden", [64, 64])],
            "activation": str(kw.get("activation", "tanh")),
        },
    }


def ppo_config(cfg: TrainConfig, spec: dict[str, Any], cpus: int) -> Any:
    """The ``PPOConfig`` of a taktline training config (the one place the mapping lives).

    Args:
        cfg: The training config (``backend: rllib``; ``algorithm`` ppo or maskable_ppo).
        spec: The actor's network spec (see :func:`network_spec`).
        cpus: CPUs of the cluster (caps the default number of env runners).

    Raises:
        SpecError: for an algorithm RLlib does not train here or an unknown hyperparameter.
    """
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from taktline.training.rllib_module import MaskedPolicyModule, log_episode_kpis
    from taktline.training.rllib_runner import RUNNERS

    if cfg.algorithm not in ("ppo", "maskable_ppo"):
        raise SpecError(
            f"algorithm: the rllib backend trains PPO (masked); got "
            f"{cfg.algorithm!r}; set algorithm=maskable_ppo or backend=sb3"
        )
    hp = dict(cfg.hyperparameters)
    runner_name = str(hp.pop("env_runner_cls", "lean"))
    if runner_name not in RUNNERS:
        raise SpecError(
            f"hyperparameters.env_runner_cls: {runner_name!r} is not an env runner; use "
            f"{' or '.join(repr(k) for k in RUNNERS)} (lean: taktline's fast sampling loop; "
            "rllib: RLlib's generic SingleAgentEnvRunner)"
        )
    native: dict[str, Any] = {}
    probe = PPOConfig()
    n_steps = hp.pop("n_steps", None)
    for key, value in hp.items():
        name = str(SB3_NAMES.get(key, key))
        if name == "lambda":
            name = "lambda_"
        if not hasattr(probe, name) or name.startswith("_"):
            raise SpecError(
                f"hyperparameters.{key}: not a PPO setting of the rllib backend; use SB3 names "
                f"({', '.join(['n_steps', *SB3_NAMES])}) or PPOConfig keys (lr, "
                "train_batch_size_per_learner, num_env_runners, ...)"
            )
        native[name] = value
    runners = int(native.pop("num_env_runners", min(cfg.n_envs, cpus)))
    per_runner = int(native.pop("num_envs_per_env_runner", math.ceil(cfg.n_envs / max(runners, 1))))
    total_envs = max(runners, 1) * per_runner
    if n_steps is not None and "train_batch_size_per_learner" not in native:
        native["train_batch_size_per_learner"] = int(n_steps) * total_envs
    from taktline.training.rllib_module import ENV_NAME

    config = (
        PPOConfig()
        .environment(
            env=ENV_NAME, env_config={"env_id": cfg.env.id, "env_kwargs": dict(cfg.env.kwargs)}
        )
        .env_runners(
            num_env_runners=runners,
            num_envs_per_env_runner=per_runner,
            num_cpus_per_env_runner=1,
            env_runner_cls=RUNNERS[runner_name],
        )
        .learners(num_learners=0)
        .rl_module(
            rl_module_spec=RLModuleSpec(
                module_class=MaskedPolicyModule, model_config={"network_spec": spec}
            )
        )
        .fault_tolerance(
            restart_failed_env_runners=True,
            delay_between_env_runner_restarts_s=2.0,
            env_runner_health_probe_timeout_s=10.0,
        )
        .callbacks(on_episode_end=log_episode_kpis)
        .debugging(seed=cfg.seed, log_level="ERROR")
        .reporting(metrics_num_episodes_for_smoothing=20)
    )
    # returns are profits (thousands), not unit-scale rewards: clipping the value loss at
    # RLlib's default of 10 would stop the value function from learning at all
    native.setdefault("vf_clip_param", float("inf"))
    config.update_from_dict(native)
    return config


# ---- the run ----------------------------------------------------------------------------------
class _RllibRun(Run):
    """The shared run bookkeeping (evaluation, best bundle, budget) with RLlib's model export
    and checkpoints."""

    backend = "rllib"

    def network_of(self, model: Any) -> torch.nn.Module:
        from ray.rllib.core import DEFAULT_MODULE_ID

        from taktline.training.rllib_module import export_network

        state = model.learner_group.get_weights()[DEFAULT_MODULE_ID]
        return export_network(state, self.network_spec)

    def lineage_of(self, model: Any) -> dict[str, Any]:
        return {"algorithm": "ppo", "training_iteration": int(model.training_iteration)}

    def checkpoint(self, model: Any, step: int) -> None:
        """RLlib checkpoint + run state, swapped in whole (a kill never leaves half of one)."""
        self._stamp(step)
        final = self.dir / CHECKPOINT_DIR
        tmp = fresh_checkpoint_folder(final)
        model.save_to_path(str((tmp / RLLIB_DIR).resolve()))
        self.seal(tmp)
        swap_in(tmp, final)
        publish_checkpoint(
            final,
            CHECKPOINT_DIR,
            {
                "checkpoint.step": float(step),
                "checkpoint.iteration": float(model.training_iteration),
            },
            step,
        )


def iteration_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The MLflow metrics of one ``algo.train()`` result (names as the SB3 backend uses)."""
    from ray.rllib.core import DEFAULT_MODULE_ID

    from taktline.training.rllib_runner import ENV_SECONDS

    runners = result.get("env_runners", {})
    learner = result.get("learners", {}).get(DEFAULT_MODULE_ID, {})
    faults = result.get("fault_tolerance", {})
    out: dict[str, float] = {"train.iteration": float(result["training_iteration"])}
    for src, dst in (
        ("episode_return_mean", "train.episode_return"),
        ("episode_len_mean", "train.episode_len"),
    ):
        if src in runners:
            out[dst] = float(runners[src])
    for key, value in (runners.get("kpi") or {}).items():
        out[f"train.kpi.{key}"] = float(value)
    for key in (
        "policy_loss",
        "vf_loss",
        "entropy",
        "mean_kl_loss",
        "vf_explained_var",
        "total_loss",
    ):
        if key in learner:
            out[f"train.{key}"] = float(learner[key])
    healthy = float(faults.get("num_healthy_workers", 0))
    if result.get("time_this_iter_s"):
        wall = float(result["time_this_iter_s"])
        out["time.fps"] = float(runners.get("num_env_steps_sampled", 0)) / wall
        if ENV_SECONDS in runners:
            # seconds inside the envs, over the runners' wall time of the iteration (sampling
            # and learning alternate, so this is at most the sampling share)
            out["time.env_share"] = float(runners[ENV_SECONDS]) / (wall * max(healthy, 1.0))
    out["ray.healthy_env_runners"] = healthy
    out["ray.env_runner_restarts"] = float(faults.get("num_remote_worker_restarts", 0))
    return out


def train(
    cfg: TrainConfig,
    resume: str | None = None,
    console: Console | None = None,
    address: str | None = None,
    on_iteration: OnIteration | None = None,
    tags: dict[str, str] | None = None,
) -> TrainResult:
    """Train (or resume) a policy with RLlib PPO as ``cfg`` says; see the module docstring.

    Args:
        cfg: The training config.
        resume: An MLflow run id to continue from its last checkpoint.
        console: Where to print (stderr by default).
        address: A Ray cluster to attach to (default: ``RAY_ADDRESS``, else a local Ray).
        on_iteration: Called with each iteration's metrics (Tune uses it to report).
        tags: Extra MLflow tags of a new run (a Tune trial's parent run).
    """
    import mlflow
    import torch

    from taktline.training.rllib_module import import_actor, make_env, register_env

    console = console or Console(stderr=True)
    check_env(cfg)  # here, once: not in each env runner with a traceback apiece
    if cfg.normalize_reward:
        console.print(
            "normalize_reward: the rllib backend trains on raw rewards (no reward normaliser); "
            "the setting applies to backend sb3 only"
        )
    torch.set_num_threads(cfg.torch_threads)
    uri = tracking.configure()
    console.print(tracking.describe_store(uri))
    exp_id = tracking.ensure_experiment(cfg.tracking.experiment)
    state, ck_dir = RunState(), None
    if resume:
        # verified against the state's digests before RLlib unpickles any of it
        ck_dir, state = fetch_checkpoint(resume, Path(cfg.output_dir) / resume)
    connect(address, console)
    register_env()
    with mlflow.start_run(
        run_id=resume,
        experiment_id=None if resume else exp_id,
        run_name=None if resume else cfg.name,
    ) as mlrun:
        run_id = mlrun.info.run_id
        how = f"resumed at step {state.num_timesteps}" if resume else "new"
        console.print(f"run {run_id} ({how}); checkpoints in {Path(cfg.output_dir) / run_id}")
        run = _RllibRun(cfg, run_id, state, console)
        probe = make_env({"env_id": cfg.env.id, "env_kwargs": dict(cfg.env.kwargs)})
        obs_space = probe.observation_space["observations"]
        act_space = probe.action_space
        run.spec_hash = getattr(
            getattr(probe.unwrapped, "spec_line", None), "spec_hash", lambda: None
        )()
        probe.close()
        assert isinstance(act_space, gym.spaces.Discrete)
        run.spaces = (obs_space, act_space)
        run.network_spec = network_spec(cfg, obs_space, int(act_space.n))
        config = ppo_config(cfg, run.network_spec, cluster_cpus())
        if not resume:
            tracking.log_config(cfg)
            mlflow.log_params(
                {
                    "rllib.num_env_runners": config.num_env_runners,
                    "rllib.num_envs_per_env_runner": config.num_envs_per_env_runner,
                    "rllib.train_batch_size_per_learner": config.train_batch_size_per_learner,
                }
            )
            mlflow.set_tags(
                {"taktline.backend": "rllib", "taktline.env_id": cfg.env.id, **(tags or {})}
            )
        algo = config.build_algo()
        try:
            if ck_dir is not None:
                algo.restore_from_path(str((ck_dir / RLLIB_DIR).resolve()))
                console.print(
                    f"restored iteration {algo.training_iteration}, step {state.num_timesteps}"
                )
            elif cfg.policy.init is not None:
                import_actor(algo, cfg.policy.init, run.network_spec)
                console.print(f"actor starts from {cfg.policy.init}")
            steps = _learn(cfg, run, algo, on_iteration)
        finally:
            algo.stop()
            run.progress.close()
        return finish(cfg, run, steps)


def _learn(cfg: TrainConfig, run: _RllibRun, algo: Any, on_iteration: OnIteration | None) -> int:
    """Iterate ``algo.train()`` to the budget, with the run's evaluation and checkpoints."""
    log_baselines(run)
    if run.state.num_timesteps == 0:
        run.evaluate(algo, 0)
    steps = run.state.num_timesteps
    latest = run.state.history[-1]["mean"] if run.state.history else float("nan")
    while steps < cfg.budget.total_timesteps and not run.out_of_time():
        result = algo.train()
        steps = int(
            result.get("num_env_steps_sampled_lifetime")
            or result["env_runners"]["num_env_steps_sampled_lifetime"]
        )
        metrics = iteration_metrics(result)
        if "train.episode_return" in metrics:
            run.state.train_curve.append((steps, metrics["train.episode_return"]))
        run.progress.update(steps)
        if steps >= run.next_eval:
            latest = run.evaluate(algo, steps)
            every = cfg.eval.every_steps
            run.next_eval = (steps // every + 1) * every
        tracking.log_metrics(metrics, steps)
        if steps >= run.next_checkpoint:
            run.checkpoint(algo, steps)
            every = cfg.checkpoint.every_steps
            run.next_checkpoint = (steps // every + 1) * every
        if on_iteration is not None:
            best = run.state.best_mean if run.state.best_mean is not None else latest
            on_iteration(
                {**metrics, "steps": float(steps), f"eval.{run.metric}": latest, "eval.best": best}
            )
    if not run.state.history or run.state.history[-1]["step"] != steps:
        run.evaluate(algo, steps)
    run.checkpoint(algo, steps)
    return steps
