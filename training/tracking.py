"""MLflow tracking and registry: where runs, metrics, pictures and policy models go.

With no configuration the store is **embedded**: runs and the model registry in a SQLite file
``./mlflow.db`` and artifacts in ``./mlartifacts`` (both in the working directory, printed when
a run starts). ``MLFLOW_TRACKING_URI`` points everything at an existing MLflow server instead
(``http://host:5000``), unchanged.

A policy is logged as an MLflow **pyfunc model** that carries the policy bundle among its
artifacts (``artifacts/bundle/bundle.json``): ``mlflow.pyfunc.load_model(uri).predict({"obs":
..., "mask": ...})`` returns actions, and serving downloads the same model and loads the bundle
without SB3. The best policy of a run is registered under the config's name with an alias
(``candidate``); :func:`promote` moves aliases (``production``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np

from taktline.agents.bundle import PolicyBundle
from taktline.errors import PolicyError

DB_FILE = "mlflow.db"
ARTIFACT_DIR = "mlartifacts"
MODEL_NAME_IN_RUN = "policy"


def tracking_uri(cwd: str | Path | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the embedded SQLite store in ``cwd``."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    base = Path(cwd or Path.cwd()).resolve()
    return f"sqlite:///{base / DB_FILE}"


def is_embedded(uri: str) -> bool:
    """Whether ``uri`` is a local file store rather than a server."""
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def configure(cwd: str | Path | None = None) -> str:
    """Point MLflow at the store (tracking and registry); returns the tracking URI."""
    uri = tracking_uri(cwd)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def describe_store(uri: str, cwd: str | Path | None = None) -> str:
    """One line telling a person where runs and artifacts go."""
    if is_embedded(uri):
        base = Path(cwd or Path.cwd()).resolve()
        return f"MLflow (embedded): runs {uri}, artifacts {base / ARTIFACT_DIR}"
    return f"MLflow server: {uri}"


def ensure_experiment(name: str, cwd: str | Path | None = None) -> str:
    """The id of experiment ``name``, created with artifacts in ``./mlartifacts`` when embedded."""
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    location = None
    if is_embedded(mlflow.get_tracking_uri()):
        location = (Path(cwd or Path.cwd()).resolve() / ARTIFACT_DIR / name).as_uri()
    return str(mlflow.create_experiment(name, artifact_location=location))


def log_config(config: Any) -> None:
    """The full config: every field as a param (dotted keys) and the whole as ``config.json``."""
    flat = {k: ("" if v is None else str(v))[:6000] for k, v in config.flat().items()}
    keys = sorted(flat)
    for i in range(0, len(keys), 100):  # MLflow takes at most 100 params per call
        mlflow.log_params({k: flat[k] for k in keys[i : i + 100]})
    mlflow.log_dict(config.model_dump(mode="json"), "config.json")


def log_metrics(metrics: dict[str, float], step: int) -> None:
    """Finite metrics at ``step`` (NaN and inf are dropped: MLflow servers reject them)."""
    clean = {k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)}
    if clean:
        mlflow.log_metrics(clean, step=step)


# ---- pictures --------------------------------------------------------------------------------
def learning_curve_figure(
    history: Sequence[dict[str, float]],
    metric: str,
    baselines: dict[str, float],
    train: Sequence[tuple[int, float]] = (),
    steps: str = "environment steps",
    train_metric: str = "training episode return",
) -> Any:
    """The evaluation metric over ``steps`` (with the baselines as lines) and the training
    signal (``train_metric``) beside it."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.0, 3.2), dpi=90)
    ax = fig.add_subplot(1, 2, 1)
    if history:
        ax.plot([h["step"] for h in history], [h["mean"] for h in history], "o-", label="policy")
    for i, (name, value) in enumerate(sorted(baselines.items())):
        ax.axhline(value, ls="--", lw=0.8, color=f"C{(i + 1) % 10}", label=name)
    ax.set_xlabel(steps)
    ax.set_ylabel(f"eval {metric} (mean)")
    ax.legend(fontsize=7)
    ax2 = fig.add_subplot(1, 2, 2)
    if train:
        ax2.plot([s for s, _ in train], [r for _, r in train], lw=0.8)
    ax2.set_xlabel(steps)
    ax2.set_ylabel(train_metric)
    fig.tight_layout()
    return fig


def log_figure_png(fig: Any, artifact_file: str) -> None:
    """Save a matplotlib figure as a PNG artifact."""
    mlflow.log_figure(fig, artifact_file)


def log_picture(env_id: str, env_kwargs: dict[str, Any], policy: Any, seed: int) -> str | None:
    """Play one episode with ``policy`` and log the env's picture at its end (a Gantt chart
    for job shops, the line with buffers and machine states for lines); returns the file."""
    import gymnasium as gym

    import taktline.envs  # noqa: F401

    env = gym.make(env_id, render_mode="rgb_array", disable_env_checker=True, **env_kwargs)
    try:
        obs, _ = env.reset(seed=seed)
        policy.begin_episode(env)
        done = False
        base: Any = env.unwrapped
        while not done:
            obs, _, term, trunc, _ = env.step(policy.choose(env, obs, base.action_masks()))
            done = term or trunc
        image: Any = env.render()
    finally:
        env.close()
    if image is None:
        return None
    name = "gantt.png" if env_id.endswith("JobShop-v0") else "line.png"
    mlflow.log_image(np.asarray(image), artifact_file=name)
    return name


# ---- the policy as an MLflow model -----------------------------------------------------------
def _signature(bundle: PolicyBundle, n_obs: int) -> Any:
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec, Schema, TensorSpec

    width = -1 if bundle.size_agnostic else n_obs
    n = -1 if bundle.size_agnostic else int(bundle.action_space.n)
    return ModelSignature(
        inputs=Schema(
            [
                TensorSpec(np.dtype(np.float32), (-1, width), "obs"),
                TensorSpec(np.dtype(np.bool_), (-1, n), "mask"),
            ]
        ),
        outputs=Schema([TensorSpec(np.dtype(np.int64), (-1,), "action")]),
        params=ParamSchema([ParamSpec("deterministic", "boolean", True)]),
    )


def log_policy_model(
    bundle_dir: str | Path, example_obs: np.ndarray, example_mask: np.ndarray
) -> str:
    """Log the bundle at ``bundle_dir`` as this run's pyfunc model; returns its model URI."""
    bundle = PolicyBundle.load(bundle_dir)
    obs = np.asarray(example_obs, dtype=np.float32).reshape(1, -1)
    mask = np.asarray(example_mask, dtype=bool).reshape(1, -1)
    info = mlflow.pyfunc.log_model(
        name=MODEL_NAME_IN_RUN,
        python_model=str(Path(__file__).with_name("pyfunc_model.py")),
        artifacts={"bundle": str(bundle_dir)},
        signature=_signature(bundle, obs.shape[1]),
        input_example={"obs": obs, "mask": mask},
        pip_requirements=["taktline", "torch", "numpy", "gymnasium"],
    )
    return str(info.model_uri)


def register(
    model_uri: str, name: str, alias: str | None, tags: dict[str, str] | None = None
) -> str:
    """Register ``model_uri`` as a new version of ``name`` and point ``alias`` at it."""
    version = mlflow.register_model(model_uri, name, tags=tags)
    if alias:
        promote(name, str(version.version), alias)
    return str(version.version)


def promote(name: str, version: str | int, alias: str) -> None:
    """Point ``alias`` of registered model ``name`` at ``version`` (moving it if set).

    Raises:
        PolicyError: when the model or version does not exist.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    try:
        client.get_model_version(name, str(version))
    except MlflowException as exc:
        versions = []
        with contextlib.suppress(MlflowException):
            versions = sorted(
                int(v.version) for v in client.search_model_versions(f"name='{name}'")
            )
        hint = f"; versions: {versions}" if versions else "; no such registered model"
        raise PolicyError(f"promote: {name} version {version} not found{hint}") from exc
    client.set_registered_model_alias(name, alias, str(version))
