"""Hyperparameter and env-kwarg sweeps with Ray Tune, over either training backend.

A sweep is YAML (``taktline tune SWEEP.yaml``)::

    name: bodyshop-sweep
    base: bodyshop_dispatch.yaml          # a training config (path or bundled name)
    set: {budget.total_timesteps: 4000}   # overrides of the base (dotted keys)
    search_space:                         # dotted config keys -> a Tune domain
      hyperparameters.learning_rate: {loguniform: [1.0e-4, 1.0e-3]}
      env.kwargs.max_queue: {choice: [6, 8]}
    num_samples: 4
    scheduler: {grace_period_steps: 1000, reduction_factor: 2}

Every trial trains one config with the base's backend and reports its evaluation score
(``eval.<metric>``, the best so far) per iteration; ASHA stops poor trials early, and at most
as many trials run at once as the cluster has CPUs for. Tracking: one MLflow parent run for the
sweep with one child run per trial (``mlflow.parentRunId``); the best trial's policy is
registered under the sweep's ``name`` with its held-out verdict as tags, and gets the
``candidate`` alias only when that verdict is a win over the best rule.
"""

from __future__ import annotations

import json
import math
import os
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from rich.console import Console

from taktline.envs.files import load_yaml
from taktline.errors import SpecError
from taktline.training import tracking
from taktline.training.config import TrainConfig, _read, apply_overrides, validate_config

DOMAINS = ("choice", "uniform", "loguniform", "randint", "grid")


class SchedulerConfig(BaseModel):
    """ASHA early stopping, in environment steps."""

    model_config = ConfigDict(extra="forbid")
    grace_period_steps: int | None = Field(None, ge=1)
    """Steps before a trial can be stopped (default: a quarter of the budget)."""
    reduction_factor: int = Field(2, ge=2)


class SweepConfig(BaseModel):
    """A Tune sweep over a base training config."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    """Sweep name: the parent run's name and the registered model of the best trial."""
    base: str
    """The training config to vary (a YAML path, relative to the sweep file, or a bundled
    name)."""
    set: dict[str, Any] = Field(default_factory=dict)
    """Overrides of the base: dotted key -> value (as ``taktline train --set key=value``)."""
    search_space: dict[str, dict[str, list[Any]]] = Field(default_factory=dict)
    """Dotted config key -> ``{domain: args}`` with domain one of choice, uniform,
    loguniform, randint, grid."""
    num_samples: int = Field(4, ge=1)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    mode: Literal["max", "min"] | None = None
    """Better direction of the score (default: the env's metric's)."""
    register_model: bool = True
    alias: str = "candidate"

    @field_validator("search_space")
    @classmethod
    def _domains(cls, v: dict[str, dict[str, list[Any]]]) -> dict[str, dict[str, list[Any]]]:
        for key, spec in v.items():
            if len(spec) != 1 or next(iter(spec)) not in DOMAINS:
                raise ValueError(
                    f"{key}: expected one of {{{', '.join(f'{d}: [...]' for d in DOMAINS)}}}, "
                    f"got {spec!r}"
                )
        return v


def load_sweep(
    path: str | Path, overrides: list[str] | None = None
) -> tuple[SweepConfig, dict[str, Any]]:
    """The sweep at ``path`` and its base config as plain data (overrides applied).

    Raises:
        SpecError: for a missing file or invalid fields (of the sweep or the base).
    """
    data, source = _read_sweep(path)
    try:
        sweep = SweepConfig.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        ]
        raise SpecError(problems, source=source) from None
    base_path = Path(sweep.base)
    if not base_path.is_absolute() and Path(path).is_file():
        near = Path(path).parent / base_path
        base_path = near if near.is_file() else base_path
    base_data, _ = _read(base_path if base_path.is_file() else sweep.base)
    fixed = [f"{k}={json.dumps(v)}" for k, v in sweep.set.items()]
    base = apply_overrides(base_data, [*fixed, *(overrides or [])])
    validate_config(base, f"{sweep.base} (base of {source})")  # fail before Ray starts
    return sweep, base


def _read_sweep(path: str | Path) -> tuple[dict[str, Any], str]:
    """A sweep file's data: a path, or the name of a bundled example (``sweep_*.yaml``)."""
    if Path(path).exists():
        return _read(path)
    name = str(path) if str(path).endswith(".yaml") else f"{path}.yaml"
    bundled = resources.files("taktline.training.configs").joinpath(name)
    if not name.startswith("sweep_") or not bundled.is_file():
        raise SpecError(
            f"sweep {str(path)!r}: no such file; give a YAML path or a bundled sweep "
            "(sweep_bodyshop.yaml)"
        )
    data = load_yaml(bundled.read_text(), name) or {}
    if not isinstance(data, dict):
        raise SpecError(f"expected a mapping at the top, got {type(data).__name__}", source=name)
    return data, name


def param_space(sweep: SweepConfig) -> dict[str, Any]:
    """The Tune search space (flat, keyed by dotted config keys)."""
    from ray import tune

    make: dict[str, Any] = {
        "choice": tune.choice,
        "uniform": tune.uniform,
        "loguniform": tune.loguniform,
        "randint": tune.randint,
        "grid": tune.grid_search,
    }
    out: dict[str, Any] = {}
    for key, spec in sweep.search_space.items():
        domain, args = next(iter(spec.items()))
        out[key] = make[domain](args) if domain in ("choice", "grid") else make[domain](*args)
    return out


def trial_config(base: dict[str, Any], params: dict[str, Any], name: str) -> TrainConfig:
    """The training config of one trial: the base with the sampled values set."""
    data = apply_overrides(base, [f"{k}={json.dumps(v)}" for k, v in params.items()])
    data.update(name=name, progress=False)
    data.setdefault("tracking", {})["register_model"] = False
    return validate_config(data, f"trial {name}")


def _cpus_per_trial(cfg: TrainConfig) -> int:
    if cfg.backend == "rllib":
        return 1 + int(cfg.hyperparameters.get("num_env_runners", cfg.n_envs))
    return cfg.n_envs if cfg.vec_env == "subproc" and cfg.n_envs > 1 else 1


# ---- one trial (runs in a Tune worker) ---------------------------------------------------------
def run_trial(
    params: dict[str, Any],
    *,
    base: dict[str, Any],
    parent_run_id: str,
    tracking_uri: str,
    sweep_name: str,
) -> None:
    """Train one trial's config, reporting ``score`` (best evaluation so far) and ``steps``."""
    from ray import tune

    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri  # Tune runs trials in their own folder
    ctx = tune.get_context()
    cfg = trial_config(base, params, f"{sweep_name}-{ctx.get_trial_id()}")
    tags = {
        "mlflow.parentRunId": parent_run_id,
        "taktline.trial_id": ctx.get_trial_id(),
        "taktline.sweep": sweep_name,
    }
    console = Console(stderr=True, quiet=True)
    if cfg.backend == "rllib":
        from taktline.training import rllib_backend

        def report(m: dict[str, float]) -> None:
            # the last iteration is reported below, with the exported model: a scheduler
            # decision on it must not stop the trial before its export
            if m["steps"] < cfg.budget.total_timesteps:
                tune.report({"score": m["eval.best"], "steps": m["steps"]})

        result = rllib_backend.train(cfg, console=console, on_iteration=report, tags=tags)
    else:
        result = _sb3_in_chunks(cfg, tags, console)
    tune.report(
        {
            "score": result.best_mean,
            "steps": float(result.num_timesteps),
            "run_id": result.run_id,
            "model_uri": result.model_uri or "",
            "verdict": json.dumps(result.verdict),  # held-out, vs the best rule (or null)
        }
    )


def _sb3_in_chunks(cfg: TrainConfig, tags: dict[str, str], console: Console) -> Any:
    """SB3 has no per-iteration hook: train to each evaluation step, resuming the same run."""
    import mlflow
    from ray import tune

    from taktline.training import sb3_backend

    total, every = cfg.budget.total_timesteps, cfg.eval.every_steps
    result, done = None, 0
    while done < total:
        done = min(total, done + every)
        chunk = cfg.model_copy(
            update={"budget": cfg.budget.model_copy(update={"total_timesteps": done})}
        )
        result = sb3_backend.train(chunk, resume=result.run_id if result else None, console=console)
        if result is not None and done == min(total, every):  # the run exists now
            client = mlflow.MlflowClient()
            for key, value in tags.items():
                client.set_tag(result.run_id, key, value)
        if done < total:
            tune.report({"score": result.best_mean, "steps": float(result.num_timesteps)})
    return result


# ---- the sweep (runs in the driver) ------------------------------------------------------------
def sweep(
    sweep_cfg: SweepConfig,
    base: dict[str, Any],
    address: str | None = None,
    console: Console | None = None,
    verbose: int = 1,
) -> dict[str, Any]:
    """Run the sweep; returns the best trial (params, score, run id, registered version).

    Args:
        sweep_cfg: The sweep.
        base: Its base training config as plain data.
        address: A Ray cluster (default: ``RAY_ADDRESS``, else a local Ray).
        console: Where to print.
        verbose: Tune's progress output (0 silent, 1 the trial table).
    """
    import mlflow
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from taktline.training.evaluate import DEFAULT_METRIC
    from taktline.training.rllib_backend import cluster_cpus, connect

    console = console or Console(stderr=True)
    probe = trial_config(base, {}, sweep_cfg.name)
    metric, higher = DEFAULT_METRIC.get(probe.env.id, ("return", True))
    mode = sweep_cfg.mode or ("max" if higher else "min")
    output = Path(probe.output_dir).resolve()
    base = {**base, "output_dir": str(output)}
    uri = _absolute(tracking.configure())
    console.print(tracking.describe_store(uri))
    connect(address, console)
    per_trial = _cpus_per_trial(probe)
    concurrent = max(1, cluster_cpus() // per_trial)
    total = probe.budget.total_timesteps
    grace = sweep_cfg.scheduler.grace_period_steps or max(1, total // 4)
    exp_id = tracking.ensure_experiment(probe.tracking.experiment)
    with mlflow.start_run(experiment_id=exp_id, run_name=sweep_cfg.name) as parent:
        mlflow.set_tags({"taktline.sweep": sweep_cfg.name, "taktline.backend": probe.backend})
        mlflow.log_params(
            {
                "sweep.num_samples": sweep_cfg.num_samples,
                "sweep.metric": metric,
                "sweep.mode": mode,
                "sweep.max_concurrent_trials": concurrent,
                "sweep.cpus_per_trial": per_trial,
            }
        )
        mlflow.log_dict({"sweep": sweep_cfg.model_dump(mode="json"), "base": base}, "sweep.json")
        trainable = tune.with_resources(
            tune.with_parameters(
                run_trial,
                base=base,
                parent_run_id=parent.info.run_id,
                tracking_uri=uri,
                sweep_name=sweep_cfg.name,
            ),
            tune.PlacementGroupFactory([{"CPU": 1}] * per_trial),
        )
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(sweep_cfg),
            tune_config=tune.TuneConfig(
                metric="score",
                mode=mode,
                num_samples=sweep_cfg.num_samples,
                max_concurrent_trials=concurrent,
                scheduler=ASHAScheduler(
                    time_attr="steps",
                    max_t=total,
                    grace_period=grace,
                    reduction_factor=sweep_cfg.scheduler.reduction_factor,
                ),
            ),
            run_config=tune.RunConfig(
                name=sweep_cfg.name, storage_path=str(output / "tune"), verbose=verbose
            ),
        )
        grid = tuner.fit()
        rows = _trial_rows(grid)
        _close_stopped_runs(rows, parent.info.run_id)
        mlflow.log_dict({"trials": rows}, "trials.json")
        finished = [r for r in rows if r.get("model_uri")]
        if not finished:
            raise SpecError(f"sweep {sweep_cfg.name}: no trial finished; see {output / 'tune'}")
        sign = 1.0 if mode == "max" else -1.0
        best = max(finished, key=lambda r: sign * float(r["score"]))
        tracking.log_metrics({f"best.{metric}": float(best["score"])}, 0)
        mlflow.log_params({f"best.{k}": v for k, v in best["params"].items()})
        mlflow.set_tag("taktline.best_run_id", best["run_id"])
        if sweep_cfg.register_model:
            from taktline.training.run import verdict_line, verdict_tags

            verdict = best.get("verdict")
            won = bool(verdict and verdict["won"])
            best["model_version"] = tracking.register(
                best["model_uri"],
                sweep_cfg.name,
                sweep_cfg.alias if won else None,  # the alias only for a held-out win
                tags={
                    "run_id": best["run_id"],
                    "sweep_run_id": parent.info.run_id,
                    **verdict_tags(verdict),
                },
            )
            where = f"as @{sweep_cfg.alias}" if won else "without an alias"
            console.print(
                f"registered {sweep_cfg.name} version {best['model_version']} {where} "
                f"(trial {best['trial_id']}, {metric} {float(best['score']):.4g}): "
                + (verdict_line(verdict) if verdict else "no eval.baselines to beat"),
                markup=False,
                highlight=False,
            )
    return {**best, "parent_run_id": parent.info.run_id, "metric": metric, "trials": rows}


def _trial_rows(grid: Any) -> list[dict[str, Any]]:
    """One row per trial: its id, sampled params, last score and steps, run and model."""
    rows = []
    for res in grid:
        m = res.metrics or {}
        score = m.get("score")
        rows.append(
            {
                "trial_id": m.get("trial_id"),
                "params": {k: v for k, v in (res.config or {}).items()},
                "score": None if score is None or not math.isfinite(float(score)) else float(score),
                "steps": m.get("steps"),
                "run_id": m.get("run_id"),
                "model_uri": m.get("model_uri") or None,
                "verdict": json.loads(m["verdict"]) if m.get("verdict") else None,
                "error": repr(res.error) if res.error else None,
            }
        )
    return rows


def _close_stopped_runs(rows: list[dict[str, Any]], parent_run_id: str) -> None:
    """Mark the child runs of trials the scheduler stopped as KILLED (and name their runs)."""
    import mlflow

    client = mlflow.MlflowClient()
    children = client.search_runs(
        [mlflow.get_run(parent_run_id).info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
    )
    by_trial = {r.data.tags.get("taktline.trial_id"): r for r in children}
    for row in rows:
        run = by_trial.get(row["trial_id"])
        if run is None:
            continue
        row["run_id"] = run.info.run_id
        if run.info.status == "RUNNING":
            client.set_terminated(run.info.run_id, "KILLED")
            row["stopped_early"] = True


def _absolute(uri: str) -> str:
    """A relative SQLite URI made absolute (Tune runs every trial in a folder of its own)."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str(Path(uri.removeprefix(prefix)).resolve())
    return uri
