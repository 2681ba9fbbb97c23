"""The snapshot contract: one typed, versioned value that the twin emits, a client posts and the
codecs read — round trips exactly through JSON, refuses other versions, names wrong fields."""

from __future__ import annotations

import json
from typing import Any

import pytest

from taktline.envs import twin as twin_module
from taktline.envs.snapshot import (
    SCHEMA_VERSION,
    STATE_NAMES,
    JobShopSnapshot,
    LineSnapshot,
    MachineState,
    as_snapshot,
    line_candidates,
)
from taktline.envs.spec import load_spec
from taktline.envs.twin import Twin
from taktline.errors import PolicyError


def _decision_points(line: str, seed: int, n: int) -> list[LineSnapshot]:
    twin = Twin(load_spec(line), seed=seed)
    out = []
    while len(out) < n:
        req = twin.run_until_decision(2000.0)
        if req is None:
            break
        out.append(twin.snapshot())
        if req.kind == "release":
            twin.release(req.pool_size)
        else:
            twin.dispatch(len(req.candidates) - 1)
    return out


@pytest.mark.parametrize("line", ["bodyshop", "serial5", "machining", "conwip_loop"])
def test_twin_snapshots_round_trip_through_json_exactly(line: str) -> None:
    snaps = _decision_points(line, seed=4, n=40)
    assert len(snaps) >= 10
    for snap in snaps:
        body = json.loads(snap.model_dump_json())
        back = as_snapshot(body)
        assert isinstance(back, LineSnapshot)
        assert back == snap  # the validated body is the twin's value, field for field
        assert back.schema_version == SCHEMA_VERSION


def test_machine_states_are_the_twin_states_in_order() -> None:
    twin_codes = [getattr(twin_module, s.name) for s in MachineState]
    assert twin_codes == list(range(5))
    assert [MachineState.from_index(i).code for i in range(5)] == list(range(5))
    assert STATE_NAMES == ("idle", "setup", "busy", "blocked", "down")


def test_busy_machines_carry_their_job_and_elapsed_time() -> None:
    seen = 0
    for snap in _decision_points("bodyshop", seed=7, n=60):
        for station in snap.stations:
            for m in station.machines:
                assert m.elapsed >= 0.0
                if m.state in (MachineState.BUSY, MachineState.BLOCKED):
                    assert m.in_process is not None and m.in_process.id == m.job
                    seen += 1
                elif m.state == MachineState.IDLE:
                    assert m.job is None and m.in_process is None
    assert seen > 10


@pytest.mark.parametrize("version", [0, 2, "1", None])
def test_another_schema_version_is_refused_naming_the_field(version: Any) -> None:
    body = _decision_points("serial5", seed=1, n=1)[0].model_dump(mode="json")
    body["schema_version"] = version
    with pytest.raises(PolicyError, match=r"schema_version: .*got"):
        as_snapshot(body)


def test_a_body_without_schema_version_is_read_as_the_current_one() -> None:
    body = _decision_points("serial5", seed=1, n=1)[0].model_dump(mode="json")
    del body["schema_version"]
    assert as_snapshot(body).schema_version == SCHEMA_VERSION


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (lambda s: s["stations"][0]["machines"][0].update(state="asleep"), "state.*'asleep'"),
        (lambda s: s.update(wip=-1), "wip: .*greater than or equal to 0.*-1"),
        (lambda s: s.update(colour="red"), "colour: Extra inputs are not permitted"),
        (lambda s: s["decision"].update(machine="nowhere.M1"), "decision.machine: 'nowhere.M1'"),
    ],
)
def test_a_wrong_field_is_named_with_its_value(mutate: Any, words: str) -> None:
    body = _decision_points("serial5", seed=1, n=1)[0].model_dump(mode="json")
    mutate(body)
    with pytest.raises(PolicyError, match=words):
        as_snapshot(body)


def test_a_job_shop_body_becomes_a_job_shop_snapshot() -> None:
    from taktline.envs.encoding_jobshop import jobshop_snapshot
    from taktline.envs.jobshop import JobShopState, load_bundled

    snap = jobshop_snapshot(JobShopState(load_bundled("ft06")))
    body = snap.model_dump(mode="json") if hasattr(snap, "model_dump") else snap
    back = as_snapshot(json.loads(json.dumps(body)))
    assert isinstance(back, JobShopSnapshot) and back.schema_version == SCHEMA_VERSION


def test_candidates_are_the_pending_stations_queue_in_order() -> None:
    for snap in _decision_points("machining", seed=3, n=30):
        if snap.decision is None or snap.decision.kind != "dispatch":
            continue
        station = next(s for s in snap.stations if s.name == snap.decision.station)
        assert [c.name for c in line_candidates(snap)] == [j.id for j in station.queue]
