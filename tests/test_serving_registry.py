"""Serving from a real MLflow registry (SQLite store): alias moves, reloads, restarts from cache."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serving_support import (
    AUTH,
    dispatch_snapshots,
    log_bundle_model,
    make_bundle,
    metric_value,
    run_server,
)

MODEL = "bodyshop-dispatch"


def _set_alias(version: str) -> None:
    from mlflow.tracking import MlflowClient

    MlflowClient().set_registered_model_alias(MODEL, "production", version)


def _version(client: httpx.Client) -> tuple[str | None, str | None]:
    info = client.get("/v1/policies").json()[0]
    return info["model_version"], info["source"]


def test_alias_moves_reload_without_dropping_and_restart_from_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    registry = tmp_path / "registry"
    registry.mkdir()
    uri = f"sqlite:///{registry / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    exp = mlflow.create_experiment("serving", artifact_location=(registry / "art").as_uri())
    v1 = log_bundle_model(make_bundle(tmp_path / "b1", seed=1), MODEL, exp)
    _set_alias(v1)
    snapshots = dispatch_snapshots("bodyshop", 12, seed=5)
    snapshots = [s for s in snapshots if s["decision"] is not None][:10]
    policies = {"line": f"models:/{MODEL}@production"}
    env = {
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_REGISTRY_URI": uri,
        "TAKTLINE_POLL_INTERVAL_S": "1",
        "TAKTLINE_DECISION_TIMEOUT_S": "30",  # fallback is False must not depend on timing
    }

    with run_server(policies, tmp_path, env=env) as server, server.client(headers=AUTH) as c:
        assert _version(c) == (v1, "registry")
        body = c.post("/v1/policies/line/decide", json=snapshots[0]).json()
        assert body["served_by"] == f"policy:line@{v1}"

        v2 = log_bundle_model(make_bundle(tmp_path / "b2", seed=2), MODEL, exp)
        _set_alias(v2)
        # Requests keep flowing while the new version is loaded and swapped in.
        answers: list[tuple[int, Any]] = []
        stop = threading.Event()

        def hammer() -> None:
            with server.client(headers=AUTH) as h:
                while not stop.is_set():
                    for snap in snapshots:
                        r = h.post("/v1/policies/line/decide", json=snap)
                        answers.append((r.status_code, r.json().get("model_version")))

        worker = threading.Thread(target=hammer)
        worker.start()
        try:
            reload = c.post("/v1/policies/line/reload").json()
            # answers asked after the swap come from v2: wait for a few (poll, no fixed sleep)
            seen = len(answers)
            deadline = time.monotonic() + 30
            while len(answers) < seen + 5 and time.monotonic() < deadline and worker.is_alive():
                time.sleep(0.05)
        finally:
            stop.set()
            worker.join()
        assert reload["model_version"] == v2
        assert reload["previous_version"] == v1 or reload["changed"] is False  # poll may win
        assert answers and all(code == 200 for code, _ in answers)
        assert {v for _, v in answers} <= {v1, v2} and answers[-1][1] == v2
        assert _version(c) == (v2, "registry")

        _set_alias(v1)  # the poller picks the move up on its own
        deadline = time.monotonic() + 20
        while _version(c)[0] != v1 and time.monotonic() < deadline:
            time.sleep(0.3)
        assert _version(c) == (v1, "registry")
        text = c.get("/metrics").text
        assert metric_value(text, "taktline_model_version", policy="line", source="registry") == 1
        assert metric_value(text, "taktline_reloads_total", policy="line", outcome="changed") >= 2

    shutil.rmtree(registry)  # the registry is gone: the restart serves the cached version
    # ... and its address now leads nowhere (a closed port), as when the registry server is down
    down = {
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:9",
        "MLFLOW_REGISTRY_URI": "http://127.0.0.1:9",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "2",
        "TAKTLINE_POLL_INTERVAL_S": "0",
        "TAKTLINE_DECISION_TIMEOUT_S": "30",
    }
    with run_server(policies, tmp_path, env=down) as server, server.client(headers=AUTH) as c:
        assert _version(c) == (v1, "cache")
        body = c.post("/v1/policies/line/decide", json=snapshots[1]).json()
        assert body["served_by"] == f"policy:line@{v1}" and body["fallback"] is False
        reload = c.post("/v1/policies/line/reload").json()  # still unreachable: keep serving
        assert reload["error"] and reload["model_version"] == v1
        assert c.get("/readyz").status_code == 200
