"""Serving settings: one ``Settings(BaseSettings)`` read from ``TAKTLINE_*`` environment variables.

Policies are a mapping from the name clients use to a :class:`ServedPolicy`; the environment
form is JSON, and a bare string is shorthand for ``{"ref": ...}``::

    TAKTLINE_ENV=production
    TAKTLINE_API_KEYS='["k-1", "k-2"]'
    TAKTLINE_POLICIES='{"bodyshop": {"ref": "models:/bodyshop@production",
                                     "fallback_rule": "SPT", "shadow": true},
                        "serial5": "/srv/bundles/serial5"}'

Only these configured references are ever loaded: clients name a policy, never a URI or a path.
A reference ``rule:NAME`` (``rule:SAME``) serves a dispatching rule itself as the policy (the
demo does when no trained network beat the best rule).

``TAKTLINE_ENV`` is one of

* ``local`` — a developer's machine: authentication is off unless ``TAKTLINE_AUTH=true``;
* ``dev``, ``staging``, ``production`` — a deployment anyone on the network may reach:
  authentication is on and ``TAKTLINE_API_KEYS`` is required. Switching it off there
  (``TAKTLINE_AUTH=false``) refuses to start unless ``TAKTLINE_INSECURE=true`` (what
  ``taktline serve --insecure`` sets) says so on purpose; such a server warns at start and
  reports ``insecure: true`` in ``/healthz``.

>>> s = Settings(env="local", policies={"p": "models:/p@production", "r": "rule:same"})
>>> s.policies["p"].fallback_rule, s.policies["r"].rule, s.auth_enabled
('SPT', 'SAME', False)
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from taktline.agents.registry import parse_models_uri
from taktline.agents.rules import get_release_rule, get_rule
from taktline.errors import PolicyError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_RULE_PREFIX = "rule:"
LOCAL_ENVS = ("local",)
"""Environments where authentication is off by default (only a developer's own machine)."""


class ServedPolicy(BaseModel):
    """One served policy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ref: str
    """``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, the path of a bundle directory, or
    ``rule:NAME`` to serve a dispatching rule as the policy (``rule:LOOKAHEAD(base=SAME,
    horizon=60,k=8,line=bodyshop)``: the lookahead on twin forks of each posted snapshot)."""
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
        if ref[: len(_RULE_PREFIX)].lower() == _RULE_PREFIX:
            text = ref[len(_RULE_PREFIX) :].strip()
            try:
                if text.upper().startswith("LOOKAHEAD"):  # search on twin forks
                    from taktline.agents.lookahead import parse_config

                    return _RULE_PREFIX + parse_config(text).label()
                return _RULE_PREFIX + get_rule(text).name
            except PolicyError as exc:
                raise ValueError(f"{ref!r}: {exc}") from None
        if ref.startswith("models:/"):
            if parse_models_uri(ref) is None:
                raise ValueError(
                    f"expected models:/NAME@ALIAS or models:/NAME/VERSION, got {ref!r}"
                )
        elif "://" in ref or ref.startswith(("runs:/", "models:")):
            raise ValueError(
                f"expected a models:/ URI, a bundle directory or rule:NAME, got {ref!r}"
            )
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
    def rule(self) -> str | None:
        """The rule's name for a ``rule:NAME`` reference (served as the policy), else ``None``."""
        return self.ref[len(_RULE_PREFIX) :] if self.ref.startswith(_RULE_PREFIX) else None

    @property
    def registry(self) -> tuple[str, str | None, str | None] | None:
        """``(model name, alias, version)`` for a ``models:/`` reference, else ``None``."""
        return parse_models_uri(self.ref)


class Settings(BaseSettings):
    """Everything the serving app reads from its environment (prefix ``TAKTLINE_``)."""

    # hide_input_in_errors: a malformed TAKTLINE_API_KEYS must not end up in a log
    model_config = SettingsConfigDict(
        env_prefix="TAKTLINE_", extra="ignore", hide_input_in_errors=True
    )

    env: Literal["local", "dev", "staging", "production"] = "production"
    """Deployment environment; authentication is on everywhere except ``local`` (see the
    module docstring)."""
    policies: Annotated[dict[str, ServedPolicy], NoDecode] = Field(default_factory=dict)
    """Served policies by the name clients use in ``/v1/policies/{name}/...``."""
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    """Bearer tokens accepted on ``/v1/*`` (compared in constant time); in the environment a
    JSON list, ``TAKTLINE_API_KEYS='["k-1", "k-2"]'``."""
    auth: bool | None = None
    """Force authentication on or off; ``None`` follows ``env``. Off outside ``local`` needs
    ``insecure``."""
    insecure: bool = False
    """Allow authentication off outside ``env=local`` (``taktline serve --insecure``)."""
    reload_timeout_s: float = Field(default=10.0, gt=0)
    """The longest a reload (or the startup load) waits for the registry; a load still running
    then finishes in the background, and the current version keeps serving meanwhile."""
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

    @field_validator("api_keys", mode="before")
    @classmethod
    def _keys_from_json(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        fix = 'set TAKTLINE_API_KEYS to a JSON list of strings, e.g. \'["k-1", "k-2"]\''
        try:
            keys = json.loads(value) if value.strip() else []
        except json.JSONDecodeError:
            keys = None
        if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
            raise ValueError(
                f"not a JSON list of non-empty strings (a value of length {len(value)}, "
                f"not shown); {fix}"
            )
        return keys

    @field_validator("policies", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip() else {}
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"not JSON ({exc.msg} at character {exc.pos}); set TAKTLINE_POLICIES to a "
                    'JSON object, e.g. \'{"bodyshop": "models:/bodyshop@production"}\''
                ) from None
            if not isinstance(value, dict):
                raise ValueError(
                    f"expected a JSON object of name: reference, got {type(value).__name__}; "
                    'e.g. TAKTLINE_POLICIES=\'{"bodyshop": "models:/bodyshop@production"}\''
                )
        if isinstance(value, dict):
            return {k: {"ref": v} if isinstance(v, str) else v for k, v in value.items()}
        return value

    @field_validator("policies")
    @classmethod
    def _check_names(cls, value: dict[str, ServedPolicy]) -> dict[str, ServedPolicy]:
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
        if self.insecure_mode and not self.insecure:
            raise ValueError(
                f"auth: authentication is off (TAKTLINE_AUTH=false) in env={self.env!r}, so "
                "anyone who reaches the port can ask decisions and reload policies; set "
                "TAKTLINE_API_KEYS and drop TAKTLINE_AUTH=false, use TAKTLINE_ENV=local on a "
                "developer's machine, or start with `taktline serve --insecure` "
                "(TAKTLINE_INSECURE=true) to run without authentication on purpose"
            )
        return self

    @property
    def auth_enabled(self) -> bool:
        """Whether ``/v1/*`` needs a bearer key."""
        return self.auth if self.auth is not None else self.env not in LOCAL_ENVS

    @property
    def insecure_mode(self) -> bool:
        """Whether authentication is off outside ``env=local`` (allowed only with
        ``insecure``; the server warns at start and ``/healthz`` says ``insecure: true``)."""
        return not self.auth_enabled and self.env not in LOCAL_ENVS
