"""Bad input over real HTTP, on both paths (the fast path and ``TAKTLINE_FAST_PATH=false``):
non-finite numbers, snapshots that describe no possible line, wrong content types, and what
``/readyz`` tells an anonymous caller. Each is a 4xx naming the field, in strict JSON, with the
same status and body from both paths."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.serving_support import AUTH, Server, dispatch_snapshots, make_bundle, run_server
from tests.test_serving_jobshop import jobshop_bundle, jobshop_snapshots

LINE = "bodyshop"
DECIDE = "/v1/policies/bodyshop/decide"
SHOP = "/v1/policies/shop/decide"
ACT = "/v1/policies/bodyshop/act"
NON_FINITE = ("NaN", "Infinity", "-Infinity", "1e309")
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bundles")
    broken = root / "broken"
    broken.mkdir()  # no bundle.json: never loads, so /readyz says 503
    return {
        "bodyshop": make_bundle(root / "line", LINE, max_queue=6, version="7"),
        "shop": jobshop_bundle(root / "shop"),
        "broken": broken,
    }


def _server(paths: dict[str, Path], tmp: Path, fast: bool) -> Any:
    env = {"TAKTLINE_FAST_PATH": "true" if fast else "false"}
    return run_server({k: str(v) for k, v in paths.items()}, tmp, env=env, ready=False)


@pytest.fixture(scope="module")
def servers(
    paths: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Server]]:
    with (
        _server(paths, tmp_path_factory.mktemp("fast"), fast=True) as fast,
        _server(paths, tmp_path_factory.mktemp("framework"), fast=False) as framework,
    ):
        yield {"fast": fast, "framework": framework}


@pytest.fixture(scope="module")
def snapshot() -> dict[str, Any]:
    """A bodyshop dispatch snapshot with 2+ waiting jobs and a job on a busy machine."""
    for snap in dispatch_snapshots(LINE, 60, seed=3):
        queue = _station(snap)["queue"]
        if 2 <= len(queue) <= 6 and any(m["job"] for s in snap["stations"] for m in s["machines"]):
            return snap
    raise AssertionError("no suitable snapshot")


def _station(snap: dict[str, Any]) -> dict[str, Any]:
    return next(s for s in snap["stations"] if s["name"] == snap["decision"]["station"])


def strict_json(text: str) -> Any:
    """``json.loads`` that refuses ``NaN``/``Infinity`` (what a strict client's parser does)."""

    def refuse(token: str) -> None:
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def both(
    servers: dict[str, Server], path: str, headers: dict[str, str] | None = None, **kwargs: Any
) -> tuple[int, Any]:
    """POST to both servers; assert both answer the same status and the same body (byte for
    byte for an error; a 200's JSON may be laid out differently); return them."""
    answers = []
    for server in servers.values():
        with server.client(headers=headers if headers is not None else AUTH) as c:
            r = c.post(path, **kwargs)
        answers.append((r.status_code, r.content))
    (code, body), (code2, body2) = answers
    assert code == code2, (path, answers)
    if code >= 400:
        assert body == body2, (path, answers)
    parsed = strict_json(body.decode())
    assert parsed == strict_json(body2.decode()), (path, answers)
    return code, parsed


def with_token(snapshot: dict[str, Any], setter: Any, token: str) -> bytes:
    """``snapshot`` as JSON with one number replaced by the literal ``token``."""
    snap = copy.deepcopy(snapshot)
    setter(snap, "__TOKEN__")
    return json.dumps(snap).replace('"__TOKEN__"', token).encode()


def _set(*loc: str | int) -> Any:
    def setter(snap: dict[str, Any], value: Any) -> None:
        node = snap
        for key in loc[:-1]:
            node = node[key]
        node[loc[-1]] = value

    return setter


@pytest.mark.parametrize("token", NON_FINITE)
def test_non_finite_numbers_are_422_naming_the_field_on_both_paths(
    servers: dict[str, Server], snapshot: dict[str, Any], token: str
) -> None:
    si = snapshot["stations"].index(_station(snapshot))
    fields: list[tuple[str | int, ...]] = [
        ("time",),
        ("stations", si, "queue", 0, "processing_time"),
        ("stations", si, "queue", 1, "due_date"),
        ("stations", si, "queue", 0, "arrival_time"),
        ("wip",),  # an integer field
    ]
    for loc in fields:
        body = with_token(snapshot, _set(*loc), token)
        code, answer = both(servers, DECIDE, content=body, headers={**AUTH, **JSON})
        assert code == 422, (loc, answer)
        assert [e["loc"] for e in answer["detail"]] == [["body", *loc]], answer
    shop, _ = jobshop_snapshots()[3]
    for loc in [("machines", 1, "available"), ("jobs", 2, "due_date"), ("time",)]:
        body = with_token(shop, _set(*loc), token)
        code, answer = both(servers, SHOP, content=body, headers={**AUTH, **JSON})
        assert code == 422, (loc, answer)
        assert [e["loc"] for e in answer["detail"]] == [["body", *loc]], answer
    act = f'{{"observations": [[0.5, 1.0], [0.0, {token}]]}}'.encode()
    code, answer = both(servers, ACT, content=act, headers={**AUTH, **JSON})
    assert code == 422
    assert [e["loc"] for e in answer["detail"]] == [["body", "observations", 1, 1]]


def _line_cases(snap: dict[str, Any]) -> list[tuple[str, Any, str]]:
    """(name, change, words the 422 must contain) for inconsistent line snapshots."""
    si = snap["stations"].index(_station(snap))
    oi = next(i for i, s in enumerate(snap["stations"]) if i != si)
    machine = snap["decision"]["machine"]
    busy_job = next(m["job"] for s in snap["stations"] for m in s["machines"] if m["job"])

    def moved(s: dict[str, Any]) -> None:  # the case: framing.M1 named at underbody
        other = s["stations"][oi]
        s["decision"]["station"] = other["name"]
        other["queue"] = copy.deepcopy(s["stations"][si]["queue"])
        for q in s["stations"][si]["queue"]:
            q["id"] += "-copy"

    def also_listed(s: dict[str, Any]) -> None:  # ... and listed among underbody's machines
        moved(s)
        target = next(m for m in s["stations"][si]["machines"] if m["id"] == machine)
        s["stations"][oi]["machines"].append(copy.deepcopy(target))

    def state(value: str) -> Any:
        def change(s: dict[str, Any]) -> None:
            m = next(m for m in s["stations"][si]["machines"] if m["id"] == machine)
            m["state"] = value

        return change

    def duplicate(s: dict[str, Any]) -> None:
        q = s["stations"][si]["queue"]
        q[1]["id"] = q[0]["id"]

    def waiting_and_on_a_machine(s: dict[str, Any]) -> None:
        s["stations"][si]["queue"][0]["id"] = busy_job

    def in_pool_too(s: dict[str, Any]) -> None:
        s["pool"] = [copy.deepcopy(s["stations"][si]["queue"][0])]

    def unknown_station(s: dict[str, Any]) -> None:
        s["stations"][oi]["name"] = "paintshop"

    def unknown_machine(s: dict[str, Any]) -> None:
        s["stations"][oi]["machines"][0]["id"] = s["stations"][oi]["name"] + ".M9"

    def unknown_product(s: dict[str, Any]) -> None:
        s["stations"][si]["queue"][1]["product"] = "pickup"

    return [
        ("machine of another station", moved, "decision.machine"),
        ("machine listed at two stations", also_listed, "a machine belongs to one station"),
        *[(f"target {v}", state(v), f"{machine!r} is {v}") for v in ("busy", "down", "setup")],
        ("duplicate job id", duplicate, "each job is in one place"),
        ("job waiting and on a machine", waiting_and_on_a_machine, "each job is in one place"),
        ("job waiting and in the pool", in_pool_too, "each job is in one place"),
        ("station not in the line", unknown_station, "'paintshop' is not in line 'bodyshop'"),
        ("machine not in the line", unknown_machine, ".M9' is not a machine of station"),
        ("product not in the line", unknown_product, "'pickup'"),
    ]


def test_inconsistent_line_snapshots_are_422_naming_the_field_on_both_paths(
    servers: dict[str, Server], snapshot: dict[str, Any]
) -> None:
    code, answer = both(servers, DECIDE, json=snapshot)
    assert code == 200 and answer["fallback"] is False  # the unchanged snapshot is served
    for name, change, words in _line_cases(snapshot):
        bad = copy.deepcopy(snapshot)
        change(bad)
        code, answer = both(servers, DECIDE, json=bad)
        assert code == 422, (name, answer)
        assert words in json.dumps(answer), (name, answer)


def test_a_snapshot_of_another_line_is_left_to_the_fallback_rule(
    servers: dict[str, Server], snapshot: dict[str, Any]
) -> None:
    """The line check applies to snapshots that claim the policy's line (its spec hash)."""
    other = copy.deepcopy(snapshot)
    other["spec_hash"] = "another-line"
    next(s for s in other["stations"] if s is not _station(other))["name"] = "paintshop"
    code, answer = both(servers, DECIDE, json=other)
    assert code == 200 and answer["fallback"] is True
    assert answer["fallback_reason"].startswith("spec_mismatch")


def test_inconsistent_job_shop_snapshots_are_422_naming_the_field_on_both_paths(
    servers: dict[str, Server],
) -> None:
    snap = next(s for s, _ in jobshop_snapshots() if len(s["decision"]["candidates"]) >= 2)
    m = snap["decision"]["machine"]
    c0 = snap["decision"]["candidates"][0]

    def twice(s: dict[str, Any]) -> None:
        s["decision"]["candidates"][1] = copy.deepcopy(c0)

    def elsewhere(s: dict[str, Any]) -> None:
        s["jobs"][c0["job"]]["operations"][0] = [[(m + 1) % len(s["machines"]), 5]]

    def early(s: dict[str, Any]) -> None:
        s["machines"][m]["available"] = c0["start"] + 7

    def longer(s: dict[str, Any]) -> None:
        s["decision"]["candidates"][0]["processing_time"] = c0["processing_time"] + 1

    cases = [
        (twice, "decision.candidates[1].job"),
        (elsewhere, "decision.candidates[0].job"),
        (early, "decision.candidates[0].start"),
        (longer, "decision.candidates[0].processing_time"),
    ]
    code, answer = both(servers, SHOP, json=snap)
    assert code == 200 and answer["fallback"] is False
    for change, field in cases:
        bad = copy.deepcopy(snap)
        change(bad)
        code, answer = both(servers, SHOP, json=bad)
        assert code == 422 and field in json.dumps(answer), (field, answer)


@pytest.mark.parametrize("path", [DECIDE, ACT])
def test_a_body_that_is_not_announced_as_json_is_415_on_both_paths(
    servers: dict[str, Server], snapshot: dict[str, Any], path: str
) -> None:
    body = json.dumps(snapshot if path == DECIDE else {"observations": [[0.0]]}).encode()
    for content_type in (None, "text/plain", "application/x-www-form-urlencoded"):
        headers = {**AUTH, **({"content-type": content_type} if content_type else {})}
        code, answer = both(servers, path, content=body, headers=headers)
        assert code == 415, (content_type, answer)
        assert "Content-Type: expected application/json" in answer["detail"]
        assert (repr(content_type) if content_type else "no Content-Type") in answer["detail"]
    code, _ = both(servers, DECIDE, content=json.dumps(snapshot).encode(),
                   headers={**AUTH, "content-type": "application/json; charset=utf-8"})  # fmt: skip
    assert code == 200
    code, _ = both(servers, path, content=body, headers={"content-type": "text/plain"})
    assert code == 401  # who is asking comes first, as on every route


def test_readyz_tells_anonymous_callers_only_whether_and_how_many(
    servers: dict[str, Server], paths: dict[str, Path]
) -> None:
    for server in servers.values():
        with server.client() as anon:
            r = anon.get("/readyz")
        assert r.status_code == 503
        assert r.json() == {"ready": False, "configured": 3, "loaded": 2}
        assert str(paths["broken"]) not in r.text and "bundle.json" not in r.text
        with server.client(headers=AUTH) as c:
            r = c.get("/readyz")
        assert r.status_code == 503 and list(r.json()["missing"]) == ["broken"]
        assert "bundle.json" in r.json()["missing"]["broken"]  # the details, for a key holder


def test_huge_integers_and_lone_surrogates_are_4xx_in_json_on_both_paths(
    servers: dict[str, Server], snapshot: dict[str, Any]
) -> None:
    """``10**400`` overflowed the job-shop rule's float conversions (500); a lone surrogate
    echoed in a 422 could not be encoded as UTF-8 (500)."""
    shop, _ = jobshop_snapshots()[3]
    for loc in [("time",), ("machines", 1, "available"), ("jobs", 0, "operations", 1, 0, 1)]:
        body = with_token(shop, _set(*loc), str(10**400))
        code, answer = both(servers, SHOP, content=body, headers={**AUTH, **JSON})
        assert code == 422 and [e["loc"] for e in answer["detail"]] == [["body", *loc]]
    for body in (b'"\\ud800"', with_token(snapshot, _set("wip"), '"\\ud800"')):
        code, answer = both(servers, DECIDE, content=body, headers={**AUTH, **JSON})
        assert code == 422, answer


def test_healthz_says_insecure_when_auth_is_off_outside_local(
    paths: dict[str, Path], tmp_path: Path
) -> None:
    env = {"TAKTLINE_AUTH": "false", "TAKTLINE_INSECURE": "true"}
    policies = {"bodyshop": str(paths["bodyshop"])}
    with run_server(policies, tmp_path, env=env) as server, server.client() as anon:
        assert anon.get("/healthz").json() == {"status": "ok", "insecure": True}
    with run_server(policies, tmp_path) as server, server.client() as anon:
        assert anon.get("/healthz").json() == {"status": "ok"}
