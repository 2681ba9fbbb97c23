"""The model store: the configured policies, loaded from the MLflow registry or bundle paths.

* Registry references (``models:/NAME@ALIAS``) are resolved to a version, downloaded once into
  ``cache_dir/models`` and remembered there (a pointer file per policy), so a restart serves the
  last version when the registry cannot be reached.
* Nothing is served unverified: every load (registry download or cache) goes through
  :meth:`taktline.agents.bundle.PolicyBundle.load`, which checks each file's sha256; a pointer
  may only name the cache folder of its own version; whenever the registry answers, the version
  is the alias's version (the cache is never preferred over it); an alias or version the
  registry says no longer exists stops being served (the policy is unloaded: the fallback rule
  answers, flagged, and ``/readyz`` says not ready) and its pointer is removed, so a restart
  does not serve it either.
* :meth:`ModelStore.refresh` checks the alias again and, when it moved, loads the new version
  *beside* the old one and swaps it in with one assignment: a request holds the
  :class:`LoadedPolicy` it started with, so nothing is dropped or mixed during a reload.
  Decisions read the current version without any lock, so they never wait on a reload.
* Reloads are single-flight with a deadline: a refresh runs in its own thread, one per policy
  at a time. The caller that started it waits up to ``reload_timeout_s`` for it; a refresh asked
  while one is running returns at once, saying so (``in_progress``), instead of queueing a
  worker thread behind it. A registry that accepts connections and never answers therefore holds
  at most one caller, for at most the deadline; the load goes on in the background (bounded by
  MLflow's HTTP timeout) and the current version keeps serving.
* ``rule:NAME`` references serve a dispatching rule itself (no MLflow, no bundle).
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
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from taktline.agents.registry import RegistryEntryMissing, registry_version
from taktline.errors import PolicyError
from taktline.serving.settings import ServedPolicy, Settings

if TYPE_CHECKING:
    from taktline.agents.bundle import PolicyBundle
    from taktline.agents.policies import NeuralPolicy
    from taktline.envs.encoding import Codec

log = logging.getLogger("taktline.serving")

Source = Literal["registry", "cache", "path", "rule"]


@dataclass(frozen=True)
class LoadedPolicy:
    """One loaded version of a configured policy (immutable: reloads replace it whole).

    A network policy has its verified, frozen ``bundle`` and the ``codec`` of its environment
    (:func:`taktline.envs.encoding.make_codec`: the encode/decode it was trained with); a
    ``rule:NAME`` policy has neither, only ``rule``, and decides with
    :meth:`taktline.agents.policies.RulePolicy.decide`, like the fallback.
    """

    name: str
    config: ServedPolicy
    version: str
    source: Source
    bundle: PolicyBundle | None = None
    codec: Codec | None = None
    alias: str | None = None
    model_name: str | None = None
    loaded_at: float = field(default_factory=time.time)
    rule: str | None = None
    """The dispatching rule served as the policy (``rule:NAME``); it has no observation
    interface (no ``/act``)."""
    policy: NeuralPolicy | None = None
    """A network policy's :class:`~taktline.agents.policies.NeuralPolicy`: its ``decide`` is
    the decide path of evaluation, the CLI and serving alike."""

    @property
    def network(self) -> tuple[PolicyBundle, Codec]:
        """The bundle and codec of a network policy.

        Raises:
            PolicyError: for a rule, which decides from snapshots only.
        """
        if self.bundle is None or self.codec is None:
            raise PolicyError(
                f"policy {self.name!r} serves the rule {self.rule}, which decides from the "
                "snapshot itself; it has no observation interface"
            )
        return self.bundle, self.codec

    @property
    def n_actions(self) -> int:
        """Actions of the network (0 for a rule: it has no action space)."""
        return 0 if self.bundle is None else int(self.bundle.action_space.n)

    @property
    def flat_space(self) -> Any:
        """The observation space without a Dict wrapper (``{"observations", "action_mask"}``)."""
        space = self.network[0].observation_space
        spaces = getattr(space, "spaces", None)
        return spaces["observations"] if isinstance(spaces, dict) else space

    @property
    def obs_shape(self) -> tuple[int, ...]:
        """One observation's shape (``()`` for a rule: it observes snapshots, not vectors)."""
        if self.bundle is None:
            return ()
        return tuple(int(d) for d in self.flat_space.shape)

    @property
    def size_agnostic(self) -> bool:
        """Whether the network takes observations of any width (e.g. larger job shops)."""
        return self.bundle is not None and self.bundle.size_agnostic

    @property
    def fast(self) -> bool:
        """Whether one decision is a small, bounded computation (the numpy MLP kernel or a
        rule): safe to run on the event loop without a worker thread."""
        if self.rule is not None:  # a lookahead simulates: a worker thread, bounded in time
            return not self.rule.startswith("LOOKAHEAD(")
        return self.bundle is None or self.bundle.frozen


@dataclass(frozen=True)
class ReloadResult:
    """What a refresh did."""

    name: str
    changed: bool
    version: str | None
    previous: str | None
    source: Source | None
    error: str | None = None
    in_progress: bool = False
    """A reload was already running (or outlived the deadline): nothing was done now, and the
    version shown keeps serving until that reload ends."""


def load_bundle_dir(path: Path) -> PolicyBundle:
    """Load a policy bundle from a directory (or from an MLflow model directory holding one),
    verified (:meth:`~taktline.agents.bundle.PolicyBundle.load`) and frozen: served weights
    never change, so an MLP runs on its numpy kernel (~10x faster)."""
    from taktline.agents.bundle import PolicyBundle
    from taktline.agents.policies import find_bundle

    return PolicyBundle.load(find_bundle(path)).freeze()


class ModelStore:
    """The configured policies, each at its current version.

    Args:
        settings: serving settings (policies, cache directory).
        loader: bundle loader from a local directory (tests and tools may pass another).
    """

    def __init__(
        self, settings: Settings, loader: Callable[[Path], PolicyBundle] = load_bundle_dir
    ) -> None:
        self.settings = settings
        self.loader = loader
        self.cache_dir = Path(settings.cache_dir).expanduser()
        self._current: dict[str, LoadedPolicy] = {}
        self._guard = threading.Lock()  # guards _inflight only; never held during a load
        self._inflight: dict[str, Future[ReloadResult]] = {}
        self.errors: dict[str, str] = {}
        self.timeout_s = float(settings.reload_timeout_s)
        # A registry that does not answer must not stall startup for minutes of retries; this
        # bounds the background load, the deadline above bounds every caller.
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
        """Load (or refresh) every configured policy, all at once, waiting up to the deadline;
        failures are recorded, not raised."""
        started = [(name, self._start(name)[0]) for name in self.settings.policies]
        deadline = time.monotonic() + self.timeout_s
        return [self._wait(name, f, deadline - time.monotonic()) for name, f in started]

    def refresh(self, name: str) -> ReloadResult:
        """Bring ``name`` to the version its reference points at now; swap only on change.

        Single-flight: when a refresh of ``name`` is already running this returns at once with
        ``in_progress`` set (the caller does not wait for it); otherwise it starts one and waits
        up to ``reload_timeout_s`` for it (past that: ``in_progress``, and the load finishes in
        the background).
        """
        if name not in self.settings.policies:
            raise PolicyError(f"policy {name!r} is not configured")
        future, started = self._start(name)
        if not started:
            return self._busy(name, "a reload of this policy is already in progress")
        return self._wait(name, future, self.timeout_s)

    def _start(self, name: str) -> tuple[Future[ReloadResult], bool]:
        """The running refresh of ``name`` (``False``) or a new one, started (``True``)."""
        with self._guard:
            running = self._inflight.get(name)
            if running is not None:
                return running, False
            future: Future[ReloadResult] = Future()
            self._inflight[name] = future
        thread = threading.Thread(
            target=self._run, args=(name, future), name=f"taktline-reload-{name}", daemon=True
        )
        thread.start()
        return future, True

    def _run(self, name: str, future: Future[ReloadResult]) -> None:
        try:
            result = self._refresh_now(name)
        except BaseException as exc:  # never leave a waiter without an answer
            result = self._busy(name, f"{type(exc).__name__}: {exc}", in_progress=False)
            raise
        finally:
            with self._guard:
                self._inflight.pop(name, None)
            future.set_result(result)

    def _wait(self, name: str, future: Future[ReloadResult], timeout_s: float) -> ReloadResult:
        try:
            return future.result(timeout=max(timeout_s, 0.0))
        except FutureTimeout:
            return self._busy(
                name,
                f"no answer within {self.timeout_s:g} s (reload_timeout_s): the load goes on in "
                "the background; the current version keeps serving",
            )

    def _busy(self, name: str, message: str, in_progress: bool = True) -> ReloadResult:
        old = self._current.get(name)
        version = old.version if old else None
        source = old.source if old else None
        return ReloadResult(name, False, version, version, source, message, in_progress)

    def _refresh_now(self, name: str) -> ReloadResult:
        """One refresh (single-flight: only ever one per policy at a time)."""
        config = self.settings.policies[name]
        old = self._current.get(name)
        previous = old.version if old else None
        try:
            new = self._load(name, config, old)
        except RegistryEntryMissing as exc:  # the registry says it is gone: stop serving it
            self._current.pop(name, None)
            self._drop_pointer(name)
            self.errors[name] = f"{type(exc).__name__}: {exc}"
            log.warning("policy %s: %s; no longer served", name, exc)
            return ReloadResult(name, old is not None, None, previous, None, self.errors[name])
        except Exception as exc:  # keep serving the old version (or the fallback rule)
            self.errors[name] = f"{type(exc).__name__}: {exc}"
            log.warning("policy %s: load failed: %s", name, self.errors[name])
            return ReloadResult(
                name, False, previous, previous, old.source if old else None, self.errors[name]
            )
        self.errors.pop(name, None)
        if new is old:
            return ReloadResult(name, False, previous, previous, new.source)
        self._current[name] = new  # the atomic swap
        log.info("policy %s: now version %s (%s)", name, new.version, new.source)
        return ReloadResult(name, True, new.version, previous, new.source)

    def _load(self, name: str, config: ServedPolicy, old: LoadedPolicy | None) -> LoadedPolicy:
        if config.rule is not None:
            if old is not None:
                return old
            return LoadedPolicy(name, config, config.ref, "rule", rule=config.rule)
        registry = config.registry
        if registry is None:
            if old is not None:
                return old  # a bundle path does not move; reload it by restarting
            bundle = self.loader(Path(config.ref).expanduser())
            version = str(bundle.version or "local")
            return self._wrap(name, config, bundle, version, "path")
        model_name, alias, pinned = registry
        try:
            version = registry_version(model_name, alias, pinned)
        except RegistryEntryMissing:
            raise
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
        # the registry answered: serve its version, never the cache's if they differ
        if old is not None and old.version == version and old.source == "registry":
            return old
        path = self._download(model_name, version)
        bundle = self._load_cached(name, path, f"models:/{model_name}/{version}")
        self._write_pointer(name, config, version, path)
        return self._wrap(name, config, bundle, version, "registry", alias, model_name)

    def _wrap(
        self,
        name: str,
        config: ServedPolicy,
        bundle: PolicyBundle,
        version: str,
        source: Source,
        alias: str | None = None,
        model_name: str | None = None,
    ) -> LoadedPolicy:
        if getattr(bundle.action_space, "n", None) is None:
            raise PolicyError(f"policy {name!r}: serving needs a Discrete action space")
        from taktline.agents.policies import NeuralPolicy
        from taktline.envs.encoding import make_codec

        codec = make_codec(bundle.env_id, bundle.env_kwargs)
        policy = NeuralPolicy(bundle, name=f"{name}@{version}")
        return LoadedPolicy(
            name, config, version, source, bundle, codec, alias, model_name, policy=policy
        )

    # ---- cache ---------------------------------------------------------------------------
    def _load_cached(self, name: str, path: Path, what: str) -> PolicyBundle:
        """The bundle in cache folder ``path``, verified (a failure names the folder)."""
        try:
            return self.loader(path)
        except PolicyError as exc:
            raise PolicyError(
                f"policy {name!r}: the cached copy of {what} in {path} failed verification: "
                f"{exc}. Not served; delete {path} and reload to download it again"
            ) from exc

    def _download(self, model_name: str, version: str) -> Path:
        import mlflow

        target = self._version_dir(model_name, version)
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

    def _version_dir(self, model_name: str, version: str) -> Path:
        return self.cache_dir / "models" / _safe(model_name) / version

    def _drop_pointer(self, name: str) -> None:
        try:
            self._pointer(name).unlink(missing_ok=True)
        except OSError as exc:
            log.warning("policy %s: could not remove the cache pointer: %s", name, exc)

    def _write_pointer(self, name: str, config: ServedPolicy, version: str, path: Path) -> None:
        pointer = self._pointer(name)
        pointer.parent.mkdir(parents=True, exist_ok=True)
        tmp = pointer.with_suffix(".tmp")
        tmp.write_text(json.dumps({"ref": config.ref, "version": version, "path": str(path)}))
        tmp.replace(pointer)

    def _from_cache(self, name: str, config: ServedPolicy) -> LoadedPolicy | None:
        """The version the pointer of ``name`` names, if it is one this store downloaded."""
        registry = config.registry
        pointer = self._pointer(name)
        if registry is None or not pointer.is_file():
            return None
        model_name, alias, pinned = registry
        try:
            record = json.loads(pointer.read_text())
            ref, version, path = record["ref"], str(record["version"]), Path(record["path"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("policy %s: ignoring unreadable cache pointer %s: %s", name, pointer, exc)
            return None
        if ref != config.ref:
            return None  # cached for another reference: never serve it for this one
        # the pointer may only name this store's folder of that very version, inside models/
        models = (self.cache_dir / "models").resolve()
        expected = self._version_dir(model_name, version).resolve()
        if (
            not version.isdigit()
            or (pinned is not None and version != pinned)
            or not expected.is_relative_to(models)
            or path.resolve() != expected
        ):
            log.warning(
                "policy %s: ignoring cache pointer %s: version %r at %s is not this cache's "
                "folder for it (%s)",
                name,
                pointer,
                version,
                path,
                self._version_dir(model_name, version),
            )
            return None
        if not (expected / ".complete").is_file():
            return None
        bundle = self._load_cached(name, expected, f"models:/{model_name}/{version}")
        return self._wrap(name, config, bundle, version, "cache", alias, model_name)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
