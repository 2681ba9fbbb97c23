"""Fuzzing the live server on both paths (the fast path and ``TAKTLINE_FAST_PATH=false``):
never a 5xx, and every error body strict JSON.

Schemathesis generates positive and negative requests for every operation of the server's
OpenAPI schema. Its generators produce only finite numbers (JSON has no others; the installed
schemathesis 4.x has no option to allow NaN/Infinity), so each generated request with a body is
also sent a second time with one value replaced by a non-finite literal (``NaN``, ``Infinity``,
``-Infinity``, ``1e309``) that Python's and pydantic's JSON parsers accept. Beside it, every
number of real requests is swept with each literal. The tests print how many requests each path
was sent and how many answers were >= 500.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from tests.serving_support import AUTH, Server, dispatch_snapshots, make_bundle, run_server
from tests.test_serving_input_checks import strict_json
from tests.test_serving_jobshop import jobshop_snapshots

NON_FINITE = ("NaN", "Infinity", "-Infinity", "1e309")
TALLY: Counter[tuple[str, str]] = Counter()
"""(path, "requests" | "5xx") over the module, printed at its end."""


@pytest.fixture(scope="module", params=["fast", "framework"])
def fuzz_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    bundle = make_bundle(tmp / "b", "serial5", max_queue=4)
    env = {
        "TAKTLINE_MAX_REQUEST_BYTES": "65536",
        "TAKTLINE_FAST_PATH": "true" if request.param == "fast" else "false",
    }
    with run_server({"serial5": str(bundle)}, tmp, env=env) as s:
        s.path_label = request.param  # type: ignore[attr-defined]
        yield s


@pytest.fixture(scope="module", autouse=True)
def _report_tally() -> Iterator[None]:
    yield
    for label in ("fast", "framework"):
        print(
            f"\nHTTP fuzz, {label} path: {TALLY[label, 'requests']} requests, "
            f"{TALLY[label, '5xx']} responses >= 500"
        )


def _record(server: Server, response: httpx.Response | Any) -> None:
    """Count the answer; an error answer must be strict JSON (if it says it is JSON)."""
    label = server.path_label  # type: ignore[attr-defined]
    TALLY[label, "requests"] += 1
    TALLY[label, "5xx"] += response.status_code >= 500
    content_type = response.headers.get("content-type", "")  # schemathesis: a list of values
    if isinstance(content_type, list):
        content_type = ";".join(content_type)
    if response.status_code >= 400 and "json" in content_type:
        strict_json(response.content.decode())


def _leaves(value: Any, loc: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """The location of every scalar in a JSON value (the value itself: ``()``)."""
    if isinstance(value, dict) and value:
        for key, item in value.items():
            yield from _leaves(item, (*loc, key))
    elif isinstance(value, list) and value:
        for i, item in enumerate(value):
            yield from _leaves(item, (*loc, i))
    else:
        yield loc


def _with_literal(value: Any, loc: tuple[Any, ...], literal: str) -> bytes:
    """``value`` as JSON text with the scalar at ``loc`` replaced by ``literal``."""
    marker = "__non_finite_literal__"
    if not loc:
        return literal.encode()
    value = copy.deepcopy(value)
    node = value
    for key in loc[:-1]:
        node = node[key]
    node[loc[-1]] = marker
    return json.dumps(value).replace(f'"{marker}"', literal).encode()


def test_no_operation_answers_a_server_error(fuzz_server: Server) -> None:
    """Positive and negative inputs, ~30 per operation, each with a body also sent with one
    value non-finite; POSTs aimed at the configured policy."""
    schema = schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 7
    with httpx.Client(base_url=fuzz_server.url, timeout=30.0) as http:
        for operation in operations:

            @given(case=operation.as_strategy(), data=st.data())
            @settings(
                max_examples=30,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                derandomize=True,
                database=None,
            )
            def fuzz(case: schemathesis.Case, data: st.DataObject) -> None:
                if case.path_parameters and case.operation.method.upper() == "POST":
                    case.path_parameters = {"name": "serial5"}  # reach the policy, not a 404
                response = case.call(headers=AUTH)
                _record(fuzz_server, response)
                case.validate_response(response, checks=[not_a_server_error])
                body = case.body
                if not isinstance(body, dict | list | str | int | float) or isinstance(body, bool):
                    return  # no JSON body to put a non-finite number in
                loc = data.draw(st.sampled_from(list(_leaves(body))))
                literal = data.draw(st.sampled_from(NON_FINITE))
                r = http.request(
                    case.method,
                    case.formatted_path,
                    params=case.query,
                    content=_with_literal(body, loc, literal),
                    headers={**AUTH, "content-type": "application/json"},
                )
                _record(fuzz_server, r)
                assert r.status_code < 500, (case.formatted_path, loc, literal, r.text[:500])

            fuzz()


def test_a_non_finite_number_anywhere_in_a_real_request_is_a_422(fuzz_server: Server) -> None:
    """Every value of a line snapshot, a job-shop snapshot and an /act body, replaced by each
    non-finite literal: a 422 whose error names that place, in strict JSON."""
    line = next(s for s in dispatch_snapshots("serial5", 30, seed=5) if _waiting(s) >= 2)
    shop, _ = jobshop_snapshots()[2]
    with fuzz_server.client(headers=AUTH) as c:
        width = c.get("/v1/policies").json()[0]["observation_shape"][0]
        act = {"observations": [[0.0] * width] * 2, "masks": None, "deterministic": True}
        requests = [
            ("/v1/policies/serial5/decide", line),
            ("/v1/policies/serial5/decide", shop),
            ("/v1/policies/serial5/act", act),
        ]
        for path, value in requests:
            numbers = [loc for loc in _leaves(value) if _is_number(value, loc)]
            assert len(numbers) >= 2
            for loc in numbers:
                for literal in NON_FINITE:
                    r = c.post(
                        path,
                        content=_with_literal(value, loc, literal),
                        headers={"content-type": "application/json"},
                    )
                    _record(fuzz_server, r)
                    assert r.status_code == 422, (path, loc, literal, r.text[:300])
                    locs = [tuple(e["loc"]) for e in strict_json(r.text)["detail"]]
                    assert ("body", *loc) in locs, (loc, locs)


def _waiting(snapshot: dict[str, Any]) -> int:
    point = snapshot["decision"]
    return len(next(s["queue"] for s in snapshot["stations"] if s["name"] == point["station"]))


def _is_number(value: Any, loc: tuple[Any, ...]) -> bool:
    for key in loc:
        value = value[key]
    return isinstance(value, int | float) and not isinstance(value, bool)


def _perturbed_snapshots() -> st.SearchStrategy[dict[str, Any]]:
    """Real serial5 snapshots with waiting jobs, machine states and times changed at random."""
    base = dispatch_snapshots("serial5", 30, seed=11)
    job = st.fixed_dictionaries(
        {
            "processing_time": st.floats(0, 1e6),
            "remaining_work": st.floats(0, 1e6),
            "remaining_ops": st.integers(0, 50),
            "due_date": st.none() | st.floats(-1e6, 1e6),
            "family": st.sampled_from(["", "bracket", "unknown-family"]),
        }
    )

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        snap = copy.deepcopy(draw(st.sampled_from(base)))
        snap["time"] = draw(st.floats(0, 1e7))
        snap["wip"] = draw(st.integers(0, 10_000))
        for station in snap["stations"]:
            for machine in station["machines"]:
                machine["state"] = draw(
                    st.sampled_from(["idle", "setup", "busy", "blocked", "down"])
                )
                if machine["id"] == snap["decision"]["machine"]:
                    machine["state"] = "idle"  # only an idle machine can be dispatched to
        station = next(s for s in snap["stations"] if s["name"] == snap["decision"]["station"])
        template = station["queue"][0]
        changes = draw(st.lists(job, min_size=1, max_size=8))
        station["queue"] = [
            {**template, **c, "id": f"J-fuzz-{k}", "queue_entry_time": 0.0}
            for k, c in enumerate(changes)
        ]
        return snap

    return build()


def test_any_valid_snapshot_gets_a_decision_inside_the_queue(fuzz_server: Server) -> None:
    """Whatever the numbers, a valid snapshot is answered with a waiting job (policy or rule)."""
    with fuzz_server.client(headers=AUTH) as c:

        @given(snap=_perturbed_snapshots())
        @settings(max_examples=40, deadline=None, derandomize=True, database=None)
        def check(snap: dict[str, Any]) -> None:
            r = c.post("/v1/policies/serial5/decide", json=snap)
            _record(fuzz_server, r)
            assert r.status_code == 200, r.text
            body = r.json()
            queue = next(
                s["queue"] for s in snap["stations"] if s["name"] == body["decision"]["station"]
            )
            assert body["decision"]["job"] in {j["id"] for j in queue}
            assert body["fallback"] == (len(queue) > 4)  # beyond max_queue: the rule decides

        check()


def test_fuzz_server_is_still_healthy(fuzz_server: Server, tmp_path: Path) -> None:
    with fuzz_server.client(headers=AUTH) as c:
        assert c.get("/readyz").status_code == 200
        assert c.get("/v1/policies").json()[0]["loaded"] is True
