"""The same app as a Ray Serve deployment with two replicas on a real local Ray."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import ray

from taktline.serving.settings import Settings
from tests.serving_support import API_KEY, AUTH, dispatch_snapshots, free_port, make_bundle


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        from ray import serve

        serve.shutdown()
        ray.shutdown()


@pytest.mark.ray
def test_ray_serve_replicas_answer_decide_and_act_like_uvicorn(
    local_ray: None, tmp_path: Path
) -> None:
    from taktline.serving.ray_serve import run

    bundle = make_bundle(tmp_path / "b", "serial5", max_queue=4, version="3")
    settings = Settings(
        env="production",
        api_keys=[API_KEY],
        policies={"serial5": str(bundle)},
        cache_dir=tmp_path / "cache",
        poll_interval_s=0,
        decision_timeout_s=10,  # a loaded machine must not turn the policy into a fallback
    )
    port = free_port()
    run(settings, host="127.0.0.1", port=port, replicas=2, blocking=False)
    snaps = dispatch_snapshots("serial5", 6, seed=2)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30.0) as c:
        assert c.post("/v1/policies/serial5/decide", json=snaps[0]).status_code == 401
        for snap in snaps:
            r = c.post("/v1/policies/serial5/decide", json=snap, headers=AUTH)
            assert r.status_code == 200, r.text
            assert r.json()["served_by"] == "policy:serial5@3"
        info = c.get("/v1/policies", headers=AUTH).json()[0]
        width, n = info["observation_shape"][0], info["n_actions"]
        body = {"observations": [[0.0] * width] * 8, "masks": [[True] + [False] * (n - 1)] * 8}
        r = c.post("/v1/policies/serial5/act", json=body, headers=AUTH)
        assert r.status_code == 200 and r.json()["actions"] == [0] * 8
        assert c.get("/readyz").status_code == 200
