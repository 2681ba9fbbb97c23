"""The policy bundle: a trained policy that describes itself and runs without its trainer.

A bundle is a directory with two files:

* ``bundle.json`` — the env id and kwargs it was trained on, the line's spec hash, the
  observation and action spaces (as JSON), the network's class and constructor kwargs, and the
  training lineage (git commit, config, seed, MLflow run, backend, creation time, version);
* ``weights.pt`` — the network's ``state_dict`` (loaded with ``weights_only=True``).

``bundle.json`` also records the sha256 of every other file (``"files": {"weights.pt":
"<hex>"}``), and :meth:`PolicyBundle.load` checks each one before reading anything, so a bundle
changed after it was saved (a tampered or truncated cache, a half-copied folder) is refused, not
served.

Loading one and acting needs torch, numpy, gymnasium and taktline only — never SB3, Ray or
MLflow — so serving and notebooks stay light. Both training backends export to it.

>>> import tempfile, gymnasium as gym, numpy as np
>>> from taktline.agents.networks import MaskedMLP
>>> b = PolicyBundle(
...     env_id="taktline/LineDispatch-v0", env_kwargs={"line": "serial5"}, spec_hash=None,
...     observation_space=gym.spaces.Box(-1, 1, (4,), np.float32),
...     action_space=gym.spaces.Discrete(3),
...     network=MaskedMLP(4, 3), network_spec={"class": "mlp",
...         "kwargs": {"obs_dim": 4, "n_actions": 3}}, lineage={})
>>> path = b.save(tempfile.mkdtemp())
>>> PolicyBundle.load(path).act(np.zeros((2, 4)), np.array([[0, 1, 0]] * 2, bool)).tolist()
[1, 1]
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from taktline.agents.networks import NumpyMLP, build_network
from taktline.agents.spaces import space_from_json, space_to_json
from taktline.errors import PolicyError

BUNDLE_FILE = "bundle.json"
WEIGHTS_FILE = "weights.pt"
FORMAT = "taktline-policy-bundle"
FORMAT_VERSION = 2
"""v2 added the ``files`` digests; a v1 bundle (no digests) is refused with how to re-export."""


@dataclass
class PolicyBundle:
    """A trained policy with everything needed to run it on the env it was trained on.

    Attributes:
        env_id: The Gymnasium id (``taktline/JobShop-v0`` ...).
        env_kwargs: The env's kwargs (JSON-serializable); the codec is rebuilt from them.
        spec_hash: Hash of the line spec (``None`` for job shops); serving checks snapshots
            against it.
        observation_space: What the policy observes.
        action_space: Its discrete actions.
        network: ``forward(obs[B, ...], mask[B, n] | None) -> logits[B, n]`` (masked logits
            at ``-1e9``).
        network_spec: ``{"class": "mlp" | "attention", "kwargs": {...}}`` to rebuild it.
        lineage: Where it came from: ``git_commit``, ``config``, ``seed``, ``mlflow_run_id``,
            ``backend``, ``created_at``, ``taktline_version``.
        version: The registry version when loaded from MLflow.
    """

    env_id: str
    env_kwargs: dict[str, Any]
    spec_hash: str | None
    observation_space: gym.spaces.Space[Any]
    action_space: gym.spaces.Discrete
    network: torch.nn.Module
    network_spec: dict[str, Any]
    lineage: dict[str, Any] = field(default_factory=dict)
    version: str | None = None
    _kernel: NumpyMLP | None = field(default=None, init=False, repr=False, compare=False)

    def freeze(self) -> PolicyBundle:
        """Serve from a numpy copy of the weights where the network allows it; returns self.

        For an MLP this makes :meth:`act` about ten times faster on one observation (torch's
        per-operator overhead dominates such small passes). The copy is taken now: call it
        on a bundle whose weights will not change (serving does, after loading). Networks
        without a numpy kernel (attention, GELU) keep running in torch.
        """
        self.network.eval()
        self._kernel = NumpyMLP.from_module(self.network)
        return self

    @property
    def frozen(self) -> bool:
        """Whether :meth:`act` runs the numpy kernel of :meth:`freeze`."""
        return self._kernel is not None

    # ---- acting ------------------------------------------------------------------------
    @property
    def size_agnostic(self) -> bool:
        """Whether the network runs on observations of other sizes (e.g. larger job shops)."""
        return bool(getattr(self.network, "size_agnostic", False))

    def _prepare(
        self, obs: Any, mask: np.ndarray | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        x, m = self._prepare_numpy(obs, mask)
        return torch.from_numpy(x), (None if m is None else torch.from_numpy(m))

    def _prepare_numpy(
        self, obs: Any, mask: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Checked float32 observations and boolean masks (errors name the shape expected)."""
        if isinstance(obs, dict):  # a Dict observation (RLlib style) carries its mask
            if mask is None and "action_mask" in obs:
                mask = np.asarray(obs["action_mask"]) > 0.5
            obs = obs["observations"]
        x = np.asarray(obs, dtype=np.float32)
        expected = self._obs_shape
        if self.size_agnostic:
            if x.ndim != 2:
                raise PolicyError(
                    f"obs: expected a batch (B, features), got shape {x.shape}; add a batch "
                    "axis with obs[None]"
                )
        elif x.shape[1:] != expected or x.ndim != len(expected) + 1:
            raise PolicyError(
                f"obs: expected shape (B, {', '.join(map(str, expected))}), got {x.shape}"
                + ("; add a batch axis with obs[None]" if x.shape == expected else "")
            )
        m: np.ndarray | None = None
        if mask is not None:
            mb = np.asarray(mask).astype(bool)
            n = int(self.action_space.n)
            if (
                mb.ndim != 2
                or mb.shape[0] != x.shape[0]
                or (not self.size_agnostic and mb.shape[1] != n)
            ):
                raise PolicyError(f"mask: expected shape ({x.shape[0]}, {n}), got {mb.shape}")
            empty = np.flatnonzero(~mb.any(axis=1))
            if empty.size:
                raise PolicyError(
                    f"mask: row {int(empty[0])} allows no action; there is nothing to decide"
                )
            m = mb
        return x, m

    def _logits(self, obs: Any, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """Masked logits ``(B, n)`` as float64 and the boolean mask (or ``None``)."""
        kernel = self._kernel
        if kernel is not None:
            x, m = self._prepare_numpy(obs, mask)
            return kernel(x, m).astype(np.float64), m
        xt, mt = self._prepare(obs, mask)
        if self.network.training:
            self.network.eval()
        with torch.inference_mode():
            out = self.network(xt, mt).double().numpy()
        return out, (None if mt is None else mt.numpy())

    def logits(self, obs: Any, mask: np.ndarray | None = None) -> np.ndarray:
        """Masked logits ``(B, n)`` of a batch of observations."""
        return self._logits(obs, mask)[0]

    def act(
        self,
        obs: Any,
        mask: np.ndarray | None = None,
        deterministic: bool = True,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        """Actions ``(B,)`` (int64) for a batch of observations ``(B, ...)``.

        Args:
            obs: Observations as the env returns them, with a batch axis.
            mask: Feasibility masks ``(B, n)``; an action outside the mask is never returned.
            deterministic: The most likely action (greedy); else a sample.
            rng: Generator for sampling (default: a fresh one).

        Raises:
            PolicyError: for observations or masks of the wrong shape, or a mask row that
                allows nothing.
        """
        logits, mb = self._logits(obs, mask)
        if deterministic:
            actions = logits.argmax(axis=1)
        else:
            z = logits - logits.max(axis=1, keepdims=True)
            probs = np.exp(z)
            u = np.asarray((rng or np.random.default_rng()).random(probs.shape[0]))
            cdf = np.cumsum(probs, axis=1)
            actions = np.minimum((cdf < u[:, None] * cdf[:, -1:]).sum(axis=1), probs.shape[1] - 1)
        actions = actions.astype(np.int64)
        if mb is not None:  # never an infeasible action, even at the edge of float precision
            bad = ~mb[np.arange(len(actions)), actions]
            if bad.any():
                actions[bad] = np.where(mb[bad], logits[bad], -np.inf).argmax(axis=1)
        return actions

    def act_one(self, obs: np.ndarray, mask: np.ndarray) -> int:
        """The greedy action of one observation (no batch axis) and its boolean mask.

        Same answer as ``act(obs[None], mask[None])[0]``, for serving's one-snapshot hot path:
        on a frozen bundle it skips the batch checks, which cost more than the forward pass.

        Raises:
            PolicyError: for an observation or mask of the wrong shape, or a mask that allows
                nothing.
        """
        kernel = self._kernel
        if kernel is None or obs.shape != self._obs_shape or mask.shape != (kernel.n_actions,):
            return int(self.act(obs[None], mask[None], deterministic=True)[0])
        if not mask.any():
            raise PolicyError("mask: row 0 allows no action; there is nothing to decide")
        logits = kernel(obs.reshape(1, -1), mask[None])[0]
        action = int(logits.argmax())
        if not mask[action]:  # as act(): never an infeasible action
            action = int(np.where(mask, logits, -np.inf).argmax())
        return action

    @property
    def _obs_shape(self) -> tuple[int, ...]:
        """One observation's shape (inside a Dict space's ``"observations"``)."""
        space = self.observation_space
        if isinstance(space, gym.spaces.Dict):
            space = space["observations"]
        return tuple(space.shape or ())

    # ---- storage -----------------------------------------------------------------------
    def describe(self, files: dict[str, str] | None = None) -> dict[str, Any]:
        """The JSON content of ``bundle.json`` (``files``: sha256 by relative path)."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "env_id": self.env_id,
            "env_kwargs": self.env_kwargs,
            "spec_hash": self.spec_hash,
            "observation_space": space_to_json(self.observation_space),
            "action_space": space_to_json(self.action_space),
            "network": self.network_spec,
            "lineage": self.lineage,
            "version": self.version,
            "files": dict(files or {}),
        }

    def save(self, path: str | Path) -> Path:
        """Write the bundle into directory ``path`` (created if needed); returns it."""
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        try:  # fail on bad metadata before writing anything
            json.dumps(self.describe(), default=_jsonable)
        except TypeError as exc:
            raise PolicyError(f"bundle: env_kwargs and lineage must be JSON data ({exc})") from exc
        torch.save(self.network.state_dict(), out / WEIGHTS_FILE)
        files = {WEIGHTS_FILE: file_sha256(out / WEIGHTS_FILE)}
        text = json.dumps(self.describe(files), indent=2, sort_keys=True, default=_jsonable)
        (out / BUNDLE_FILE).write_text(text + "\n")
        return out

    @classmethod
    def load(cls, path: str | Path) -> PolicyBundle:
        """Read a bundle directory written by :meth:`save`.

        Every file listed in ``bundle.json``'s ``files`` is checked against its sha256 first.

        Raises:
            PolicyError: when the directory holds no bundle, one this version cannot read, one
                without digests (format v1), or a file whose digest differs from the recorded one.
        """
        root = Path(path)
        meta_path = root / BUNDLE_FILE
        if not meta_path.is_file():
            raise PolicyError(
                f"{root}: not a policy bundle ({BUNDLE_FILE} missing); pass the directory "
                "PolicyBundle.save wrote"
            )
        try:
            meta = json.loads(meta_path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PolicyError(
                f"{meta_path}: not JSON ({exc}); the bundle is damaged: download or export it again"
            ) from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise PolicyError(
                f"{meta_path}: not a {FORMAT!r} file; pass the directory PolicyBundle.save wrote"
            )
        if int(meta.get("format_version", 0)) > FORMAT_VERSION:
            raise PolicyError(
                f"{meta_path}: format {meta.get('format')!r} v{meta.get('format_version')}; this "
                f"taktline reads {FORMAT!r} up to v{FORMAT_VERSION} (upgrade taktline)"
            )
        verify_files(root, meta.get("files"))
        network = build_network(meta["network"])
        state = torch.load(root / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        try:
            network.load_state_dict(state)
        except RuntimeError as exc:
            raise PolicyError(
                f"{root / WEIGHTS_FILE}: weights do not fit the network: {exc}"
            ) from exc
        network.eval()
        action_space = space_from_json(meta["action_space"])
        if not isinstance(action_space, gym.spaces.Discrete):
            raise PolicyError(f"{meta_path}: action_space must be Discrete, got {action_space}")
        return cls(
            env_id=meta["env_id"],
            env_kwargs=dict(meta.get("env_kwargs") or {}),
            spec_hash=meta.get("spec_hash"),
            observation_space=space_from_json(meta["observation_space"]),
            action_space=action_space,
            network=network,
            network_spec=meta["network"],
            lineage=dict(meta.get("lineage") or {}),
            version=meta.get("version"),
        )


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_files(root: Path, files: Any) -> None:
    """Check the files of bundle ``root`` against the sha256 digests of its ``bundle.json``.

    Raises:
        PolicyError: naming the file, the expected and the found digest, and the fix.
    """
    meta_path = root / BUNDLE_FILE
    if not isinstance(files, dict) or WEIGHTS_FILE not in files:
        raise PolicyError(
            f"{meta_path}: no sha256 digests of the bundle's files (format v1 or edited), so "
            "its weights cannot be verified; export it again with this taktline "
            "(PolicyBundle.save, `taktline train`) or download it again from the registry"
        )
    base = root.resolve()
    for rel, expected in sorted(files.items()):
        path = (root / str(rel)).resolve()
        if rel == BUNDLE_FILE or not path.is_relative_to(base) or path == base:
            raise PolicyError(f"{meta_path}: files: {rel!r} is not a file inside the bundle")
        if not path.is_file():
            raise PolicyError(
                f"{root / str(rel)}: missing (bundle.json lists it); the bundle is incomplete: "
                "download or export it again"
            )
        found = file_sha256(path)
        if found != expected:
            raise PolicyError(
                f"{root / str(rel)}: sha256 {found}, but bundle.json records {expected}; the "
                "file changed after the bundle was saved (tampered or damaged): do not use it, "
                "download it again from the registry or export it again"
            )


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON data")


def git_commit(cwd: str | Path | None = None) -> str | None:
    """The current git commit (``+dirty`` with uncommitted changes), or ``None`` outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def make_lineage(**fields: Any) -> dict[str, Any]:
    """Lineage with the git commit, creation time and taktline version filled in."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        tl_version = version("taktline")
    except PackageNotFoundError:
        tl_version = None
    out: dict[str, Any] = {
        "git_commit": git_commit(Path(__file__).resolve().parent),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "taktline_version": tl_version,
    }
    out.update(fields)
    return out


SHIPPED_DIR = "shipped"
"""Folder beside this module holding the policy bundles shipped with the package."""


def shipped_bundle(name: str) -> Path:
    """The folder of the policy bundle shipped as ``name`` (``taktline/agents/shipped/NAME``):
    a policy that won its verdict, so a fresh install can show it without training.

    Raises:
        PolicyError: when no bundle of that name ships with this install.
    """
    from importlib import resources

    root = Path(str(resources.files("taktline.agents").joinpath(SHIPPED_DIR)))
    folder = root / name
    if not (folder / BUNDLE_FILE).is_file():
        found = root.iterdir() if root.is_dir() else iter(())
        names = sorted(p.name for p in found if (p / BUNDLE_FILE).is_file()) or ["(none)"]
        raise PolicyError(
            f"shipped bundle {name!r}: not in this install; choose one of {', '.join(names)}"
        )
    return folder
