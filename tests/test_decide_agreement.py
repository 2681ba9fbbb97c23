"""One decide path: at every decision point of random lines and job shops, for every rule, the
env's decision == ``RulePolicy(rule).decide(snapshot)`` == a live server's answer to that
snapshot (uvicorn over HTTP, the rule served as ``rule:NAME`` and as the fallback of a policy
that cannot load).

Every example runs (no shrinking) and every decision is counted; the test fails on any
disagreement and reports them per kind and rule. ``pytest -s`` prints the summary line
``agreement: lines N decisions, jobshops M decisions, disagreements K``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from hypothesis import Phase, assume, example, given, settings

from taktline.agents.rules import DISPATCH_RULES
from taktline.envs.jobshop.instance import JobShopInstance
from taktline.envs.spec import LineSpec, load_spec
from tests.agreement_support import (
    JOBSHOP_KEYS,
    LINE_KEYS,
    Key,
    Point,
    Tally,
    decision_key,
    flexible_shop,
    jobshop_cases,
    line_cases,
    walk_jobshop,
    walk_line,
)
from tests.serving_support import AUTH, Server, run_server

LINE_EXAMPLES = 10
JOBSHOP_EXAMPLES = 20
HORIZON = 400.0
MOST_LINE_DECISIONS = 30
"""Decision points walked per line episode (the rest of the episode adds nothing new)."""
POSTERS = 4
"""Requests in flight at once (the client and the server each keep a core busy)."""
ROUTES = ("rule", "fallback")
"""How the server answers with rule ``r``: policy ``rule-r`` serves ``rule:R``; policy
``fallback-r`` cannot load (no bundle in its directory), so its fallback rule ``R`` answers."""


def _examples(n: int) -> settings:
    # fixed examples, all of them run: a disagreement is counted, not shrunk
    return settings(
        derandomize=True,
        max_examples=n,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("agreement")
    unloadable = tmp / "no-bundle"
    unloadable.mkdir()
    policies: dict[str, dict[str, str]] = {}
    for rule in DISPATCH_RULES:
        policies[f"rule-{rule.lower()}"] = {"ref": f"rule:{rule}"}
        policies[f"fallback-{rule.lower()}"] = {"ref": str(unloadable), "fallback_rule": rule}
    env = {"TAKTLINE_POLICIES": json.dumps(policies)}
    with run_server({}, tmp, env=env, ready=False) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    # one client, its keep-alive connections shared by the posting threads
    limits = httpx.Limits(max_keepalive_connections=POSTERS, max_connections=POSTERS)
    with server.client(headers=AUTH, limits=limits) as c:
        yield c


@pytest.fixture(scope="module")
def posters() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(POSTERS) as pool:
        yield pool


def _server_key(client: httpx.Client, path: str, rule: str, body: dict[str, Any]) -> Key:
    r = client.post(path, json=body)
    if r.status_code != 200:
        return ("http", r.status_code, r.text[:300])
    answer = r.json()
    if "/fallback-" in path and answer.get("served_by") != f"rule:{rule}":
        return ("served_by", answer.get("served_by"))
    keys = JOBSHOP_KEYS if body.get("kind") == "jobshop" else LINE_KEYS
    return decision_key(answer["decision"], keys)


def _count(
    tally: Tally,
    client: httpx.Client,
    posters: ThreadPoolExecutor,
    kind: str,
    rule: str,
    case: str,
    points: list[Point],
) -> None:
    """Ask the server (every route) at every point, a few requests in flight, and count."""
    bodies = [point.body() for point in points]
    names = [f"{route}-{rule.lower()}" for route in ROUTES]
    asks = [(f"/v1/policies/{name}/decide", body) for body in bodies for name in names]
    said = iter(posters.map(lambda ask: _server_key(client, ask[0], rule, ask[1]), asks))
    for k, point in enumerate(points):
        answers = dict(point.answers)
        for name in names:
            answers[f"server {name}"] = next(said)
        tally.add(kind, rule, f"{case} decision {k}", answers)


@pytest.mark.slow  # 60-75 s here with the server's start (about 8,000 requests)
def test_env_rulepolicy_and_live_server_agree_at_every_decision(
    client: httpx.Client, posters: ThreadPoolExecutor
) -> None:
    tally = Tally()

    @_examples(LINE_EXAMPLES)
    @example((load_spec("bodyshop"), 0))  # parallel robots, small buffers, breakdowns, setups
    @example((load_spec("machining"), 1))  # re-entrant routings, setups between part families
    @given(line_cases())
    def lines(case: tuple[LineSpec, int]) -> None:
        spec, seed = case
        label = f"line {spec.spec_hash()} seed {seed}"
        walks = {r: walk_line(spec, seed, r, HORIZON, MOST_LINE_DECISIONS) for r in DISPATCH_RULES}
        assume(any(walks.values()))  # a line with no decision point tells nothing
        for rule, points in walks.items():
            _count(tally, client, posters, "line", rule, label, points)

    @_examples(JOBSHOP_EXAMPLES)
    @example((flexible_shop(8, 5, seed=7), "active"))  # the flexible 8 x 5 shops
    @given(jobshop_cases())
    def jobshops(case: tuple[JobShopInstance, str]) -> None:
        inst, scheme = case
        dated = "with" if inst.due_dates else "without"
        label = f"jobshop {inst.name} #{hash(inst.jobs) & 0xFFFFFF:06x} {scheme} {dated} due dates"
        for rule in DISPATCH_RULES:
            _count(tally, client, posters, "jobshop", rule, label, walk_jobshop(inst, scheme, rule))

    lines()
    jobshops()
    print(tally.summary())
    # the walks reach real decisions (queues of two or more) on both kinds
    assert tally.total(tally.decisions, "line") >= 500, tally.summary()
    assert tally.total(tally.decisions, "jobshop") >= 500, tally.summary()
    assert tally.total(tally.disagreements) == 0, tally.report()
