"""Schemathesis fuzzes every operation of the live server's OpenAPI schema: never a 5xx."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from tests.serving_support import AUTH, Server, dispatch_snapshots, make_bundle, run_server


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("fuzz")
    bundle = make_bundle(tmp / "b", "serial5", max_queue=4)
    with run_server(
        {"serial5": str(bundle)}, tmp, env={"TAKTLINE_MAX_REQUEST_BYTES": "65536"}
    ) as s:
        yield s


def test_no_operation_answers_a_server_error(fuzz_server: Server) -> None:
    """Positive and negative inputs, ~30 per operation; POSTs aimed at the configured policy."""
    schema = schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 7
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=30,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def fuzz(case: schemathesis.Case) -> None:
            if case.path_parameters and case.operation.method.upper() == "POST":
                case.path_parameters = {"name": "serial5"}  # reach the policy, not a 404
            case.call_and_validate(headers=AUTH, checks=[not_a_server_error])

        fuzz()


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
            {**template, **c, "id": f"J-{k}", "queue_entry_time": 0.0}
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
