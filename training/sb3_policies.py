"""SB3 faces of taktline's networks, and the export of trained SB3 weights into bundles.

* MLP: SB3's own ``MlpPolicy`` (``net_arch``, ``activation_fn``); :func:`export_network` copies
  its actor (``mlp_extractor.policy_net`` + ``action_net``, or DQN's ``q_net``) into a
  :class:`~taktline.agents.networks.MaskedMLP`.
* Attention: :class:`JobShopAttentionPolicy`, a ``MaskableActorCriticPolicy`` whose features
  extractor is a :class:`~taktline.agents.networks.JobShopAttention` that already returns one
  logit per job row; the ``mlp_extractor`` splits those logits (actor) from the pooled summary
  (critic, an MLP value head) and ``action_net`` is the identity. The exported bundle holds the
  ``JobShopAttention`` weights unchanged, so it runs without SB3 on shops of any size.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import Tensor, nn

from taktline.agents.networks import JobShopAttention, MaskedMLP, activation_class
from taktline.errors import PolicyError


class AttentionExtractor(BaseFeaturesExtractor):
    """Features ``[logits (J) | pooled summary (d)]`` of a job-shop observation."""

    def __init__(self, observation_space: gym.spaces.Box, n_jobs: int, **net_kwargs: Any) -> None:
        net = JobShopAttention(max_jobs=n_jobs, **net_kwargs)
        super().__init__(observation_space, features_dim=n_jobs + net.d_model)
        self.net = net
        self.n_jobs = n_jobs

    def forward(self, observations: Tensor) -> Tensor:
        logits, pooled = self.net.logits_and_summary(observations, None)
        return torch.cat((logits, pooled), dim=1)


class _SplitHeads(nn.Module):
    """The ``mlp_extractor``: actor latent = the logits, critic latent = an MLP of the summary."""

    def __init__(self, n_jobs: int, d_model: int, hidden: int = 64) -> None:
        super().__init__()
        self.n_jobs = n_jobs
        self.latent_dim_pi = n_jobs
        self.latent_dim_vf = hidden
        self.value_body = nn.Sequential(nn.Linear(d_model, hidden), nn.Tanh())

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        return self.forward_actor(features), self.forward_critic(features)

    def forward_actor(self, features: Tensor) -> Tensor:
        return features[:, : self.n_jobs]

    def forward_critic(self, features: Tensor) -> Tensor:
        return self.value_body(features[:, self.n_jobs :])


class JobShopAttentionPolicy(MaskableActorCriticPolicy):
    """MaskablePPO policy over :class:`JobShopAttention` (per-job logits, pooled value)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("ortho_init", False)  # keep the transformer's own initialization
        super().__init__(*args, **kwargs)

    def _build_mlp_extractor(self) -> None:
        ext = self.features_extractor
        assert isinstance(ext, AttentionExtractor)
        self.mlp_extractor = _SplitHeads(ext.n_jobs, ext.net.d_model)  # type: ignore[assignment]

    def _build(self, lr_schedule: Any) -> None:
        super()._build(lr_schedule)
        self.action_net = nn.Identity()  # the extractor's logits are the action logits
        self.optimizer = self.optimizer_class(  # type: ignore[call-arg]
            self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs
        )


def sb3_policy_setup(
    network: str,
    kwargs: dict[str, Any],
    observation_space: gym.spaces.Space[Any],
    action_space: gym.spaces.Discrete,
    algorithm: str,
) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """``(policy class or name, policy_kwargs, network_spec)`` for an SB3 algorithm."""
    n_actions = int(action_space.n)
    if network == "attention":
        net_kwargs = {k: v for k, v in kwargs.items() if k in ("d_model", "n_heads", "n_layers")}
        unknown = set(kwargs) - set(net_kwargs)
        if unknown:
            raise PolicyError(
                f"policy.kwargs: {sorted(unknown)} not understood by 'attention'; use d_model, "
                "n_heads, n_layers"
            )
        policy_kwargs = {
            "features_extractor_class": AttentionExtractor,
            "features_extractor_kwargs": {"n_jobs": n_actions, **net_kwargs},
        }
        spec = {"class": "attention", "kwargs": {"max_jobs": n_actions, **net_kwargs}}
        return JobShopAttentionPolicy, policy_kwargs, spec
    hidden = [int(h) for h in kwargs.get("hidden", [64, 64])]
    act = str(kwargs.get("activation", "relu" if algorithm == "dqn" else "tanh"))
    unknown = set(kwargs) - {"hidden", "activation"}
    if unknown:
        raise PolicyError(
            f"policy.kwargs: {sorted(unknown)} not understood by 'mlp'; use hidden, activation"
        )
    obs_dim = int(gym.spaces.flatdim(observation_space))
    net_arch: Any = hidden if algorithm == "dqn" else {"pi": hidden, "vf": hidden}
    policy_kwargs = {"net_arch": net_arch, "activation_fn": activation_class(act)}
    spec = {
        "class": "mlp",
        "kwargs": {"obs_dim": obs_dim, "n_actions": n_actions, "hidden": hidden, "activation": act},
    }
    return "MlpPolicy", policy_kwargs, spec


def _linears(module: nn.Module) -> list[nn.Linear]:
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


def _copy_linears(source: list[nn.Linear], target: list[nn.Linear]) -> None:
    """Weights and biases of ``source`` into ``target``, layer by layer."""
    with torch.no_grad():
        for s, t in zip(source, target, strict=True):
            t.weight.copy_(s.weight)
            t.bias.copy_(s.bias)


def import_network(model: Any, bundle_dir: str) -> None:
    """Copy a bundle's MLP actor into ``model``'s (``mlp_extractor.policy_net`` + ``action_net``,
    the layout :func:`export_network` reads back): fine-tuning starts from the bundle's policy.

    Raises:
        PolicyError: when the bundle is no MLP or its layers do not fit the model's.
    """
    from taktline.agents.bundle import PolicyBundle

    net = PolicyBundle.load(bundle_dir).network
    policy = model.policy
    if not isinstance(net, MaskedMLP) or not hasattr(policy, "mlp_extractor"):
        raise PolicyError(
            f"policy.init: {bundle_dir!r} holds a {type(net).__name__}; fine-tuning starts an "
            "'mlp' PPO actor from an 'mlp' bundle only"
        )
    target = _linears(policy.mlp_extractor.policy_net) + _linears(policy.action_net)
    source = _linears(net)
    shapes = [tuple(t.weight.shape) for t in target]
    if shapes != [tuple(s.weight.shape) for s in source]:
        raise PolicyError(
            f"policy.init: {bundle_dir!r} has layers {[tuple(s.weight.shape) for s in source]}, "
            f"this run's actor {shapes}; set policy.kwargs (hidden, activation) to the bundle's"
        )
    acts = [
        {type(m).__name__ for m in seq.modules() if not isinstance(m, (nn.Linear, nn.Sequential))}
        for seq in (net.body, policy.mlp_extractor.policy_net)
    ]
    if acts[0] != acts[1]:
        raise PolicyError(
            f"policy.init: {bundle_dir!r} uses {sorted(acts[0])}, this run's actor "
            f"{sorted(acts[1])}; set policy.kwargs.activation to the bundle's"
        )
    _copy_linears(source, target)


def export_network(model: Any, network_spec: dict[str, Any]) -> nn.Module:
    """The SB3-free network of ``network_spec`` holding ``model``'s trained actor weights."""
    from taktline.agents.networks import build_network

    net = build_network(network_spec)
    policy = model.policy
    if isinstance(net, JobShopAttention):
        net.load_state_dict(policy.features_extractor.net.state_dict())
        return net
    assert isinstance(net, MaskedMLP)
    if hasattr(policy, "q_net"):  # DQN: the Q-values are the logits
        source = _linears(policy.q_net.q_net)
    else:
        source = _linears(policy.mlp_extractor.policy_net) + _linears(policy.action_net)
    target = _linears(net)
    if len(source) != len(target):
        raise PolicyError(
            f"export: the SB3 actor has {len(source)} linear layers, the bundle network "
            f"{len(target)}; policy.kwargs and the network spec disagree"
        )
    _copy_linears(source, target)
    net.eval()
    return net
