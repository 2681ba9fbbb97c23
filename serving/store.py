"""The model store: the configured policies, loaded from the MLflow registry or bundle paths.

* Registry references (``models:/NAME@ALIAS``) are resolved to a version, downloaded once into
  ``cache_dir`` and remembered there, so a restart serves the last version without the registry.
* :meth:`ModelStore.refresh` checks the alias again and, when it moved, loads the new version
  *beside* the old one and swaps it in with one assignment: a request holds the
  :class:`LoadedPolicy` it started with, so nothing is dropped or mixed during a reload.
* Only references from :class:`~taktline.serving.settings.Settings` are ever loaded; the API
  addresses policies by name.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, cast

import numpy as np

from taktline.errors import PolicyError
from taktline.serving.settings import PolicyConfig, Settings

log = logging.getLogger("taktline.serving")

Source = Literal["registry", "cache", "path"]


class Bundle(Protocol):
    """What serving uses of :class:`taktline.agents.bundle.PolicyBundle`."""

    env_id: str
    env_kwargs: dict[str, Any]
    spec_hash: str | None
    observation_space: Any
    action_space: Any
    lineage: dict[str, Any]
    version: str | None

    def act(
        self, obs: np.ndarray, mask: np.ndarray | None = None, deterministic: bool = True
    ) -> np.ndarray: ...

    def act_one(self, obs: np.ndarray, mask: np.ndarray) -> int: ...


class Codec(Protocol):
    """What serving uses of :func:`taktline.envs.encoding.make_codec`'s codec."""

    observation_space: Any
    action_space: Any

    def encode(self, snapshot: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]: ...

    def decode(self, snapshot: dict[str, Any], action: int) -> dict[str, Any]: ...


@dataclass(frozen=True)
class LoadedPolicy:
    """One loaded version of a configured policy (immutable: reloads replace it whole)."""

    name: str
    config: PolicyConfig
    bundle: Bundle
    codec: Codec
    version: str
    source: Source
    alias: str | None = None
    model_name: str | None = None
    loaded_at: float = field(default_factory=time.time)

    @property
    def n_actions(self) -> int:
        return int(self.bundle.action_space.n)

    @property
    def flat_space(self) -> Any:
        """The observation space without a Dict wrapper (``{"observations", "action_mask"}``)."""
        space = self.bundle.observation_space
        spaces = getattr(space, "spaces", None)
        return spaces["observations"] if isinstance(spaces, dict) else space

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.flat_space.shape)

    @property
    def size_agnostic(self) -> bool:
        """Whether the network takes observations of any width (e.g. larger job shops)."""
        return bool(getattr(self.bundle, "size_agnostic", False))

    @property
    def fast(self) -> bool:
        """Whether one decision is a small, bounded computation (the numpy MLP kernel): safe
        to run on the event loop without a worker thread."""
        return bool(getattr(self.bundle, "frozen", False))


@dataclass(frozen=True)
class ReloadResult:
    """What a refresh did."""

    name: str
    changed: bool
    version: str | None
    previous: str | None
    source: Source | None
    error: str | None = None


def load_bundle_dir(path: Path) -> Bundle:
    """Load a policy bundle from a directory (or from an MLflow model directory holding one)."""
    from taktline.agents.bundle import PolicyBundle
    from taktline.agents.policies import find_bundle

    # frozen: served weights never change, so an MLP runs on its numpy kernel (~10x faster)
    return cast(Bundle, PolicyBundle.load(find_bundle(path)).freeze())


def make_codec_for(bundle: Bundle) -> Codec:
    """The codec of the bundle's environment (the same encode/decode as in training)."""
    from taktline.envs.encoding import make_codec

    return cast(Codec, make_codec(bundle.env_id, bundle.env_kwargs))


class ModelStore:
    """The configured policies, each at its current version.

    Args:
        settings: serving settings (policies, cache directory).
        loader: bundle loader from a local directory (tests and tools may pass another).
    """

    def __init__(
        self, settings: Settings, loader: Callable[[Path], Bundle] = load_bundle_dir
    ) -> None:
        self.settings = settings
        self.loader = loader
        self.cache_dir = Path(settings.cache_dir).expanduser()
        self._current: dict[str, LoadedPolicy] = {}
        self._locks = {name: threading.Lock() for name in settings.policies}
        self.errors: dict[str, str] = {}
        # A registry that does not answer must not stall startup for minutes of retries.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")

    # ---- reading -----------------------------------------------------------------------
    def names(self) -> list[str]:
        """Configured policy names, in configuration order."""
        return list(self.settings.policies)

    def get(self, name: str) -> LoadedPolicy | None:
        """The current version of ``name`` (``None`` while it could not be loaded)."""
        return self._current.get(name)

    def ready(self) -> bool:
        """Whether every configured policy is loaded."""
        return all(name in self._current for name in self.settings.policies)

    # ---- loading -----------------------------------------------------------------------
    def load_all(self) -> list[ReloadResult]:
        """Load (or refresh) every configured policy; failures are recorded, not raised."""
        return [self.refresh(name) for name in self.settings.policies]

    def refresh(self, name: str) -> ReloadResult:
        """Bring ``name`` to the version its reference points at now; swap only on change."""
        config = self.settings.policies.get(name)
        if config is None:
            raise PolicyError(f"policy {name!r} is not configured")
        with self._locks[name]:
            old = self._current.get(name)
            previous = old.version if old else None
            try:
                new = self._load(name, config, old)
            except Exception as exc:  # keep serving the old version (or the fallback rule)
                self.errors[name] = f"{type(exc).__name__}: {exc}"
                log.warning("policy %s: load failed: %s", name, self.errors[name])
                return ReloadResult(
                    name, False, previous, previous, old.source if old else None, self.errors[name]
                )
            self.errors.pop(name, None)
            if new is old:
                return ReloadResult(name, False, previous, previous, old.source)
            self._current[name] = new  # the atomic swap
            log.info("policy %s: now version %s (%s)", name, new.version, new.source)
            return ReloadResult(name, True, new.version, previous, new.source)

    def _load(self, name: str, config: PolicyConfig, old: LoadedPolicy | None) -> LoadedPolicy:
        registry = config.registry
        if registry is None:
            if old is not None:
                return old  # a bundle path does not move; reload it by restarting
            bundle = self.loader(Path(config.ref).expanduser())
            version = str(bundle.version or "local")
            return self._wrap(name, config, bundle, version, "path")
        model_name, alias, pinned = registry
        try:
            version = pinned or self._resolve_alias(model_name, alias or "")
        except Exception as exc:
            if old is not None:
                raise
            cached = self._from_cache(name, config)
            if cached is None:
                raise PolicyError(
                    f"policy {name!r}: registry unreachable ({type(exc).__name__}: {exc}) "
                    f"and no cached version in {self.cache_dir}"
                ) from exc
            log.warning("policy %s: registry unreachable, serving cached version", name)
            return cached
        if old is not None and old.version == version and old.source == "registry":
            return old
        path = self._download(model_name, version)
        bundle = self.loader(path)
        self._write_pointer(name, config, version, path)
        return self._wrap(name, config, bundle, version, "registry", alias, model_name)

    def _wrap(
        self,
        name: str,
        config: PolicyConfig,
        bundle: Bundle,
        version: str,
        source: Source,
        alias: str | None = None,
        model_name: str | None = None,
    ) -> LoadedPolicy:
        if getattr(bundle.action_space, "n", None) is None:
            raise PolicyError(f"policy {name!r}: serving needs a Discrete action space")
        codec = make_codec_for(bundle)
        return LoadedPolicy(name, config, bundle, codec, version, source, alias, model_name)

    # ---- registry and cache ------------------------------------------------------------
    @staticmethod
    def _resolve_alias(model_name: str, alias: str) -> str:
        from mlflow.tracking import MlflowClient

        return str(MlflowClient().get_model_version_by_alias(model_name, alias).version)

    def _download(self, model_name: str, version: str) -> Path:
        import mlflow

        target = self.cache_dir / "models" / _safe(model_name) / version
        if (target / ".complete").is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=target.parent))
        try:
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{model_name}/{version}", dst_path=str(tmp)
            )
            (tmp / ".complete").write_text(f"models:/{model_name}/{version}\n")
            if target.exists():
                shutil.rmtree(target)
            tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target

    def _pointer(self, name: str) -> Path:
        return self.cache_dir / "pointers" / f"{_safe(name)}.json"

    def _write_pointer(self, name: str, config: PolicyConfig, version: str, path: Path) -> None:
        pointer = self._pointer(name)
        pointer.parent.mkdir(parents=True, exist_ok=True)
        tmp = pointer.with_suffix(".tmp")
        tmp.write_text(json.dumps({"ref": config.ref, "version": version, "path": str(path)}))
        tmp.replace(pointer)

    def _from_cache(self, name: str, config: PolicyConfig) -> LoadedPolicy | None:
        pointer = self._pointer(name)
        if not pointer.is_file():
            return None
        record = json.loads(pointer.read_text())
        if record.get("ref") != config.ref:
            return None  # cached for another reference: never serve it for this one
        path = Path(record["path"])
        if not (path / ".complete").is_file():
            return None
        bundle = self.loader(path)
        registry = config.registry
        alias, model_name = (registry[1], registry[0]) if registry else (None, None)
        return self._wrap(name, config, bundle, str(record["version"]), "cache", alias, model_name)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
