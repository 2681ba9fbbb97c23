"""``/decide`` for job shops: a job-shop snapshot in, "job J's next operation on machine M at
time T" out — from an attention policy, or from the fallback rule, over real HTTP."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serving_support import AUTH, Server, dispatch_snapshots, make_bundle, run_server

INSTANCE = "ft06"


def jobshop_bundle(path: Path) -> Path:
    import torch

    from taktline.agents.bundle import PolicyBundle
    from taktline.agents.networks import JobShopAttention
    from taktline.envs.encoding import JOBSHOP_ID, make_codec

    env_kwargs = {"instance": INSTANCE, "max_jobs": 6, "max_machines": 6}
    codec = make_codec(JOBSHOP_ID, env_kwargs)
    torch.manual_seed(2)
    kw = {"max_jobs": 6, "d_model": 16, "n_heads": 2, "n_layers": 1}
    return PolicyBundle(
        env_id=JOBSHOP_ID,
        env_kwargs=env_kwargs,
        spec_hash=None,
        observation_space=codec.observation_space,
        action_space=codec.action_space,
        network=JobShopAttention(**kw),  # type: ignore[arg-type]
        network_spec={"class": "attention", "kwargs": kw},
        lineage={"backend": "test"},
        version="3",
    ).save(path)


def jobshop_snapshots() -> list[tuple[dict[str, Any], int]]:
    """Snapshots (as JSON bodies) along one ft06 schedule (built with MWKR), each with the job
    SPT picks there, on the rule candidates every path reads (``jobshop_candidates``)."""
    from taktline.agents.rules import get_rule
    from taktline.envs.encoding_jobshop import jobshop_candidates
    from taktline.envs.env_jobshop import JobShopEnv

    env = JobShopEnv(INSTANCE)
    env.reset(seed=0)
    out = []
    while env.state is not None and not env.state.done:
        snap = env.snapshot()
        cands = jobshop_candidates(snap)
        spt = cands[get_rule("SPT").dispatch(cands, float(snap.time), None)].id
        out.append((snap.model_dump(mode="json"), spt))
        mwkr = cands[get_rule("MWKR").dispatch(cands, float(snap.time), None)].id
        env.step(mwkr)
    return out


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bundles")
    return {"shop": jobshop_bundle(root / "shop"), "line": make_bundle(root / "line")}


@pytest.fixture(scope="module")
def server(paths: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    policies = {name: str(p) for name, p in paths.items()}
    with run_server(policies, tmp_path_factory.mktemp("server")) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client(headers=AUTH) as c:
        yield c


def test_decide_schedules_a_candidate_job_as_the_policy_does_in_process(
    client: httpx.Client, paths: dict[str, Path]
) -> None:
    from taktline.agents.bundle import PolicyBundle
    from taktline.envs.decision import Decision
    from taktline.envs.encoding import make_codec

    bundle = PolicyBundle.load(paths["shop"])
    codec = make_codec(bundle.env_id, bundle.env_kwargs)
    snaps = jobshop_snapshots()
    assert len(snaps) >= 10  # ft06: 36 operations, the forced ones skipped
    for snap, _ in snaps:
        r = client.post("/v1/policies/shop/decide", json=snap)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["fallback"] is False and body["served_by"] == "policy:shop@3"
        d = body["decision"]
        cands = {c["job"]: c for c in snap["decision"]["candidates"]}
        assert d["machine"] == snap["decision"]["machine"] and d["job"] in cands
        assert d["operation"] == snap["jobs"][d["job"]]["next_op"]
        assert d["start"] == cands[d["job"]]["start"]
        obs, mask = codec.encode(snap)
        action = int(bundle.act(obs[None], mask[None])[0])
        assert body["action"] == action
        assert Decision.model_validate(d) == codec.decode(snap, action)


def test_the_fallback_rule_on_a_job_shop_is_the_offline_dispatcher(client: httpx.Client) -> None:
    for snap, spt_job in jobshop_snapshots()[::3]:
        # a line policy cannot read a job shop: the rule answers, flagged
        body = client.post("/v1/policies/line/decide", json=snap).json()
        assert body["fallback"] is True and body["served_by"] == "rule:SPT"
        assert body["fallback_reason"].startswith("env_mismatch")
        assert body["decision"]["job"] == spt_job


def test_a_line_snapshot_to_a_job_shop_policy_falls_back_to_the_line_rule(
    client: httpx.Client,
) -> None:
    snap = next(s for s in dispatch_snapshots("bodyshop", 20, seed=1) if s["decision"])
    body = client.post("/v1/policies/shop/decide", json=snap).json()
    assert body["fallback"] is True and body["fallback_reason"].startswith("env_mismatch")
    point = snap["decision"]
    assert body["decision"]["machine"] == point["machine"]


def test_invalid_job_shop_snapshots_are_422_naming_the_field(client: httpx.Client) -> None:
    snap, _ = jobshop_snapshots()[4]
    url = "/v1/policies/shop/decide"

    missing = copy.deepcopy(snap)
    del missing["scheme"]
    r = client.post(url, json=missing)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "scheme"]

    bad_machine = copy.deepcopy(snap)
    bad_machine["jobs"][1]["operations"][0] = [[99, 5]]
    r = client.post(url, json=bad_machine)
    assert r.status_code == 422 and "jobs[1].operations[0]: machine 99" in r.text

    negative = copy.deepcopy(snap)
    negative["machines"][2]["available"] = -4
    r = client.post(url, json=negative)
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "machines", 2, "available"]

    done = copy.deepcopy(snap)
    done["decision"] = None
    r = client.post(url, json=done)
    assert r.status_code == 422 and "nothing to decide" in r.text


def test_job_shop_answers_are_deterministic(client: httpx.Client) -> None:
    snap, _ = jobshop_snapshots()[7]
    answers = {client.post("/v1/policies/shop/decide", json=snap).text for _ in range(5)}
    assert len(answers) == 1
