"""The plant view's server side: auth, replay frames equal to the twin's snapshots, the live
feed filled by both decision paths, and the compare mode's note without an evaluation run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from taktline.agents.rules import get_rule
from taktline.envs.spec import load_spec
from taktline.envs.twin import Twin
from taktline.serving import create_app
from taktline.serving.settings import Settings
from taktline.serving.ui_replay import Replay, line_frame
from tests.serving_support import API_KEY, AUTH

LINE, SEED = "bodyshop", 3


def _client(fast_path: bool, replay: Replay | None = None) -> TestClient:
    settings = Settings(
        env="production",
        api_keys=[API_KEY],  # type: ignore[list-item]
        policies={"line": "rule:SAME"},  # type: ignore[dict-item]
        fast_path=fast_path,
    )
    app = create_app(settings)
    app.state.replay = replay
    return TestClient(app)


@pytest.fixture(scope="module")
def replay() -> Replay:
    return Replay(load_spec(LINE), SEED, ["FIFO", "SAME"], frame_step=2.0, horizon=200.0)


@pytest.fixture
def client(replay: Replay) -> Iterator[TestClient]:
    with _client(True, replay) as c:
        yield c


def test_ui_page_is_public_and_its_data_needs_the_key(client: TestClient) -> None:
    page = client.get("/ui")
    assert page.status_code == 200 and "taktline plant view" in page.text
    assert client.get("/ui/static/view.js").status_code == 200
    assert client.get("/ui/api/auth").json() == {"auth_required": True}
    for path in ("/ui/api/info", "/ui/api/replay/frames?index=0", "/ui/api/metrics"):
        assert client.get(path).status_code == 401, path
        assert client.get(path, headers={"Authorization": "Bearer nope"}).status_code == 403
        assert client.get(path, headers=AUTH).status_code == 200, path


def test_replay_frames_are_the_twins_snapshots_at_their_times(
    client: TestClient, replay: Replay
) -> None:
    info = client.get("/ui/api/info", headers=AUTH).json()["replay"]
    assert info["policies"] == ["FIFO", "SAME"] and info["n_frames"] == 101
    for index in (0, 37, 100):
        body = client.get(f"/ui/api/replay/frames?index={index}", headers=AUTH).json()
        for rule, frame in zip(("FIFO", "SAME"), body["frames"], strict=True):
            twin = Twin(load_spec(LINE), SEED, get_rule(rule))
            twin.run_until_decision(index * 2.0)
            expected = line_frame(twin.snapshot(), replay.families)
            assert frame["time"] == index * 2.0
            assert {k: v for k, v in frame.items() if k != "kpis"} == expected, (rule, index)
            assert frame["kpis"]["profit"] == twin.kpis().profit


def test_replay_of_a_policy_through_decide_matches_the_rule_inline() -> None:
    """The decide(snapshot) + Twin.apply path and the rule as the twin's dispatcher agree."""
    spec = load_spec(LINE)
    inline = Replay(spec, SEED, ["SAME"], frame_step=5.0, horizon=100.0).runs[0]
    decided = Replay(spec, SEED, ["SAME"], frame_step=5.0, horizon=100.0).runs[0]
    from taktline.agents.policies import RulePolicy

    decided.twin = Twin(spec, SEED)  # no dispatcher: every decision goes through decide()
    decided.policy = RulePolicy("SAME")
    assert decided.frame(20) == inline.frame(20)
    assert decided.twin.kpis().completed == inline.twin.kpis().completed > 0


def test_replay_stream_sends_frames_as_server_sent_events(client: TestClient) -> None:
    with client.stream(
        "GET", "/ui/api/replay/stream?start=90&speed=100000", headers=AUTH
    ) as response:
        text = "".join(response.iter_text())
    events = [b for b in text.split("\n\n") if b.strip()]
    assert events[-1].startswith("event: end")
    frames = [json.loads(b.split("data: ", 1)[1]) for b in events if b.startswith("event: frame")]
    assert frames[0]["index"] == 90 and frames[-1]["index"] <= 100
    assert [f["frames"][0]["time"] for f in frames] == sorted(
        f["frames"][0]["time"] for f in frames
    )


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "routes"])
def test_live_feed_records_every_decision_served_on_either_path(fast_path: bool) -> None:
    twin = Twin(load_spec(LINE), SEED)
    twin.run_until_decision()
    snapshot = json.loads(twin.snapshot().model_dump_json())
    with _client(fast_path) as c:
        answers = [
            c.post("/v1/policies/line/decide", json=snapshot, headers=AUTH).json() for _ in range(3)
        ]
        feed = c.app.state.feed  # type: ignore[attr-defined]
        records = feed.since(0)
    assert [r["seq"] for r in records] == [1, 2, 3]
    for record, answer in zip(records, answers, strict=True):
        assert record["served_by"] == answer["served_by"]
        assert record["decision"]["job"] == answer["decision"]["job"]
        assert record["fallback"] is False and record["latency_ms"] > 0
        assert record["frame"]["time"] == snapshot["time"]


def test_compare_mode_says_when_mlflow_has_no_evaluation_run(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    body = client.get("/ui/api/compare", headers=AUTH).json()
    assert body["run"] is None and "no evaluate or compare run" in body["message"]
