"""Serving settings and security helpers (no server needed)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from taktline.serving.security import key_matches
from taktline.serving.settings import ServedPolicy, Settings


def test_auth_is_on_outside_local_and_refuses_to_start_without_keys() -> None:
    with pytest.raises(ValidationError, match="api_keys"):
        Settings(env="production")
    assert Settings(env="production", api_keys=["k"]).auth_enabled
    assert not Settings(env="local").auth_enabled


def test_policies_read_from_environment_with_shorthand(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAKTLINE_ENV", "local")
    monkeypatch.setenv(
        "TAKTLINE_POLICIES",
        '{"a": "models:/a@production", "b": {"ref": "/srv/b", "fallback_rule": "edd",'
        ' "shadow": true}}',
    )
    s = Settings()
    assert s.policies["a"] == ServedPolicy(ref="models:/a@production")
    assert s.policies["a"].registry == ("a", "production", None)
    assert s.policies["b"].fallback_rule == "EDD" and s.policies["b"].shadow
    assert s.policies["b"].registry is None


@pytest.mark.parametrize(
    "ref", ["runs:/abc/model", "http://evil.example/m", "models:/x", "s3://bucket/m", "models:x"]
)
def test_only_registry_aliases_versions_or_paths_are_accepted(ref: str) -> None:
    with pytest.raises(ValidationError, match="ref"):
        ServedPolicy(ref=ref)


def test_unknown_fallback_rule_names_the_choices() -> None:
    with pytest.raises(ValidationError, match="SPT"):
        ServedPolicy(ref="/b", fallback_rule="FASTEST")


def test_policy_names_must_be_url_safe() -> None:
    with pytest.raises(ValidationError, match="policy name"):
        Settings(env="local", policies={"../x": "/b"})


def test_key_matching_checks_every_key() -> None:
    keys = [b"alpha", b"beta"]
    assert key_matches("beta", keys)
    assert not key_matches("bet", keys)
    assert not key_matches("", keys)


def test_dev_is_a_deployment_with_authentication_on() -> None:
    with pytest.raises(ValidationError, match="api_keys"):
        Settings(env="dev")
    assert Settings(env="dev", api_keys=["k"]).auth_enabled


@pytest.mark.parametrize("env", ["dev", "staging", "production"])
def test_auth_off_outside_local_refuses_without_the_insecure_switch(env: str) -> None:
    with pytest.raises(ValidationError, match=r"auth: authentication is off.*--insecure"):
        Settings(env=env, auth=False)
    s = Settings(env=env, auth=False, insecure=True)
    assert not s.auth_enabled and s.insecure_mode
    assert not Settings(env="local", auth=False).insecure_mode
    assert not Settings(env=env, api_keys=["k"], insecure=True).insecure_mode


def test_malformed_api_keys_are_a_clear_error_without_the_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for value in ("k-secret-value", '{"k": 1}', '["ok", ""]', "[1]"):
        monkeypatch.setenv("TAKTLINE_API_KEYS", value)
        with pytest.raises(ValidationError, match="api_keys") as info:
            Settings()
        assert "JSON list" in str(info.value) and value not in str(info.value)
    monkeypatch.setenv("TAKTLINE_API_KEYS", '["k-1", "k-2"]')
    assert [k.get_secret_value() for k in Settings().api_keys] == ["k-1", "k-2"]


def test_malformed_policies_json_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAKTLINE_ENV", "local")
    monkeypatch.setenv("TAKTLINE_POLICIES", "bodyshop=models:/b@production")
    with pytest.raises(ValidationError, match=r"policies[\s\S]*TAKTLINE_POLICIES"):
        Settings()


@pytest.mark.parametrize(
    ("env", "args", "expected"),
    [
        ({"TAKTLINE_API_KEYS": "k-secret-value"}, [], "api_keys: not a JSON list"),
        ({"TAKTLINE_API_KEYS": '["k"]', "TAKTLINE_AUTH": "false"}, [], "--insecure"),
        ({"TAKTLINE_ENV": "dev", "TAKTLINE_AUTH": "false"}, [], "--insecure"),
        ({"TAKTLINE_POLICIES": "{x"}, [], "policies: not JSON"),
        ({"TAKTLINE_ENV": "local"}, ["--policy", "p=rule:FASTEST"], "ref"),
    ],
)
def test_serve_turns_bad_settings_into_one_error_line(
    env: dict[str, str], args: list[str], expected: str
) -> None:
    import os

    base = {k: v for k, v in os.environ.items() if not k.startswith("TAKTLINE_")}
    cmd = [sys.executable, "-m", "taktline.cli_serve", "serve", "--policy", "p=rule:SAME", *args]
    out = subprocess.run(cmd, env={**base, **env}, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and out.stderr.startswith("error: "), out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and expected in out.stderr, out.stderr
    assert "k-secret-value" not in out.stderr


def test_rule_references_are_validated_and_normalised() -> None:
    config = ServedPolicy(ref="rule:same")
    assert config.ref == "rule:SAME" and config.rule == "SAME" and config.registry is None
    assert ServedPolicy(ref="models:/a@production").rule is None
    with pytest.raises(ValidationError, match="FASTEST"):
        ServedPolicy(ref="rule:FASTEST")
