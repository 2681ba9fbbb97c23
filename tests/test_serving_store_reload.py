"""Reloads are single-flight with a deadline, so a hanging registry cannot starve decisions;
a rule can be served as the policy itself (``rule:NAME``)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from tests.serving_support import AUTH, dispatch_snapshots, make_bundle, run_server

RELOAD_TIMEOUT_S = 2.0
REGISTRY_HTTP_TIMEOUT_S = 5  # how long one registry request hangs before MLflow gives up


@contextmanager
def hanging_registry() -> Iterator[tuple[str, list[socket.socket]]]:
    """A TCP server that accepts every connection and never answers (nor reads); yields its
    URL and the connections it accepted so far."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(512)
    listener.settimeout(0.2)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", accepted
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in accepted:
            conn.close()
        listener.close()


def _p99_ms(latencies: list[float]) -> float:
    return float(np.percentile(np.asarray(latencies) * 1000.0, 99))


def test_hanging_registry_with_50_concurrent_reloads_does_not_starve_decide_or_act(
    tmp_path: Path,
) -> None:
    import httpx

    bundle = make_bundle(tmp_path / "bundle", seed=4)
    snapshots = [s for s in dispatch_snapshots("bodyshop", 30, seed=7) if s["decision"]][:20]
    policies = {"line": str(bundle), "reg": "models:/hanging-line@production"}
    with hanging_registry() as (registry, accepted):
        env = {
            "MLFLOW_TRACKING_URI": registry,
            "MLFLOW_REGISTRY_URI": registry,
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": str(REGISTRY_HTTP_TIMEOUT_S),
            "TAKTLINE_RELOAD_TIMEOUT_S": str(RELOAD_TIMEOUT_S),
            "TAKTLINE_DECISION_TIMEOUT_S": "30",  # fallback is False must not depend on timing
        }
        # "reg" never loads, so /readyz stays 503: wait for /healthz only
        with run_server(policies, tmp_path, env=env, ready=False) as server:
            with server.client(headers=AUTH) as c:
                # the startup load of "reg" ends (MLflow's timeout, no cache) before the burst
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    info = {p["name"]: p for p in c.get("/v1/policies").json()}
                    if info["reg"]["error"]:
                        break
                    time.sleep(0.2)
                assert info["line"]["loaded"] and not info["reg"]["loaded"], info
                assert "registry unreachable" in info["reg"]["error"]
                obs, mask = _act_body(c)
            connections_before = len(accepted)

            reload_results: list[tuple[int, str | None, float]] = []
            decide: list[tuple[int, bool | None, float]] = []
            act: list[tuple[int, float]] = []
            stop = threading.Event()
            gate = threading.Barrier(51)

            def reload_three_times() -> None:
                with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as h:
                    gate.wait()
                    for _ in range(3):
                        t0 = time.perf_counter()
                        r = h.post("/v1/policies/reg/reload")
                        error = r.json().get("error") if r.status_code == 200 else r.text
                        reload_results.append((r.status_code, error, time.perf_counter() - t0))

            def decide_and_act() -> None:
                with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as h:
                    gate.wait()
                    k = 0
                    while not stop.is_set() or k < 200:
                        t0 = time.perf_counter()
                        r = h.post("/v1/policies/line/decide", json=snapshots[k % len(snapshots)])
                        fallback = r.json().get("fallback") if r.status_code == 200 else None
                        decide.append((r.status_code, fallback, time.perf_counter() - t0))
                        t0 = time.perf_counter()
                        r = h.post(
                            "/v1/policies/line/act", json={"observations": obs, "masks": mask}
                        )
                        act.append((r.status_code, time.perf_counter() - t0))
                        k += 1

            hammer = threading.Thread(target=decide_and_act)
            hammer.start()
            with ThreadPoolExecutor(50) as pool:
                for f in [pool.submit(reload_three_times) for _ in range(50)]:
                    f.result()
            stop.set()
            hammer.join()
            connections_during = len(accepted) - connections_before

    decide_p99, act_p99 = _p99_ms([t for *_, t in decide]), _p99_ms([t for _, t in act])
    reload_max = max(t for *_, t in reload_results)
    print(
        f"\nhanging registry, 150 reloads from 50 clients: /decide p99 {decide_p99:.1f} ms "
        f"(n={len(decide)}), /act p99 {act_p99:.1f} ms (n={len(act)}), slowest reload "
        f"{reload_max:.2f} s, registry connections during the burst: {connections_during}"
    )
    assert len(reload_results) == 150 and {code for code, *_ in reload_results} == {200}
    assert all(error for _, error, _ in reload_results)  # nothing loaded: each says why
    in_progress = [e for _, e, _ in reload_results if e and "in progress" in e]
    assert len(in_progress) >= 140, reload_results  # single flight: the rest joined one load
    assert connections_during <= 5  # one registry request per flight, not one per reload
    assert {code for code, *_ in decide} == {200} and {code for code, _ in act} == {200}
    assert all(fallback is False for _, fallback, _ in decide)
    # generous sanity bounds only (latencies are reported above, not asserted tightly)
    assert reload_max < RELOAD_TIMEOUT_S + 8
    assert decide_p99 < 3000 and act_p99 < 3000


def _act_body(client: object) -> tuple[list[list[float]], list[list[bool]]]:
    """One valid ``/act`` row of the ``line`` policy (zeros, every action allowed)."""
    import httpx

    assert isinstance(client, httpx.Client)
    info = {p["name"]: p for p in client.get("/v1/policies").json()}["line"]
    width = int(np.prod(info["observation_shape"]))
    return [[0.0] * width], [[True] * int(info["n_actions"])]


@pytest.mark.parametrize("fast_path", ["true", "false"])
def test_a_rule_served_as_the_policy_answers_with_the_rule_unflagged(
    tmp_path: Path, fast_path: str
) -> None:
    from taktline.agents.policies import RulePolicy

    snapshots = [s for s in dispatch_snapshots("bodyshop", 40, seed=3) if s["decision"]]
    same, spt = RulePolicy("SAME"), RulePolicy("SPT")
    # the rule served is SAME, not the fallback rule (SPT): some of these tell them apart
    assert any(same.decide(s).job != spt.decide(s).job for s in snapshots)
    env = {"TAKTLINE_FAST_PATH": fast_path, "TAKTLINE_DECISION_TIMEOUT_S": "30"}
    server_cm = run_server({"line": "rule:same"}, tmp_path, env=env)
    with server_cm as server, server.client(headers=AUTH) as c:
        for snap in snapshots:
            r = c.post("/v1/policies/line/decide", json=snap)
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["fallback"] is False and body["model_version"] == "rule:SAME"
            assert body["served_by"] == "policy:line@rule:SAME"
            expected = same.decide(snap).model_dump(mode="json", exclude_none=True)
            assert body["decision"] == expected  # RulePolicy.decide's decision, all of it
        r = c.post("/v1/policies/line/act", json={"observations": [[0.0]]})
        assert r.status_code == 409 and "/decide" in r.json()["detail"], r.text
        (info,) = c.get("/v1/policies").json()
        assert info["loaded"] and info["source"] == "rule" and info["ref"] == "rule:SAME"
        assert c.get("/readyz").status_code == 200
