"""Fallbacks that need their own server: a policy too slow for the timeout, one that won't load."""

from __future__ import annotations

import json
from pathlib import Path

from tests.serving_support import AUTH, dispatch_snapshots, make_bundle, metric_value, run_server


def test_timeout_and_unloadable_policy_fall_back_to_the_rule(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b", "serial5", max_queue=4, version="2")
    broken = tmp_path / "broken"
    broken.mkdir()  # no bundle.json: the policy cannot load
    policies = {"slow": str(bundle), "broken": str(broken)}
    env = {
        "TAKTLINE_DECISION_TIMEOUT_S": "0.000001",  # no policy answers in a microsecond
        "TAKTLINE_POLICIES": json.dumps({"slow": {"ref": str(bundle), "fallback_rule": "LPT"}}),
    }
    snap = dispatch_snapshots("serial5", 1, seed=4)[0]
    server_cm = run_server(policies, tmp_path, env=env, ready=False)
    with server_cm as server, server.client(headers=AUTH) as c:
        ready = c.get("/readyz")
        assert ready.status_code == 503 and list(ready.json()["missing"]) == ["broken"]

        body = c.post("/v1/policies/slow/decide", json=snap).json()
        assert body["fallback"] is True and body["served_by"] == "rule:LPT"
        assert body["fallback_reason"].startswith("timeout")
        assert body["model_version"] == "2"  # loaded, just too slow

        body = c.post("/v1/policies/broken/decide", json=snap).json()
        assert body["fallback"] is True and body["served_by"] == "rule:SPT"
        assert body["fallback_reason"].startswith("policy_unavailable")
        assert "model_version" not in body

        r = c.post("/v1/policies/broken/act", json={"observations": [[0.0]]})
        assert r.status_code == 503 and "bundle.json" in r.json()["detail"]
        info = {p["name"]: p for p in c.get("/v1/policies").json()}
        assert not info["broken"]["loaded"] and "bundle.json" in info["broken"]["error"]

        text = c.get("/metrics").text
        assert metric_value(text, "taktline_fallbacks_total", reason="timeout") == 1
        assert metric_value(text, "taktline_fallbacks_total", reason="policy_unavailable") == 1
