"""Serving settings: one ``Settings(BaseSettings)`` read from ``TAKTLINE_*`` environment variables.

Policies are a mapping from the name clients use to a :class:`PolicyConfig`; the environment
form is JSON, and a bare string is shorthand for ``{"ref": ...}``::

    TAKTLINE_ENV=production
    TAKTLINE_API_KEYS='["k-1", "k-2"]'
    TAKTLINE_POLICIES='{"bodyshop": {"ref": "models:/bodyshop@production",
                                     "fallback_rule": "SPT", "shadow": true},
                        "serial5": "/srv/bundles/serial5"}'

Only these configured references are ever loaded: clients name a policy, never a URI or a path.

>>> s = Settings(env="local", policies={"p": "models:/p@production"})
>>> s.policies["p"].fallback_rule, s.auth_enabled
('SPT', False)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from taktline.agents.rules import get_release_rule, get_rule
from taktline.errors import PolicyError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[A-Za-z0-9_-]+)$")
_MODELS_VERSION_URI = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)$")
LOCAL_ENVS = ("local", "dev")


class PolicyConfig(BaseModel):
    """One served policy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ref: str
    """``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` or the path of a bundle directory."""
    fallback_rule: str = "SPT"
    """Dispatching rule used when the policy cannot answer (and the incumbent in shadow mode)."""
    fallback_release: str = "IMMEDIATE"
    """Release rule for release decisions: ``IMMEDIATE``, ``CONWIP(w)`` or ``KANBAN(cards)``."""
    shadow: bool = False
    """Serve the rule's decision and only log what the policy would have done."""

    @field_validator("ref")
    @classmethod
    def _check_ref(cls, ref: str) -> str:
        ref = ref.strip()
        if ref.startswith("models:/"):
            if not (_MODELS_URI.match(ref) or _MODELS_VERSION_URI.match(ref)):
                raise ValueError(
                    f"expected models:/NAME@ALIAS or models:/NAME/VERSION, got {ref!r}"
                )
        elif "://" in ref or ref.startswith(("runs:/", "models:")):
            raise ValueError(f"expected a models:/ URI or a bundle directory, got {ref!r}")
        return ref

    @field_validator("fallback_rule")
    @classmethod
    def _check_rule(cls, rule: str) -> str:
        try:
            return get_rule(rule).name
        except PolicyError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("fallback_release")
    @classmethod
    def _check_release(cls, rule: str) -> str:
        try:
            get_release_rule(rule)
        except PolicyError as exc:
            raise ValueError(str(exc)) from None
        return rule.strip().upper()

    @property
    def registry(self) -> tuple[str, str | None, str | None] | None:
        """``(model name, alias, version)`` for a ``models:/`` reference, else ``None``."""
        m = _MODELS_URI.match(self.ref)
        if m:
            return m["name"], m["alias"], None
        m = _MODELS_VERSION_URI.match(self.ref)
        if m:
            return m["name"], None, m["version"]
        return None


class Settings(BaseSettings):
    """Everything the serving app reads from its environment (prefix ``TAKTLINE_``)."""

    model_config = SettingsConfigDict(env_prefix="TAKTLINE_", extra="ignore")

    env: Literal["local", "dev", "staging", "production"] = "production"
    """Deployment environment; authentication is on everywhere except ``local`` and ``dev``."""
    policies: dict[str, PolicyConfig] = Field(default_factory=dict)
    """Served policies by the name clients use in ``/v1/policies/{name}/...``."""
    api_keys: list[SecretStr] = Field(default_factory=list)
    """Bearer tokens accepted on ``/v1/*`` (compared in constant time)."""
    auth: bool | None = None
    """Force authentication on or off; ``None`` follows ``env``."""
    max_request_bytes: int = Field(default=1_000_000, ge=1_024)
    """Larger request bodies get 413."""
    fast_path: bool = True
    """Answer valid, authorized ``/decide`` and ``/act`` requests without the framework's
    routing (:mod:`taktline.serving.fastpath`; same answers, about half the time)."""
    max_batch: int = Field(default=4_096, ge=1)
    """Most observations in one ``/act`` request."""
    decision_timeout_s: float = Field(default=0.25, gt=0)
    """A ``/decide`` policy answer that takes longer is abandoned for the fallback rule."""
    policy_execution: Literal["auto", "thread", "inline"] = "auto"
    """``thread``: each ``/decide`` forward pass runs in a worker thread and is abandoned at the
    timeout (a hung policy cannot stall the server). ``inline``: it runs on the event loop
    (no thread hand-off, the lowest latency on a busy CPU) and an answer that took longer than
    the timeout is replaced by the rule afterwards; for small, well-behaved networks.
    ``auto``: inline for policies on the numpy MLP kernel (tens of microseconds, bounded),
    a thread for the rest (attention networks, torch-only layers)."""
    act_timeout_s: float = Field(default=2.0, gt=0)
    """A ``/act`` batch that takes longer is answered 503 (it has no rule to fall back to)."""
    poll_interval_s: float = Field(default=30.0, ge=0)
    """How often registry aliases are checked for a new version; 0 turns polling off."""
    cache_dir: Path = Path.home() / ".cache" / "taktline" / "serving"
    """Downloaded registry models, so a restart works without the registry."""
    torch_threads: int = Field(default=1, ge=1)
    """Intra-op threads of each forward pass, torch's and numpy's BLAS (small networks are
    fastest on one)."""

    @field_validator("policies", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: {"ref": v} if isinstance(v, str) else v for k, v in value.items()}
        return value

    @field_validator("policies")
    @classmethod
    def _check_names(cls, value: dict[str, PolicyConfig]) -> dict[str, PolicyConfig]:
        for name in value:
            if not _NAME.match(name):
                raise ValueError(
                    f"policy name {name!r}: use 1-64 letters, digits, '_', '.', '-' "
                    "(it appears in URLs)"
                )
        return value

    @model_validator(mode="after")
    def _keys_when_auth(self) -> Settings:
        if self.auth_enabled and not self.api_keys:
            raise ValueError(
                f"api_keys: authentication is on (env={self.env!r}) but no key is set; "
                "set TAKTLINE_API_KEYS='[\"...\"]', or TAKTLINE_ENV=local for development"
            )
        return self

    @property
    def auth_enabled(self) -> bool:
        """Whether ``/v1/*`` needs a bearer key."""
        return self.auth if self.auth is not None else self.env not in LOCAL_ENVS
