"""The fast path's snapshot validator: the model's rules, dicts out.

``serving.fastpath`` validates line snapshots with a validator derived from ``Snapshot``'s core
schema that returns plain dicts. These tests hold it to the model: on the twin's snapshots it
gives exactly ``model_dump()``, and on hundreds of broken variants it rejects exactly what the
model rejects. (``test_serving_api`` compares whole answers of the fast path and the routes.)
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError, model_validator

from taktline.serving.fastpath import _LINE, dict_validator
from taktline.serving.schemas import Snapshot, line_snapshot_problem
from tests.serving_support import dispatch_snapshots

BAD_VALUES: list[Any] = [None, "x", -1, 1.5, [], {}, True, float("nan"), float("inf"), ""]


def dict_path(body: bytes) -> dict[str, Any] | None:
    """What the fast path makes of a body: the snapshot, or ``None`` (rejected)."""
    try:
        snapshot = _LINE.validate_json(body)
    except ValidationError:
        return None
    return None if line_snapshot_problem(snapshot) else snapshot


def model_path(body: bytes) -> dict[str, Any] | None:
    try:
        return Snapshot.model_validate_json(body).model_dump()
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
    ):
        out = copy.deepcopy(snapshot)
        change(out)
        yield out


@pytest.mark.parametrize("line", ["bodyshop", "serial5"])
def test_dict_validator_gives_exactly_model_dump_on_twin_snapshots(line: str) -> None:
    snapshots = dispatch_snapshots(line, 60, seed=3)
    assert len(snapshots) >= 30
    for snapshot in snapshots:
        body = json.dumps(snapshot).encode()
        expected = model_path(body)
        assert expected is not None
        assert dict_path(body) == expected


def test_dict_validator_rejects_what_the_model_rejects() -> None:
    base = dispatch_snapshots("bodyshop", 20, seed=1)[-1]
    accepted = rejected = 0
    for variant in variants(base):
        body = json.dumps(variant).encode()  # NaN/inf become the NaN/Infinity tokens
        expected = model_path(body)
        assert dict_path(body) == expected, body[:300]
        if expected is None:
            rejected += 1
        else:
            accepted += 1
    # both outcomes are exercised: the comparison is not trivially "both reject"
    assert rejected > 200 and accepted > 10, (accepted, rejected)


def test_dict_validator_refuses_a_model_validator_it_was_not_given() -> None:
    class Checked(BaseModel):
        x: int

        @model_validator(mode="after")
        def _positive(self) -> Checked:
            if self.x <= 0:
                raise ValueError("x: must be positive")
            return self

    with pytest.raises(TypeError, match="model validator"):
        dict_validator(Checked, {})
    plain = dict_validator(Checked, {Checked._positive: lambda d: None})
    assert plain.validate_json(b'{"x": 3}') == {"x": 3}
