"""Serving settings and security helpers (no server needed)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from taktline.serving.security import key_matches
from taktline.serving.settings import PolicyConfig, Settings


def test_auth_is_on_outside_local_and_refuses_to_start_without_keys() -> None:
    with pytest.raises(ValidationError, match="api_keys"):
        Settings(env="production")
    assert Settings(env="production", api_keys=["k"]).auth_enabled
    assert not Settings(env="local").auth_enabled
    assert not Settings(env="dev").auth_enabled


def test_policies_read_from_environment_with_shorthand(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAKTLINE_ENV", "local")
    monkeypatch.setenv(
        "TAKTLINE_POLICIES",
        '{"a": "models:/a@production", "b": {"ref": "/srv/b", "fallback_rule": "edd",'
        ' "shadow": true}}',
    )
    s = Settings()
    assert s.policies["a"] == PolicyConfig(ref="models:/a@production")
    assert s.policies["a"].registry == ("a", "production", None)
    assert s.policies["b"].fallback_rule == "EDD" and s.policies["b"].shadow
    assert s.policies["b"].registry is None


@pytest.mark.parametrize(
    "ref", ["runs:/abc/model", "http://evil.example/m", "models:/x", "s3://bucket/m", "models:x"]
)
def test_only_registry_aliases_versions_or_paths_are_accepted(ref: str) -> None:
    with pytest.raises(ValidationError, match="ref"):
        PolicyConfig(ref=ref)


def test_unknown_fallback_rule_names_the_choices() -> None:
    with pytest.raises(ValidationError, match="SPT"):
        PolicyConfig(ref="/b", fallback_rule="FASTEST")


def test_policy_names_must_be_url_safe() -> None:
    with pytest.raises(ValidationError, match="policy name"):
        Settings(env="local", policies={"../x": "/b"})


def test_key_matching_checks_every_key() -> None:
    keys = [b"alpha", b"beta"]
    assert key_matches("beta", keys)
    assert not key_matches("bet", keys)
    assert not key_matches("", keys)
