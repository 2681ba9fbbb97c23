"""A server started with authentication off outside ``env=local`` (``--insecure``) says so."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.serving_support import run_server


def test_insecure_server_warns_at_start_and_in_healthz(tmp_path: Path) -> None:
    env = {"TAKTLINE_AUTH": "false", "TAKTLINE_INSECURE": "true"}  # what --insecure sets
    with run_server({"line": "rule:SPT"}, tmp_path, env=env) as server:
        assert httpx.get(server.url + "/healthz").json() == {"status": "ok", "insecure": True}
        assert "authentication is OFF in env=production" in server.log.read_text()
        r = httpx.get(server.url + "/v1/policies")  # no key needed: that is what it warns of
        assert r.status_code == 200
