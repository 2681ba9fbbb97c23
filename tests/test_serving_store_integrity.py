"""The model store trusts nothing it did not verify: tampered cached weights, pointer files aimed
elsewhere and deleted aliases are not served (the fallback rule answers, flagged)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serving_support import (
    AUTH,
    dispatch_snapshots,
    log_bundle_model,
    make_bundle,
    run_server,
)

POLICIES = {"line": "models:/integrity-line@production"}
# a closed port: the registry is down (the restart can only use the cache)
DOWN = {
    "MLFLOW_TRACKING_URI": "http://127.0.0.1:9",
    "MLFLOW_REGISTRY_URI": "http://127.0.0.1:9",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "2",
}
GENEROUS = {"TAKTLINE_DECISION_TIMEOUT_S": "30"}  # fallback is False must not depend on timing


@pytest.fixture
def sqlite_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """A real MLflow registry in a SQLite file (this process and the servers share it);
    yields its URI and an experiment id."""
    import mlflow

    root = tmp_path / "registry"
    root.mkdir()
    uri = f"sqlite:///{root / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    # the store sets these defaults in os.environ: keep them from leaking into other tests
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    mlflow.set_tracking_uri(uri)
    exp = mlflow.create_experiment("integrity", artifact_location=(root / "art").as_uri())
    return uri, exp


def _register(tmp_path: Path, model: str, exp: str, seed: int, alias: str = "production") -> str:
    from mlflow.tracking import MlflowClient

    version = log_bundle_model(make_bundle(tmp_path / f"b{seed}", seed=seed), model, exp)
    MlflowClient().set_registered_model_alias(model, alias, version)
    return version


def _fill_cache(tmp_path: Path, policies: dict[str, str]) -> Any:
    """Load ``policies`` once in this process, as a server would: the cache now holds them."""
    from taktline.serving.settings import Settings
    from taktline.serving.store import ModelStore

    settings = Settings(env="local", policies=policies, cache_dir=tmp_path / "cache")
    store = ModelStore(settings)
    results = store.load_all()
    assert [r.error for r in results] == [None] * len(results), results
    return store


def _snapshot() -> dict[str, Any]:
    return next(s for s in dispatch_snapshots("bodyshop", 5, seed=3) if s["decision"])


def _flagged_fallback(client: httpx.Client, snapshot: dict[str, Any]) -> dict[str, Any]:
    r = client.post("/v1/policies/line/decide", json=snapshot)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["fallback"] is True and body["fallback_reason"].startswith("policy_unavailable")
    assert body["served_by"] == "rule:SPT" and body.get("model_version") is None
    return body


def _info(client: httpx.Client) -> dict[str, Any]:
    return dict(client.get("/v1/policies").json()[0])


def _flip_weight_bytes(cache: Path) -> Path:
    (weights,) = cache.rglob("weights.pt")
    data = bytearray(weights.read_bytes())
    data[-40] ^= 0xFF  # inside the tensor data: torch would load it without complaint
    weights.write_bytes(bytes(data))
    return weights


def test_tampered_cached_weights_are_not_served_from_registry_or_cache(
    tmp_path: Path, sqlite_registry: tuple[str, str]
) -> None:
    uri, exp = sqlite_registry
    _register(tmp_path, "integrity-line", exp, seed=1)
    _fill_cache(tmp_path, POLICIES)
    weights = _flip_weight_bytes(tmp_path / "cache")
    snapshot = _snapshot()
    up = {"MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri, **GENEROUS}
    for env in (up, {**DOWN, **GENEROUS}):  # the registry answers / the registry is down
        with run_server(POLICIES, tmp_path, env=env, ready=False) as server:
            with server.client(headers=AUTH) as c:
                _flagged_fallback(c, snapshot)
                info = _info(c)
                assert not info["loaded"] and info["source"] is None
                assert "failed verification" in info["error"] and "weights.pt" in info["error"]
                assert "delete" in info["error"]  # ... and says what to do
                assert c.get("/readyz").status_code == 503
            assert "failed verification" in server.log.read_text()
    assert weights.is_file()  # the evidence stays for the operator


def test_cache_pointer_aimed_at_another_folder_is_not_served(
    tmp_path: Path, sqlite_registry: tuple[str, str]
) -> None:
    _, exp = sqlite_registry
    version = _register(tmp_path, "integrity-line", exp, seed=1)
    _fill_cache(tmp_path, POLICIES)
    cache = tmp_path / "cache"
    (pointer,) = (cache / "pointers").glob("*.json")
    record = json.loads(pointer.read_text())
    # a complete, valid bundle folder, but outside the cache's models/ folder
    elsewhere = tmp_path / "elsewhere" / "999"
    shutil.copytree(record["path"], elsewhere)
    pointer.write_text(json.dumps({**record, "version": "999", "path": str(elsewhere)}))
    snapshot = _snapshot()
    with run_server(POLICIES, tmp_path, env={**DOWN, **GENEROUS}, ready=False) as server:
        with server.client(headers=AUTH) as c:
            _flagged_fallback(c, snapshot)
            assert not _info(c)["loaded"]
        assert "ignoring cache pointer" in server.log.read_text()
    # pointing the pointer back at its own folder serves the cache again (the test's control)
    pointer.write_text(json.dumps(record))
    down = {**DOWN, **GENEROUS}
    with run_server(POLICIES, tmp_path, env=down) as server, server.client(headers=AUTH) as c:
        assert (_info(c)["model_version"], _info(c)["source"]) == (version, "cache")


def test_cache_pointer_naming_another_versions_folder_is_ignored(
    tmp_path: Path, sqlite_registry: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from taktline.serving.settings import Settings
    from taktline.serving.store import ModelStore

    _, exp = sqlite_registry
    _register(tmp_path, "integrity-line", exp, seed=1)
    _fill_cache(tmp_path, POLICIES)
    (pointer,) = (tmp_path / "cache" / "pointers").glob("*.json")
    record = json.loads(pointer.read_text())
    import mlflow

    mlflow.set_tracking_uri(DOWN["MLFLOW_TRACKING_URI"])  # the registry is down from here on
    settings = Settings(env="local", policies=POLICIES, cache_dir=tmp_path / "cache")
    for forged in (
        {**record, "version": "999"},  # version 1's folder claimed as version 999
        {**record, "path": str(Path(record["path"]) / "..")},  # the model's folder itself
        {**record, "version": "../1"},
    ):
        pointer.write_text(json.dumps(forged))
        store = ModelStore(settings)
        (result,) = store.load_all()
        assert store.get("line") is None and result.error, forged
    pointer.write_text(json.dumps(record))  # control: the genuine pointer is served
    store = ModelStore(settings)
    store.load_all()
    loaded = store.get("line")
    assert loaded is not None and loaded.source == "cache"


@pytest.mark.slow  # a real mlflow server and three serving starts
def test_deleted_alias_stops_being_served_and_a_restart_does_not_serve_the_cache(
    tmp_path: Path, mlflow_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    mlflow.set_tracking_uri(mlflow_server)
    model = "integrity-deleted-alias"
    exp = mlflow.create_experiment(f"{model}-{tmp_path.name}")
    version = _register(tmp_path, model, exp, seed=2)
    policies = {"line": f"models:/{model}@production"}
    snapshot = _snapshot()
    env = {"MLFLOW_TRACKING_URI": mlflow_server, "MLFLOW_REGISTRY_URI": mlflow_server, **GENEROUS}
    with run_server(policies, tmp_path, env=env) as server, server.client(headers=AUTH) as c:
        assert (_info(c)["model_version"], _info(c)["source"]) == (version, "registry")
        assert c.post("/v1/policies/line/decide", json=snapshot).json()["fallback"] is False
        MlflowClient().delete_registered_model_alias(model, "production")
        reload = c.post("/v1/policies/line/reload").json()
        assert reload["model_version"] is None and reload["previous_version"] == version
        assert "no models:/" in reload["error"]
        _flagged_fallback(c, snapshot)
        assert not _info(c)["loaded"] and c.get("/readyz").status_code == 503
    # a restart, the registry answering (the alias is gone), and one with the registry down
    for restart_env in (env, {**DOWN, **GENEROUS}):
        restart = run_server(policies, tmp_path, env=restart_env, ready=False)
        with restart as server, server.client(headers=AUTH) as c:
            _flagged_fallback(c, snapshot)
            assert not _info(c)["loaded"]
