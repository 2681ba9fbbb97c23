"""Training commands: ``train``, ``evaluate``, ``promote``.

``taktline train CONFIG [--set key=value ...] [--resume RUN_ID] [--backend sb3|rllib]
[--address RAY]``
``taktline evaluate --policy REF [--policy REF ...] --env ID [--env-kwargs JSON] --episodes N``
``taktline promote NAME VERSION --alias production``
"""

from __future__ import annotations

import importlib
import json
from typing import Annotated, Any

import typer
from rich.console import Console

from taktline.errors import PolicyError, SpecError

console = Console()

# Training backends: name -> "module:function". Each function is
# ``train(config: TrainConfig, resume: str | None = None, console: Console | None = None)``
# and returns a result with the fields of ``taktline.training.run.TrainResult``.
BACKENDS: dict[str, str] = {
    "sb3": "taktline.training.sb3_backend:train",
    "rllib": "taktline.training.rllib_backend:train",
}

JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]


def _backend(name: str) -> Any:
    target = BACKENDS.get(name)
    if target is None:
        raise SpecError(f"--backend: unknown {name!r}; choose one of {', '.join(BACKENDS)}")
    module, _, func = target.partition(":")
    try:
        return getattr(importlib.import_module(module), func)
    except ModuleNotFoundError as exc:
        raise SpecError(
            f"--backend {name}: not available ({exc.name} is not installed or not written yet)"
        ) from exc


def _config_of_run(run_id: str, overrides: list[str]) -> Any:
    """The config a run was started with (its ``config.json`` artifact), with overrides."""
    import mlflow

    from taktline.training import tracking
    from taktline.training.config import apply_overrides, validate_config

    tracking.configure()
    try:
        data = mlflow.artifacts.load_dict(f"runs:/{run_id}/config.json")
    except Exception as exc:
        raise SpecError(
            f"--resume {run_id}: cannot read the run's config.json from "
            f"{mlflow.get_tracking_uri()} ({type(exc).__name__}); check the run id and "
            "MLFLOW_TRACKING_URI, or pass the CONFIG file"
        ) from exc
    return validate_config(apply_overrides(data, overrides), f"run {run_id} config")


def train(
    config: Annotated[
        str | None,
        typer.Argument(help="YAML config file or a bundled example name (optional with --resume)"),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="override a field: key.path=value (repeatable)"),
    ] = None,
    resume: Annotated[
        str | None, typer.Option("--resume", help="continue this MLflow run from its checkpoint")
    ] = None,
    backend: Annotated[
        str | None, typer.Option("--backend", help="sb3 (local) or rllib (Ray); default: config")
    ] = None,
    address: Annotated[
        str | None,
        typer.Option("--address", help="Ray cluster for --backend rllib (default: RAY_ADDRESS)"),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Train a policy as a config says; tracked in MLflow, best policy registered."""
    from taktline.jsonout import echo_json
    from taktline.training.config import load_config
    from taktline.training.run import verdict_line

    overrides = list(set_ or [])
    if config is None and resume is None:
        raise SpecError("train: give a CONFIG file (or --resume RUN_ID)")
    cfg = load_config(config, overrides) if config else _config_of_run(str(resume), overrides)
    train_fn = _backend(backend or cfg.backend)
    if backend is not None:
        cfg = cfg.model_copy(update={"backend": backend})
    extra: dict[str, Any] = {}
    if address is not None:
        if cfg.backend != "rllib":
            raise SpecError(
                f"--address: a Ray cluster is only used by the rllib backend, this run uses "
                f"{cfg.backend!r}; add --backend rllib or drop --address"
            )
        extra["address"] = address
    result = train_fn(cfg, resume=resume, console=Console(stderr=True), **extra)
    summary = {
        "run_id": result.run_id,
        "num_timesteps": result.num_timesteps,
        "best_bundle": str(result.best_bundle) if result.best_bundle else None,
        "best_" + result.metric: result.best_mean,
        "model_uri": result.model_uri,
        "registered": f"{cfg.name}/{result.model_version}" if result.model_version else None,
    }
    if json_out:
        echo_json({**summary, "verdict": result.verdict, "evaluation": result.evaluation})
    else:
        for k, v in summary.items():
            console.print(f"{k}: {v}", highlight=False)
        if result.verdict is not None:
            console.print(
                f"verdict: {verdict_line(result.verdict)}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )


def evaluate(
    policy: Annotated[
        list[str],
        typer.Option(
            "--policy",
            help="bundle path, models:/NAME@ALIAS, runs:/..., rule (SPT), "
            "cpsat; suffix #sample or #best-of=N (repeatable)",
        ),
    ],
    env: Annotated[str, typer.Option("--env", help="env id, e.g. taktline/LineDispatch-v0")],
    env_kwargs: Annotated[
        str, typer.Option("--env-kwargs", help='JSON, e.g. \'{"line": "bodyshop"}\'')
    ] = "{}",
    episodes: Annotated[int, typer.Option("--episodes", help="paired episodes (seeds)")] = 10,
    seed: Annotated[int, typer.Option("--seed", help="episode i uses seed + i")] = 0,
    instances: Annotated[
        str | None,
        typer.Option("--instances", help="job shops: comma-separated instances, one case each"),
    ] = None,
    metric: Annotated[
        str | None, typer.Option("--metric", help="KPI to compare (default per env)")
    ] = None,
    reference: Annotated[
        str | None, typer.Option("--reference", help="policy name to pair against (default: first)")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Compare policies on common random numbers: mean, 95% CI, paired tests, gaps."""
    from taktline.agents.policies import load_policy
    from taktline.training.evaluate import Case, evaluate_cases, render_table

    try:
        kwargs = json.loads(env_kwargs)
    except json.JSONDecodeError as exc:
        raise SpecError(
            f'--env-kwargs: not valid JSON ({exc}); e.g. \'{{"line": "bodyshop"}}\''
        ) from exc
    if not isinstance(kwargs, dict):
        raise SpecError(f"--env-kwargs: expected a JSON object, got {env_kwargs!r}")
    if episodes < 1:
        raise SpecError(f"--episodes: must be >= 1, got {episodes}")
    if seed < 0:
        raise SpecError(f"--seed: must be >= 0, got {seed}; e.g. --seed 0")
    policies = []
    for ref in policy:
        try:
            policies.append(load_policy(ref))
        except PolicyError as exc:
            raise PolicyError(f"--policy {ref}: {exc}") from None
    if instances:
        names = [n.strip() for n in instances.split(",") if n.strip()]
        cases = [Case(n, {**kwargs, "instance": n}, seed) for n in names]
    else:
        cases = [Case(f"seed {seed + i}", kwargs, seed + i) for i in range(episodes)]
    ev = evaluate_cases(policies, env, cases, metric)
    if reference is not None and reference not in ev.policies:
        raise PolicyError(f"--reference: {reference!r} is not one of {ev.policies}")
    if json_out:
        typer.echo(json.dumps(ev.as_dict(reference), indent=2))
    else:
        console.print(render_table(ev, reference))


def promote(
    name: Annotated[str, typer.Argument(help="registered model name")],
    version: Annotated[str, typer.Argument(help="model version")],
    alias: Annotated[str, typer.Option("--alias", help="alias to point at it, e.g. production")],
) -> None:
    """Point a registry alias (e.g. production) at a model version."""
    from taktline.training import tracking

    uri = tracking.configure()
    tracking.promote(name, version, alias)
    console.print(f"{name}@{alias} -> version {version} ({uri})", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the training commands to the ``taktline`` app."""
    app.command("train")(train)
    app.command("evaluate")(evaluate)
    app.command("promote")(promote)


def main() -> None:
    """``python -m taktline.cli_train``: these commands alone (for tests and scripts)."""
    import sys

    from taktline.errors import TaktlineError

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    register(app)
    try:
        app()
    except TaktlineError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
