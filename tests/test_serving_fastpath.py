"""The fast path validates as the routes do, and authorizes as they do.

``serving.fastpath`` validates a raw body with ``validate_json`` of the member of the routes'
body type it likely is; FastAPI parses the JSON and validates the union. These tests hold the
two to each other on the twin's snapshots and on hundreds of broken variants: the fast path
accepts exactly what the route accepts, as the same value, except that a wrong guess may only
reject (the route then answers). ``test_serving_api`` compares whole answers of the fast path
and the routes over HTTP; the last test holds the fast path's key check to the routes'.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import HTTPException
from pydantic import TypeAdapter, ValidationError

from taktline.serving.fastpath import validate_body
from taktline.serving.schemas import AnySnapshot
from taktline.serving.security import caller_authorized, check_api_key
from tests.serving_support import dispatch_snapshots

BAD_VALUES: list[Any] = [None, "x", -1, 1.5, [], {}, True, float("nan"), float("inf"), ""]
_ROUTE_BODY: TypeAdapter[Any] = TypeAdapter(AnySnapshot)


def fast_path(body: bytes) -> dict[str, Any] | None:
    """What the fast path makes of a body: the snapshot's JSON, or ``None`` (rejected)."""
    try:
        return validate_body("decide", body).model_dump(mode="json")
    except ValidationError:
        return None


def route_path(body: bytes) -> dict[str, Any] | None:
    """What the route makes of it: FastAPI's ``json.loads``, then the body type's validation."""
    try:
        return _ROUTE_BODY.validate_python(json.loads(body)).model_dump(mode="json")
    except ValidationError:
        return None


def variants(snapshot: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Broken (and some still valid) versions of ``snapshot``, one change each."""
    station = next(s for s in snapshot["stations"] if s["queue"])
    si = snapshot["stations"].index(station)
    places: list[tuple[str, Any]] = [
        ("top", lambda s: s),
        ("decision", lambda s: s["decision"]),
        ("station", lambda s: s["stations"][si]),
        ("job", lambda s: s["stations"][si]["queue"][0]),
        ("machine", lambda s: s["stations"][si]["machines"][0]),
    ]
    for _, get in places:
        for key in list(get(snapshot)):
            for value in [*BAD_VALUES, "<drop>"]:
                out = copy.deepcopy(snapshot)
                if value == "<drop>":
                    del get(out)[key]
                else:
                    get(out)[key] = value
                yield out
        out = copy.deepcopy(snapshot)
        get(out)["unexpected"] = 1
        yield out
    for change in (
        lambda s: s["decision"].update(station="nowhere"),
        lambda s: s["decision"].update(machine="nothing"),
        lambda s: s["stations"][si].update(queue=[]),
        lambda s: s["decision"].update(kind="release", station=None, machine=None),
        lambda s: s["stations"][si]["machines"][0].update(state="broken"),
        lambda s: s.update(stations=[]),
        lambda s: s.update(pool=[copy.deepcopy(s["stations"][si]["queue"][0])]),
        lambda s: s.update(schema_version=2),
        lambda s: s.update(kind="jobshop"),
        lambda s: s["stations"][si]["queue"][0].update(family="jobshop"),  # a wrong guess
    ):
        out = copy.deepcopy(snapshot)
        change(out)
        yield out


@pytest.mark.parametrize("line", ["bodyshop", "serial5"])
def test_fast_path_reads_the_twins_snapshots_as_the_route_does(line: str) -> None:
    snapshots = dispatch_snapshots(line, 60, seed=3)
    assert len(snapshots) >= 30
    for snapshot in snapshots:
        body = json.dumps(snapshot).encode()
        expected = route_path(body)
        assert expected == snapshot  # the twin's snapshot is valid and round-trips
        assert fast_path(body) == expected


def test_fast_path_rejects_what_the_route_rejects() -> None:
    base = dispatch_snapshots("bodyshop", 20, seed=1)[-1]
    accepted = rejected = misses = 0
    for variant in variants(base):
        body = json.dumps(variant).encode()  # NaN/inf become the NaN/Infinity tokens
        expected, fast = route_path(body), fast_path(body)
        guessed_wrong = fast is None and b'"jobshop"' in body  # the route answers it
        assert fast == expected or guessed_wrong, body[:300]
        misses += fast != expected
        if expected is None:
            rejected += 1
        else:
            accepted += 1
    # both outcomes are exercised: the comparison is not trivially "both reject"
    assert rejected > 200 and accepted > 10, (accepted, rejected)
    assert misses == 1  # the job family named "jobshop": the route answered it


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer k-1", "bearer k-1", "Bearer  k-1", "Bearer k-1 ", "Bearer k-2",
     "Basic k-1", "Bearer", "Bearer ", "k-1", "Bearer k-1x"],
)  # fmt: skip
def test_fast_path_admits_exactly_the_callers_the_routes_admit(header: str | None) -> None:
    keys = [b"k-1"]
    try:
        check_api_key(header, keys, enabled=True)
        route_admits = True
    except HTTPException as exc:
        assert exc.status_code in (401, 403)
        route_admits = False
    assert caller_authorized(header, keys, enabled=True) is route_admits
    assert caller_authorized(header, keys, enabled=False)  # auth off: everyone
