"""RLlib faces of taktline's networks: the masking RLModule, the env creator and weight export.

RLlib's new API stack trains an ``RLModule``. :class:`MaskedPolicyModule` is a small one whose
actor **is** a taktline network (:class:`~taktline.agents.networks.MaskedMLP` or
:class:`~taktline.agents.networks.JobShopAttention`, built from the same ``network_spec`` a
bundle stores) next to a value head. The env gives ``{"observations", "action_mask"}``
(``dict_obs=True``) and the actor masks its own logits, so no infeasible action is ever
sampled. Exporting a trained module is a plain ``state_dict`` copy of the actor
(:func:`export_network`): the bundle runs without Ray.

Nothing here subclasses an Algorithm or a Learner.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from torch import Tensor, nn

from taktline.agents.networks import JobShopAttention, activation_class, build_network, mlp
from taktline.errors import PolicyError

ACTOR_PREFIX = "pi."
"""Keys of the actor's weights in the module's ``state_dict``."""


def make_env(env_config: dict[str, Any]) -> gym.Env[Any, Any]:
    """The env an RLlib EnvRunner steps: ``env_config = {"env_id": ..., "env_kwargs": {...}}``.

    Observations are the ``dict_obs`` form (observations and action mask) and the action space
    is a plain ``Discrete`` (the env's mask-aware space holds a reference to its env, which
    RLlib would otherwise ship between processes).
    """
    import taktline.envs  # noqa: F401  (registers the ids in this worker process)

    kwargs = {**dict(env_config.get("env_kwargs") or {}), "dict_obs": True}
    env = gym.make(str(env_config["env_id"]), disable_env_checker=True, **kwargs)
    return _PlainDiscrete(env)


ENV_NAME = "taktline-rllib"
"""The name RLlib knows taktline's envs by (``config.environment(env=ENV_NAME)``)."""


def register_env() -> None:
    """Register :func:`make_env` as :data:`ENV_NAME` for the Ray job this process is connected to.

    Ray's tune registry keys its entries by the job id it read first and caches that id for the
    life of the process. A process that connects to Ray again (a test session, a notebook, a
    Tune driver running several trainings) is a new job: without dropping the cached id the
    creator would be stored under the old job's key and every env runner of the new job would
    fail with ``Environment `taktline-rllib` doesn't exist``.
    """
    from ray.tune import registry

    registry._global_registry._prefix = None  # the job id, read again from the runtime context
    registry.register_env(ENV_NAME, make_env)


class _PlainDiscrete(gym.Wrapper[Any, Any, Any, Any]):
    """Shows the env's action space as a plain ``Discrete(n)``."""

    def __init__(self, env: gym.Env[Any, Any]) -> None:
        super().__init__(env)
        self.action_space = gym.spaces.Discrete(int(env.action_space.n))  # type: ignore[attr-defined]

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        return self.env.step(int(action))


class MaskedPolicyModule(TorchRLModule, ValueFunctionAPI):
    """PPO RLModule: a taktline actor network (masked logits) and a value head.

    ``model_config`` holds ``network_spec`` (as in a bundle) and optionally ``value_hidden``
    (widths of the value MLP; default: the actor's hidden widths, or 64 for attention).
    """

    def setup(self) -> None:
        config: dict[str, Any] = dict(self.model_config or {})  # type: ignore[arg-type]
        spec = dict(config["network_spec"])
        self.pi = build_network(spec)
        kwargs = dict(spec.get("kwargs", {}))
        if isinstance(self.pi, JobShopAttention):
            # the value reads the attention encoder's pooled summary (shared, as in SB3)
            width = [int(h) for h in config.get("value_hidden", [64])]
            self.vf = nn.Sequential(
                mlp([self.pi.d_model, *width], nn.Tanh), nn.Linear(width[-1], 1)
            )
        else:
            width = [int(h) for h in config.get("value_hidden", kwargs.get("hidden", [64, 64]))]
            act = activation_class(str(kwargs.get("activation", "tanh")))
            self.vf = nn.Sequential(
                mlp([int(kwargs["obs_dim"]), *width], act),
                nn.Linear(width[-1] if width else kwargs["obs_dim"], 1),
            )

    @staticmethod
    def _split(batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        obs = batch[Columns.OBS]
        if not isinstance(obs, dict) or "action_mask" not in obs:
            raise PolicyError(
                "RLlib batch: expected dict observations with 'observations' and 'action_mask'; "
                "build the env with dict_obs=True (training.rllib_module.make_env does)"
            )
        return obs["observations"].float(), obs["action_mask"] > 0.5

    def _heads(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        x, mask = self._split(batch)
        if isinstance(self.pi, JobShopAttention):
            logits, pooled = self.pi.logits_and_summary(x, mask)
            return logits, pooled
        return self.pi(x, mask), x

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        x, mask = self._split(batch)
        return {Columns.ACTION_DIST_INPUTS: self.pi(x, mask)}

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        logits, embeddings = self._heads(batch)
        return {Columns.ACTION_DIST_INPUTS: logits, Columns.EMBEDDINGS: embeddings}

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> Tensor:
        """State values ``[B]`` (``embeddings``: the value head's input from the train pass)."""
        if embeddings is None:
            embeddings = self._heads(batch)[1]
        return self.vf(embeddings).squeeze(-1)


def import_actor(algo: Any, bundle_dir: str, network_spec: dict[str, Any]) -> None:
    """Start ``algo``'s actor as a bundle's network (``policy.init``: PPO fine-tuning after a
    DAgger imitation, on Ray as on SB3); the value head keeps its fresh weights. The learner
    gets the weights and the env runners are synced from it before the first sample.

    Raises:
        PolicyError: when the bundle's network is not the one this run builds.
    """
    from ray.rllib.core import DEFAULT_MODULE_ID

    from taktline.agents.bundle import PolicyBundle

    bundle = PolicyBundle.load(bundle_dir)
    mine, theirs = network_spec, bundle.network_spec
    if mine.get("class") != theirs.get("class") or mine.get("kwargs") != theirs.get("kwargs"):
        raise PolicyError(
            f"policy.init: {bundle_dir!r} holds {theirs.get('class')} {theirs.get('kwargs')}, "
            f"this run builds {mine.get('class')} {mine.get('kwargs')}; set policy.network and "
            "policy.kwargs (hidden, activation) to the bundle's, on the same env kwargs"
        )
    state = dict(algo.learner_group.get_weights()[DEFAULT_MODULE_ID])
    for key, value in bundle.network.state_dict().items():
        state[ACTOR_PREFIX + key] = value.detach().cpu().numpy()
    algo.learner_group.set_weights({DEFAULT_MODULE_ID: state})
    algo.env_runner_group.sync_weights(
        from_worker_or_learner_group=algo.learner_group, timeout_seconds=60.0
    )


def export_network(module_state: dict[str, Any], network_spec: dict[str, Any]) -> nn.Module:
    """The Ray-free network of ``network_spec`` holding a trained module's actor weights.

    Args:
        module_state: The RLModule's state (``learner_group.get_weights()[module_id]``).
        network_spec: The spec the module was built from.

    Raises:
        PolicyError: when the state holds no actor weights that fit the spec.
    """
    actor = {
        k[len(ACTOR_PREFIX) :]: torch.as_tensor(v)
        for k, v in module_state.items()
        if k.startswith(ACTOR_PREFIX)
    }
    if not actor:
        raise PolicyError(
            f"export: the RLlib module state has no '{ACTOR_PREFIX}*' weights (keys: "
            f"{sorted(module_state)[:5]}...); was it trained with MaskedPolicyModule?"
        )
    net = build_network(network_spec)
    try:
        net.load_state_dict(actor)
    except RuntimeError as exc:
        raise PolicyError(f"export: actor weights do not fit {network_spec}: {exc}") from exc
    net.eval()
    return net


def log_episode_kpis(*, episode: Any, metrics_logger: Any = None, **_: Any) -> None:
    """RLlib ``on_episode_end`` callback: the episode's KPIs (``info["kpis"]``) as ``kpi.*``.

    They reach the training results as ``env_runners/kpi/<name>`` (mean over recent episodes).
    """
    if metrics_logger is None:
        return
    info = episode.get_infos(-1) or {}
    for key, value in (info.get("kpis") or {}).items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            metrics_logger.log_value(("kpi", key), float(value), reduce="mean", window=20)
