"""Policy networks: plain torch modules that map an observation (and mask) to action logits.

Every network here has the same call: ``forward(obs[B, ...], mask[B, n] | None) -> logits[B, n]``
with infeasible actions at :data:`MASKED_LOGIT`. They know nothing of SB3 or Ray: the training
backends wrap them (or copy weights into them), and a :class:`~taktline.agents.bundle.PolicyBundle`
rebuilds one from its ``network_spec`` with :func:`build_network`.

* :class:`MaskedMLP` — fixed-size observations (line dispatch and release).
* :class:`JobShopAttention` — **size-agnostic** job-shop dispatching: a transformer over one
  token per job and per machine (the row layout of
  :class:`~taktline.envs.encoding_jobshop.JobShopCodec`) that scores each job token. The number
  of jobs and machines is read from the observation, so a policy trained on 10x10 shops runs on
  15x15 ones.

>>> import torch
>>> net = build_network({"class": "mlp", "kwargs": {"obs_dim": 4, "n_actions": 3}})
>>> net(torch.zeros(2, 4), torch.tensor([[True, False, True]] * 2)).shape
torch.Size([2, 3])
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from taktline.errors import PolicyError

MASKED_LOGIT = -1e9
"""Logit of a masked (infeasible) action: finite, so softmax never produces NaN."""

_ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU}


def activation_class(name: str) -> type[nn.Module]:
    """The activation class called ``name`` (``tanh``, ``relu`` or ``gelu``)."""
    try:
        return _ACTIVATIONS[name.lower()]
    except KeyError:
        raise PolicyError(
            f"activation: unknown {name!r}; choose one of {', '.join(_ACTIVATIONS)}"
        ) from None


def apply_mask(logits: Tensor, mask: Tensor | None) -> Tensor:
    """``logits`` with infeasible actions (``mask`` False) set to :data:`MASKED_LOGIT`."""
    if mask is None:
        return logits
    if mask.shape != logits.shape:
        raise PolicyError(
            f"mask: expected shape {tuple(logits.shape)} (batch, actions), got {tuple(mask.shape)}"
        )
    return logits.masked_fill(~mask.to(torch.bool), MASKED_LOGIT)


def flat_observation(obs: Tensor, obs_dim: int) -> Tensor:
    """``obs`` as ``[B, obs_dim]`` floats.

    Raises:
        PolicyError: when the observation has another length (another env or env_kwargs).
    """
    x = obs.reshape(obs.shape[0], -1).float()
    if x.shape[1] != obs_dim:
        raise PolicyError(
            f"observation: expected {obs_dim} features, got {x.shape[1]}; the policy "
            "was trained on another env or env_kwargs"
        )
    return x


def mlp(sizes: Sequence[int], act: type[nn.Module]) -> nn.Sequential:
    """``Linear -> act`` for each consecutive pair of ``sizes`` (the last layer activated too)."""
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), act()]
    return nn.Sequential(*layers)


class MaskedMLP(nn.Module):
    """A multilayer perceptron over a flat observation with a linear head and the mask.

    The layout (``body`` = ``Linear, act`` pairs, then ``head``) matches stable-baselines3's
    ``mlp_extractor.policy_net`` + ``action_net``, so trained SB3 weights copy in one to one.

    Args:
        obs_dim: Length of the (flat) observation.
        n_actions: Number of discrete actions.
        hidden: Hidden layer widths.
        activation: ``tanh`` (SB3's default for PPO), ``relu`` or ``gelu``.
    """

    size_agnostic = False

    def __init__(
        self,
        obs_dim: int,
        n_actions: int,
        hidden: Sequence[int] = (64, 64),
        activation: str = "tanh",
    ) -> None:
        super().__init__()
        if obs_dim < 1 or n_actions < 1:
            raise PolicyError(f"mlp: need obs_dim, n_actions >= 1, got {obs_dim}, {n_actions}")
        self.obs_dim = obs_dim
        self.n_actions = n_actions
        self.body = mlp([obs_dim, *hidden], activation_class(activation))
        self.head = nn.Linear(hidden[-1] if hidden else obs_dim, n_actions)

    def forward(self, obs: Tensor, mask: Tensor | None = None) -> Tensor:
        """Masked logits ``[B, n_actions]`` of observations ``[B, obs_dim]``."""
        x = flat_observation(obs, self.obs_dim)
        return apply_mask(self.head(self.body(x)), mask)


class NumpyMLP:
    """An inference-only numpy copy of a :class:`MaskedMLP` (float32, same maths).

    A small MLP spends most of a torch forward pass in per-operator dispatch (about 20 us per
    op on a 2-core CPU): the whole pass takes ~120 us in torch and ~25 us here. Serving runs
    one observation per request, so this is its hot path. The weights are copied when the
    kernel is built; later changes to the torch module are not seen (build it again).

    >>> import torch
    >>> net = MaskedMLP(4, 3)
    >>> kernel = NumpyMLP.from_module(net)
    >>> x, m = torch.rand(2, 4), torch.tensor([[True, False, True]] * 2)
    >>> bool(np.allclose(kernel(x.numpy(), m.numpy()), net(x, m).detach().numpy(), atol=1e-5))
    True
    """

    _ACTIVATIONS: ClassVar[dict[type[nn.Module], Any]] = {
        nn.Tanh: np.tanh,
        nn.ReLU: lambda h, out: np.maximum(h, np.float32(0.0), out=out),
    }

    def __init__(self, layers: list[tuple[np.ndarray, np.ndarray, Any]], obs_dim: int) -> None:
        self.layers = layers
        self.obs_dim = obs_dim
        self.n_actions = int(layers[-1][0].shape[1])
        self._masked = np.float32(MASKED_LOGIT)

    @classmethod
    def from_module(cls, net: nn.Module) -> NumpyMLP | None:
        """The kernel of ``net``, or ``None`` when ``net`` is not a plain :class:`MaskedMLP`
        (another class, or an activation numpy has no exact twin of, such as GELU)."""
        if type(net) is not MaskedMLP:
            return None
        layers: list[tuple[np.ndarray, np.ndarray, Any]] = []
        modules = [*net.body, net.head]
        for i, mod in enumerate(modules):
            if isinstance(mod, nn.Linear):
                weight = mod.weight.detach().cpu().numpy().astype(np.float32).T.copy()
                if mod.bias is not None:
                    bias = mod.bias.detach().cpu().numpy().astype(np.float32).copy()
                else:
                    bias = np.zeros(weight.shape[1], np.float32)
                layers.append((weight, bias, None))
            elif type(mod) in cls._ACTIVATIONS and i > 0 and layers[-1][2] is None:
                w, b, _ = layers[-1]
                layers[-1] = (w, b, cls._ACTIVATIONS[type(mod)])
            else:
                return None
        return cls(layers, net.obs_dim)

    def __call__(self, obs: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Masked logits ``(B, n)`` (float32) of observations ``(B, ...)``."""
        if not isinstance(obs, np.ndarray) or obs.dtype != np.float32:
            obs = np.asarray(obs, dtype=np.float32)
        h = obs.reshape(obs.shape[0], -1)
        if h.shape[1] != self.obs_dim:
            raise PolicyError(
                f"observation: expected {self.obs_dim} features, got {h.shape[1]}; the policy "
                "was trained on another env or env_kwargs"
            )
        for weight, bias, act in self.layers:
            h = h @ weight
            h += bias
            if act is not None:
                h = act(h, out=h)
        if mask is not None:
            if mask.shape != h.shape:
                raise PolicyError(
                    f"mask: expected shape {h.shape} (batch, actions), got {tuple(mask.shape)}"
                )
            h = np.where(mask, h, self._masked)
        return h


class JobShopAttention(nn.Module):
    """Size-agnostic job-shop dispatching: self-attention over job and machine tokens.

    The flat observation of ``JobShopCodec`` is ``J`` job rows of ``job_features``, ``M``
    machine rows of ``machine_features`` and ``global_features`` numbers. ``J`` is the width of
    the mask (or ``max_jobs`` without one) and ``M`` follows from the observation's length.
    Each row (with the global numbers appended) is embedded, padded rows (validity flag 0) are
    hidden from attention, and a shared head scores every job token: the logits come per job,
    so nothing depends on ``J`` or ``M``.

    Args:
        job_features: Numbers per job row (the first one is the row's validity flag).
        machine_features: Numbers per machine row (the first one is its validity flag).
        global_features: Numbers at the end of the observation.
        max_jobs: Job rows assumed when ``forward`` gets no mask.
        d_model: Token width.
        n_heads: Attention heads.
        n_layers: Transformer layers.
    """

    size_agnostic = True

    def __init__(
        self,
        job_features: int = 11,
        machine_features: int = 4,
        global_features: int = 4,
        max_jobs: int = 10,
        d_model: int = 64,
        n_heads: int = 4,
        n_layers: int = 2,
    ) -> None:
        super().__init__()
        if d_model % n_heads:
            raise PolicyError(
                f"attention: d_model ({d_model}) must be divisible by n_heads ({n_heads})"
            )
        self.job_features = job_features
        self.machine_features = machine_features
        self.global_features = global_features
        self.max_jobs = max_jobs
        self.d_model = d_model
        self.job_embed = nn.Sequential(
            nn.Linear(job_features + global_features, d_model),
            nn.ReLU(),
            nn.Linear(d_model, d_model),
        )
        self.machine_embed = nn.Sequential(
            nn.Linear(machine_features + global_features, d_model),
            nn.ReLU(),
            nn.Linear(d_model, d_model),
        )
        layer = nn.TransformerEncoderLayer(
            d_model,
            n_heads,
            dim_feedforward=2 * d_model,
            dropout=0.0,
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.score = nn.Sequential(
            nn.Linear(2 * d_model, d_model), nn.ReLU(), nn.Linear(d_model, 1)
        )

    def split(self, obs: Tensor, n_jobs: int) -> tuple[Tensor, Tensor, Tensor]:
        """``(jobs [B, J, Fj], machines [B, M, Fm], globals [B, G])`` of flat observations."""
        x = obs.reshape(obs.shape[0], -1).float()
        fj, fm, g = self.job_features, self.machine_features, self.global_features
        rest = x.shape[1] - n_jobs * fj - g
        if rest < fm or rest % fm:
            raise PolicyError(
                f"observation: {x.shape[1]} numbers do not hold {n_jobs} job rows of {fj}, "
                f"machine rows of {fm} and {g} globals; is it a taktline/JobShop-v0 observation?"
            )
        jobs = x[:, : n_jobs * fj].reshape(x.shape[0], n_jobs, fj)
        machines = x[:, n_jobs * fj : x.shape[1] - g].reshape(x.shape[0], rest // fm, fm)
        return jobs, machines, x[:, x.shape[1] - g :]

    def encode(self, obs: Tensor, n_jobs: int) -> tuple[Tensor, Tensor]:
        """Job tokens ``[B, J, d]`` and a pooled summary ``[B, d]`` (for a value head)."""
        jobs, machines, glob = self.split(obs, n_jobs)
        b = obs.shape[0]
        gj = glob[:, None, :].expand(b, jobs.shape[1], -1)
        gm = glob[:, None, :].expand(b, machines.shape[1], -1)
        tokens = torch.cat(
            (
                self.job_embed(torch.cat((jobs, gj), -1)),
                self.machine_embed(torch.cat((machines, gm), -1)),
            ),
            dim=1,
        )
        padding = torch.cat((jobs[..., 0] < 0.5, machines[..., 0] < 0.5), dim=1)
        # a batch row that is all padding (never produced by the codec) would give NaN
        padding = padding & ~padding.all(dim=1, keepdim=True)
        h = self.encoder(tokens, src_key_padding_mask=padding)
        keep = (~padding).unsqueeze(-1).float()
        pooled = (h * keep).sum(1) / keep.sum(1).clamp_min(1.0)
        return h[:, : jobs.shape[1]], pooled

    def n_jobs_of(self, mask: Tensor | None) -> int:
        """Job rows of the observation: the mask's width, else ``max_jobs``."""
        return int(mask.shape[-1]) if mask is not None else self.max_jobs

    def logits_and_summary(self, obs: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """Masked per-job logits ``[B, J]`` and the pooled summary ``[B, d]``."""
        job_h, pooled = self.encode(obs, self.n_jobs_of(mask))
        ctx = pooled[:, None, :].expand_as(job_h)
        logits = self.score(torch.cat((job_h, ctx), -1)).squeeze(-1)
        return apply_mask(logits, mask), pooled

    def forward(self, obs: Tensor, mask: Tensor | None = None) -> Tensor:
        """Masked logits ``[B, J]``."""
        return self.logits_and_summary(obs, mask)[0]


class SlotScorer(nn.Module):
    """Line dispatch by one scorer shared over the queue slots (``LineDispatch-v0``, job actions).

    The observation ends with ``n_actions`` slots of ``slot_size`` numbers (one per waiting job,
    :mod:`taktline.envs.encoding_line`); everything before them is the line's state. Each slot is
    embedded by the same MLP, the line's state by another, and each job is scored from its own
    embedding, the line's, and the mean and max over the valid slots. A job is judged by what it
    is, not by where it stands in the queue, so a pattern learned in slot 1 holds in slot 7: the
    rare states where the lookahead departs from its base rule are shared across slots.

    Args:
        obs_dim: Length of the observation (line block + slots).
        n_actions: Number of slots.
        slot_size: Numbers per slot.
        hidden: Embedding width.
    """

    size_agnostic = False

    def __init__(self, obs_dim: int, n_actions: int, slot_size: int, hidden: int = 64) -> None:
        super().__init__()
        head = obs_dim - n_actions * slot_size
        if n_actions < 1 or slot_size < 1 or head < 0 or hidden < 1:
            raise PolicyError(
                f"slots: obs_dim {obs_dim} cannot hold {n_actions} slots of {slot_size} "
                f"numbers (hidden {hidden}); use the codec's max_queue and slot size"
            )
        self.obs_dim, self.n_actions, self.slot_size = obs_dim, n_actions, slot_size
        self.slot = mlp([slot_size, hidden, hidden], nn.ReLU)
        self.line = mlp([max(head, 1), hidden], nn.ReLU)
        self.score = nn.Sequential(*mlp([4 * hidden, hidden], nn.ReLU), nn.Linear(hidden, 1))

    def forward(self, obs: Tensor, mask: Tensor | None = None) -> Tensor:
        """Masked logits ``[B, n_actions]`` of observations ``[B, obs_dim]``."""
        x = flat_observation(obs, self.obs_dim)
        b, k = x.shape[0], self.n_actions * self.slot_size
        head = x[:, : self.obs_dim - k] if self.obs_dim > k else x.new_zeros(b, 1)
        h = self.slot(x[:, self.obs_dim - k :].reshape(b, self.n_actions, self.slot_size))
        valid = (mask if mask is not None else x.new_ones(b, self.n_actions)).bool()
        w = valid.unsqueeze(-1).to(h.dtype)
        mean = (h * w).sum(1) / w.sum(1).clamp(min=1.0)
        top = h.masked_fill(~valid.unsqueeze(-1), 0.0).amax(1)
        ctx = torch.cat([self.line(head), mean, top], dim=-1)
        both = torch.cat([h, ctx.unsqueeze(1).expand(-1, self.n_actions, -1)], dim=-1)
        return apply_mask(self.score(both).squeeze(-1), mask)


NETWORKS: dict[str, type[nn.Module]] = {
    "mlp": MaskedMLP,
    "attention": JobShopAttention,
    "slots": SlotScorer,
}
"""Network classes by the name a ``network_spec`` uses."""


def build_network(spec: dict[str, Any]) -> nn.Module:
    """Build the network a ``{"class": name, "kwargs": {...}}`` spec describes.

    Raises:
        PolicyError: for an unknown class or kwargs it does not take.
    """
    name = spec.get("class")
    cls = NETWORKS.get(str(name))
    if cls is None:
        raise PolicyError(
            f"network_spec.class: unknown {name!r}; choose one of {', '.join(NETWORKS)}"
        )
    try:
        return cls(**dict(spec.get("kwargs", {})))
    except TypeError as exc:
        raise PolicyError(f"network_spec.kwargs of {name!r}: {exc}") from exc
