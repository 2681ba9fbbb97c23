"""The training config: one typed, validated description of a training run.

A config is YAML (see ``taktline/training/configs/*.yaml``); ``--set key=value`` overrides any
field by its dotted path, the value parsed as YAML (``--set budget.total_timesteps=2e5``,
``--set env.kwargs.max_queue=12``, ``--set policy.kwargs.hidden=[128,128]``). Every error names
the field, the value and the fix.

>>> cfg = load_config("jobshop_10x10_attention.yaml", ["budget.total_timesteps=1000"])
>>> cfg.algorithm, cfg.budget.total_timesteps, cfg.policy.network
('maskable_ppo', 1000, 'attention')
"""

from __future__ import annotations

import copy
import difflib
import inspect
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from taktline.errors import SpecError

ALGORITHMS = ("maskable_ppo", "ppo", "dqn")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EnvConfig(_Strict):
    """The environment to train on."""

    id: str = "taktline/JobShop-v0"
    """A registered env id (``taktline/JobShop-v0``, ``taktline/LineDispatch-v0``, ...)."""
    kwargs: dict[str, Any] = Field(default_factory=dict)
    """Its keyword arguments (JSON data)."""


class PolicyConfig(_Strict):
    """The network of the policy."""

    network: Literal["mlp", "attention"] = "mlp"
    """``mlp`` for fixed-size observations, ``attention`` for size-agnostic job shops."""
    kwargs: dict[str, Any] = Field(default_factory=dict)
    """Network kwargs: ``hidden``/``activation`` (mlp); ``d_model``/``n_heads``/``n_layers``
    (attention)."""
    init: str | None = None
    """Start the actor from this policy bundle's network (a DAgger imitation, an earlier run):
    PPO fine-tuning after imitation, on the sb3 or the rllib backend. Same layout
    (``network``, ``kwargs``) and env spaces; the critic starts fresh. ``None``: random initial
    weights."""


class BudgetConfig(_Strict):
    """How long to train (whichever limit comes first)."""

    total_timesteps: int = Field(100_000, ge=1)
    """Environment steps over all parallel envs."""
    max_minutes: float | None = Field(None, gt=0)
    """Wall-clock limit (``None``: none); the run stops cleanly and registers its best."""


class EvalConfig(_Strict):
    """Periodic evaluation (greedy policy, common random numbers)."""

    every_steps: int = Field(10_000, ge=1)
    episodes: int = Field(5, ge=1)
    seed: int = 10_000
    """Episode ``i`` uses seed ``seed + i`` for every policy (common random numbers)."""
    env_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Overrides of ``env.kwargs`` for evaluation episodes."""
    baselines: list[str] = Field(default_factory=list)
    """Rules the final policy must beat (``SPT``, ``MWKR``...); without any, nothing is
    promoted."""
    held_out_episodes: int | None = Field(None, ge=2)
    """Episodes of the final verdict against the best rule (default: ``episodes``, at least 2)."""
    held_out_seed: int | None = None
    """First seed of the verdict's episodes (default: right after the selection seeds
    ``seed .. seed + episodes - 1``); they must not overlap the selection seeds."""

    def held_out_seeds(self) -> list[int]:
        """The seeds of the final verdict (never the ones that picked the best checkpoint)."""
        first = self.seed + self.episodes if self.held_out_seed is None else self.held_out_seed
        return list(range(first, first + (self.held_out_episodes or max(self.episodes, 2))))

    @model_validator(mode="after")
    def _held_out_apart(self) -> EvalConfig:
        seeds = self.held_out_seeds()
        if seeds[0] < self.seed + self.episodes and self.seed < seeds[-1] + 1:
            raise ValueError(
                f"held_out_seed: the verdict's seeds {seeds[0]}..{seeds[-1]} overlap the "
                f"selection seeds {self.seed}..{self.seed + self.episodes - 1}; leave it unset "
                f"or use a seed >= {self.seed + self.episodes}"
            )
        return self


class CheckpointConfig(_Strict):
    """Checkpoints for ``--resume``."""

    every_steps: int = Field(10_000, ge=1)
    keep: int = Field(2, ge=1)


class TrackingConfig(_Strict):
    """MLflow tracking and registry."""

    experiment: str = "taktline"
    register_model: bool = True
    """Register the best policy as a model version under the config's ``name``."""
    alias: str = "candidate"


class TrainConfig(_Strict):
    """A training run.

    Attributes mirror the YAML keys; see ``taktline/training/configs`` for examples.
    """

    name: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    """Run and registered-model name (letters, digits, ``-_.``)."""
    backend: Literal["sb3", "rllib"] = "sb3"
    env: EnvConfig = Field(default_factory=EnvConfig)
    algorithm: Literal["maskable_ppo", "ppo", "dqn"] = "maskable_ppo"
    """``maskable_ppo`` (sb3-contrib) for masked decisions; ``ppo`` or ``dqn`` otherwise."""
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    """Passed to the algorithm's constructor (``learning_rate``, ``n_steps``, ``batch_size``...)."""
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    n_envs: int = Field(2, ge=1)
    """Parallel environments."""
    vec_env: Literal["subproc", "dummy"] = "dummy"
    """``dummy`` steps the envs in this process (the default: a line env step costs ~100 us,
    less than a pipe round trip, so subprocesses made body-shop training 1.6x slower with the
    same learning curve; ``bench/bench_training.py``); ``subproc`` runs each env in its own
    process, for envs whose steps cost milliseconds."""
    normalize_reward: bool = False
    """Scale rewards by a running estimate of the return's spread (``VecNormalize``, rewards
    only: observations reach the policy unchanged, so the bundle needs no statistics)."""
    seed: int = 0
    eval: EvalConfig = Field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    output_dir: str = "taktline-runs"
    """Local folder for checkpoints and bundles (``<output_dir>/<run id>/``)."""
    torch_threads: int = Field(1, ge=1)
    progress: bool = True

    @field_validator("env")
    @classmethod
    def _known_env(cls, v: EnvConfig) -> EnvConfig:
        import gymnasium as gym

        import taktline.envs  # noqa: F401  (registers the ids)

        if v.id not in gym.registry:
            known = sorted(k for k in gym.registry if k.startswith("taktline/"))
            raise ValueError(f"unknown env id {v.id!r}; choose one of {', '.join(known)}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.policy.network == "attention" and self.env.id != "taktline/JobShop-v0":
            raise ValueError(
                f"policy.network: 'attention' reads job-shop rows; use 'mlp' for {self.env.id}"
            )
        if self.policy.init is not None and self.algorithm == "dqn":
            raise ValueError(
                "policy.init: fine-tuning from a bundle runs PPO (ppo or maskable_ppo, on the "
                "sb3 or the rllib backend); unset it or set algorithm=maskable_ppo"
            )
        if self.algorithm == "dqn" and self.policy.network != "mlp":
            raise ValueError("algorithm: dqn trains an 'mlp' policy only; set policy.network=mlp")
        return self

    def flat(self) -> dict[str, Any]:
        """The config as ``dotted.key -> value`` (for MLflow params)."""
        out: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict) and value:
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else str(k), v)
            else:
                out[prefix] = value

        walk("", self.model_dump(mode="json"))
        return out


# ---- loading -------------------------------------------------------------------------------
def bundled_configs() -> list[str]:
    """The example configs that ship with taktline."""
    files = resources.files("taktline.training.configs")
    return sorted(
        p.name
        for p in files.iterdir()
        if p.name.endswith(".yaml") and not p.name.startswith("sweep_")
    )


def _read(path: str | Path) -> tuple[dict[str, Any], str]:
    from taktline.envs.files import load_data_file, load_yaml

    p = Path(path)
    if p.exists():
        # the guarded reader: size cap, binary/non-UTF-8/directory refused, no alias bombs
        data, source = load_data_file(p, "training config"), str(p)
    elif str(path) in bundled_configs() or f"{path}.yaml" in bundled_configs():
        name = str(path) if str(path).endswith(".yaml") else f"{path}.yaml"
        text = resources.files("taktline.training.configs").joinpath(name).read_text()
        data, source = load_yaml(text, name), name
    else:
        raise SpecError(
            f"config {str(path)!r}: no such file; give a YAML path or one of "
            f"{', '.join(bundled_configs())}"
        )
    data = data or {}
    if not isinstance(data, dict):
        raise SpecError(f"expected a mapping at the top, got {type(data).__name__}", source=source)
    return data, source


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``data`` with each ``dotted.key=value`` applied (value parsed as YAML)."""
    out = _deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"--set {item!r}: expected key=value, e.g. budget.total_timesteps=5000")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, str) and _is_float(value):
            value = float(value)
        if isinstance(value, float) and value.is_integer() and "e" in raw.lower():
            value = int(value)  # 2e5 -> 200000 for integer fields
        parts = key.strip().split(".")
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise SpecError(
                    f"--set {item!r}: {'.'.join(parts[: i + 1])} is {child!r}, not a section"
                )
            node = child
        node[parts[-1]] = value
    return out


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _deepcopy(data: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(data)


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    model: Any = TrainConfig
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = field.annotation
    return list(getattr(model, "model_fields", {}))


def _lookup(data: Any, loc: tuple[Any, ...]) -> Any:
    for part in loc:
        if isinstance(data, dict) and part in data:
            data = data[part]
        else:
            return None
    return data


def env_kwarg_problems(env_id: str, kwargs: dict[str, Any], where: str) -> list[str]:
    """Keys of ``kwargs`` that the env's constructor does not take, each with the fix."""
    import gymnasium as gym

    import taktline.envs  # noqa: F401  (registers the ids)

    entry = gym.registry[env_id].entry_point
    if not isinstance(entry, str):
        return []
    module, _, name = entry.partition(":")
    cls = getattr(__import__(module, fromlist=[name]), name)
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return []
    valid = sorted(k for k in params if k not in ("self", "render_mode"))
    problems = []
    for key in kwargs:
        if key in params and key != "self":
            continue
        close = difflib.get_close_matches(str(key), valid, n=1)
        hint = f"did you mean {where}.{close[0]}?" if close else f"valid keys: {', '.join(valid)}"
        problems.append(f"{where}.{key}: not a parameter of {env_id} (got {kwargs[key]!r}); {hint}")
    return problems


def validate_config(data: dict[str, Any], source: str = "config") -> TrainConfig:
    """Validate plain data into a :class:`TrainConfig`.

    Raises:
        SpecError: listing every problem as ``field: what is wrong (got value); fix``.
    """
    try:
        cfg = TrainConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            where = ".".join(str(p) for p in loc) or "(top)"
            if err["type"] == "extra_forbidden":
                options = _fields_at(loc)
                close = difflib.get_close_matches(str(loc[-1]), options, n=1)
                if close:
                    hint = "did you mean " + ".".join([*map(str, loc[:-1]), close[0]]) + "?"
                else:
                    hint = f"known fields here: {', '.join(options)}"
                problems.append(f"{where}: unknown field; {hint}")
                continue
            msg = err["msg"].removeprefix("Value error, ")
            got = _lookup(data, loc)
            got_text = "" if got is None and err["type"] == "missing" else f" (got {got!r})"
            problems.append(f"{where}: {msg}{got_text}")
        raise SpecError(problems, source=source) from None
    problems = env_kwarg_problems(cfg.env.id, cfg.env.kwargs, "env.kwargs")
    problems += env_kwarg_problems(cfg.env.id, cfg.eval.env_kwargs, "eval.env_kwargs")
    if problems:
        raise SpecError(problems, source=source)
    return cfg


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config (a path or a bundled example's name) and apply ``--set`` overrides.

    Raises:
        SpecError: for a missing file, bad YAML or invalid fields.
    """
    data, source = _read(path)
    return validate_config(apply_overrides(data, list(overrides or [])), source)


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """A config from plain data (as stored in a run's params or a bundle's lineage)."""
    return validate_config(data, "config")
