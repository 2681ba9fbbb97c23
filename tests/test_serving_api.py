"""The serving API over real HTTP: a ``taktline serve`` subprocess (uvicorn) and httpx."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.serving_support import (
    AUTH,
    Server,
    crowded_snapshot,
    dispatch_snapshots,
    make_bundle,
    metric_value,
    run_server,
)

LINE = "bodyshop"
MAX_QUEUE = 6


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundle") / "b", LINE, MAX_QUEUE, version="7")


@pytest.fixture(scope="module")
def server(bundle_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("server")
    policies = {"bodyshop": str(bundle_path), "shadowed": str(bundle_path)}
    env = {"TAKTLINE_MAX_REQUEST_BYTES": "200000"}
    with run_server(policies, tmp, env=env, shadow=("shadowed",)) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client(headers=AUTH) as c:
        yield c


@pytest.fixture(scope="module")
def snapshots() -> list[dict[str, Any]]:
    snaps = dispatch_snapshots(LINE, 40, seed=3)
    return [s for s in snaps if len(_queue(s)) <= MAX_QUEUE]


def _queue(snapshot: dict[str, Any]) -> list[dict[str, Any]]:
    point = snapshot["decision"]
    return next(s["queue"] for s in snapshot["stations"] if s["name"] == point["station"])


def _in_process_decision(bundle_path: Path, snapshot: dict[str, Any]) -> dict[str, Any]:
    """The policy's own decide path, in process (torch, not serving's frozen numpy kernel)."""
    from taktline.agents.bundle import PolicyBundle
    from taktline.agents.policies import NeuralPolicy

    decision = NeuralPolicy(PolicyBundle.load(bundle_path)).decide(snapshot)
    return decision.model_dump(mode="json", exclude_none=True)


def test_decide_answers_a_waiting_job_with_the_policy_version(
    client: httpx.Client, snapshots: list[dict[str, Any]], bundle_path: Path
) -> None:
    assert len(snapshots) >= 10
    for snap in snapshots:
        r = client.post("/v1/policies/bodyshop/decide", json=snap)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["fallback"] is False
        assert body["served_by"] == "policy:bodyshop@7" and body["model_version"] == "7"
        decision = body["decision"]
        assert decision["machine"] == snap["decision"]["machine"]
        assert decision["job"] in {j["id"] for j in _queue(snap)}  # inside the mask
        assert decision == _in_process_decision(bundle_path, snap)  # same encode/decode


def test_act_answers_a_batch_of_64_within_the_masks(client: httpx.Client) -> None:
    info = client.get("/v1/policies").json()[0]
    width, n = info["observation_shape"][0], info["n_actions"]
    rng = np.random.default_rng(0)
    obs = rng.uniform(-1, 1, size=(64, width)).round(4)
    masks = rng.random((64, n)) < 0.4
    masks[np.arange(64), rng.integers(0, n, 64)] = True
    r = client.post(
        "/v1/policies/bodyshop/act",
        json={"observations": obs.tolist(), "masks": masks.tolist()},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    actions = np.asarray(body["actions"])
    assert actions.shape == (64,) and body["model_version"] == "7"
    assert masks[np.arange(64), actions].all()


def test_auth_missing_key_401_wrong_key_403_probes_open(server: Server) -> None:
    snap_url = "/v1/policies/bodyshop/decide"
    with server.client() as anon:
        r = anon.post(snap_url, json={})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert anon.get("/v1/policies").status_code == 401
        bad = {"Authorization": "Bearer not-the-key"}
        assert anon.post(snap_url, json={}, headers=bad).status_code == 403
        assert anon.get("/healthz").status_code == 200
        # anonymous: whether it is ready and the counts, no load errors (paths, registry URL)
        assert anon.get("/readyz").json() == {"ready": True, "configured": 2, "loaded": 2}


def test_invalid_snapshot_is_422_naming_the_field(
    client: httpx.Client, snapshots: list[dict[str, Any]]
) -> None:
    snap = copy.deepcopy(snapshots[0])
    snap["stations"][1]["machines"][0]["state"] = "exploded"
    r = client.post("/v1/policies/bodyshop/decide", json=snap)
    assert r.status_code == 422
    [err] = r.json()["detail"]
    assert err["loc"] == ["body", "stations", 1, "machines", 0, "state"]

    snap = copy.deepcopy(snapshots[0])
    snap["decision"]["machine"] = "nowhere.M9"
    r = client.post("/v1/policies/bodyshop/decide", json=snap)
    assert r.status_code == 422 and "decision.machine" in r.text

    snap = copy.deepcopy(snapshots[0])
    del snap["stations"][0]["queue"]
    r = client.post("/v1/policies/bodyshop/decide", json=snap)
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "stations", 0, "queue"]


def test_act_with_wrong_width_is_422_naming_the_row(client: httpx.Client) -> None:
    r = client.post("/v1/policies/bodyshop/act", json={"observations": [[0.0] * 3]})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "observations", 0]


def test_out_of_range_snapshot_falls_back_to_the_rule_flagged_and_counted(
    client: httpx.Client, snapshots: list[dict[str, Any]]
) -> None:
    def fallbacks(reason: str) -> float:
        text = client.get("/metrics").text
        return metric_value(text, "taktline_fallbacks_total", policy="bodyshop", reason=reason)

    before = fallbacks("out_of_range")
    crowded = crowded_snapshot(snapshots[0], MAX_QUEUE + 3)  # more jobs than its padding
    body = client.post("/v1/policies/bodyshop/decide", json=crowded).json()
    assert body["fallback"] is True and body["served_by"] == "rule:SPT"
    assert body["fallback_reason"].startswith("out_of_range")
    assert body["decision"]["job"] == "J-9000"  # SPT: the shortest processing time
    assert fallbacks("out_of_range") == before + 1

    other_line = copy.deepcopy(snapshots[0])
    other_line["spec_hash"] = "0000000000000000"
    body = client.post("/v1/policies/bodyshop/decide", json=other_line).json()
    assert body["fallback"] is True and body["fallback_reason"].startswith("spec_mismatch")
    assert fallbacks("spec_mismatch") >= 1


def test_release_decision_falls_back_to_the_release_rule(
    client: httpx.Client, snapshots: list[dict[str, Any]]
) -> None:
    snap = copy.deepcopy(snapshots[0])
    snap["decision"] = {"kind": "release"}
    # two orders not yet released (new ids: a job is in one place, queue or pool)
    snap["pool"] = [{**job, "id": f"{job['id']}-order"} for job in _queue(snapshots[0])[:2]]
    body = client.post("/v1/policies/bodyshop/decide", json=snap).json()
    assert body["fallback"] is True and body["served_by"] == "rule:IMMEDIATE"
    assert body["decision"] == {"kind": "release", "count": 2, "rule": "IMMEDIATE"}


def test_shadow_mode_serves_the_rule_and_reports_the_policy(
    client: httpx.Client, snapshots: list[dict[str, Any]], bundle_path: Path
) -> None:
    from taktline.agents.rules import get_rule
    from taktline.envs.encoding import candidates_from_snapshot

    for snap in snapshots[:8]:
        body = client.post("/v1/policies/shadowed/decide", json=snap).json()
        cands = candidates_from_snapshot(snap)
        spt = get_rule("SPT").dispatch(cands, snap["time"], None)
        assert body["served_by"] == "rule:SPT" and body["fallback"] is False
        assert body["decision"]["job"] == _queue(snap)[spt]["id"]
        shadow = body["shadow"]
        assert shadow["model_version"] == "7"
        assert shadow["decision"] == _in_process_decision(bundle_path, snap)
        assert shadow["agrees"] == (shadow["decision"]["job"] == body["decision"]["job"])
    text = client.get("/metrics").text
    assert metric_value(text, "taktline_shadow_decisions_total", policy="shadowed") >= 8


def test_metrics_count_requests_and_name_the_model_version(client: httpx.Client) -> None:
    text = client.get("/metrics").text
    route = "/v1/policies/{name}/decide"
    assert metric_value(text, "taktline_requests_total", route=route, status="200") > 0
    assert metric_value(text, "taktline_request_latency_seconds_count", route=route) > 0
    assert metric_value(text, "taktline_model_version", policy="bodyshop", source="path") == 7


def test_policies_list_names_version_env_and_lineage(client: httpx.Client) -> None:
    infos = {p["name"]: p for p in client.get("/v1/policies").json()}
    assert set(infos) == {"bodyshop", "shadowed"}
    p = infos["bodyshop"]
    assert p["env_id"] == "taktline/LineDispatch-v0" and p["model_version"] == "7"
    assert p["lineage"]["backend"] == "test" and p["n_actions"] == MAX_QUEUE
    assert infos["shadowed"]["shadow"] is True


def test_unknown_policy_is_404_and_oversized_body_is_413(client: httpx.Client) -> None:
    r = client.post("/v1/policies/models:%2Fother@x/decide", json={})
    assert r.status_code == 404
    big = {"observations": [[0.0] * 1000] * 100}  # ~ 400 kB > 200 kB limit
    assert client.post("/v1/policies/bodyshop/act", json=big).status_code == 413


@pytest.fixture(scope="module")
def framework_server(
    bundle_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The same server with the decision fast path off: every request through FastAPI."""
    tmp = tmp_path_factory.mktemp("framework-server")
    policies = {"bodyshop": str(bundle_path), "shadowed": str(bundle_path)}
    env = {"TAKTLINE_MAX_REQUEST_BYTES": "200000", "TAKTLINE_FAST_PATH": "false"}
    with run_server(policies, tmp, env=env, shadow=("shadowed",)) as srv:
        yield srv


def test_fast_path_answers_exactly_as_the_framework_routes(
    server: Server, framework_server: Server, snapshots: list[dict[str, Any]]
) -> None:
    """Every outcome — answers, fallbacks, shadow, and each error status with its body — is
    the same whether the fast path or the FastAPI routes answer."""
    invalid = copy.deepcopy(snapshots[0])
    invalid["stations"][1]["machines"][0]["state"] = "exploded"
    release = copy.deepcopy(snapshots[0])
    release["decision"] = {"kind": "release"}
    rng = np.random.default_rng(4)
    with server.client(headers=AUTH) as fast, framework_server.client(headers=AUTH) as slow:
        info = fast.get("/v1/policies").json()[0]
        width, n = info["observation_shape"][0], info["n_actions"]
        masks = rng.random((8, n)) < 0.5
        masks[:, 0] = True
        act = {"observations": rng.uniform(-1, 1, (8, width)).round(3).tolist(),
               "masks": masks.tolist()}  # fmt: skip
        decide, shadow = "/v1/policies/bodyshop/decide", "/v1/policies/shadowed/decide"
        cases: list[tuple[str, dict[str, Any]]] = [
            *[(decide, {"json": s}) for s in snapshots[:6]],
            *[(shadow, {"json": s}) for s in snapshots[:3]],
            (decide, {"json": crowded_snapshot(snapshots[0], MAX_QUEUE + 2)}),  # fallback
            (decide, {"json": release}),
            (decide, {"json": invalid}),  # 422
            (decide, {"content": b"{not json", "headers": {"content-type": "application/json"}}),
            (decide, {"content": b"{}", "headers": {"content-type": "text/plain"}}),
            (decide, {"json": snapshots[0], "headers": {"Authorization": "Bearer wrong"}}),
            ("/v1/policies/nobody/decide", {"json": snapshots[0]}),  # 404
            ("/v1/policies/bodyshop/act", {"json": act}),
            ("/v1/policies/bodyshop/act", {"json": {"observations": [[0.0] * 3]}}),  # 422
            ("/v1/policies/bodyshop/act", {"json": {"observations": [[0.0] * 1000] * 100}}),
        ]
        for path, kwargs in cases:
            a, b = fast.post(path, **kwargs), slow.post(path, **kwargs)
            assert (a.status_code, a.json()) == (b.status_code, b.json()), (path, a.text)
        statuses = {fast.post(p, **kw).status_code for p, kw in cases}
        assert statuses == {200, 403, 404, 413, 415, 422}
        with server.client() as anon, framework_server.client() as anon_slow:
            a, b = anon.post(decide, json=snapshots[0]), anon_slow.post(decide, json=snapshots[0])
            assert a.status_code == b.status_code == 401 and a.json() == b.json()
        text = fast.get("/metrics").text
        route = "/v1/policies/{name}/act"
        assert metric_value(text, "taktline_requests_total", route=route, status="200") >= 2
