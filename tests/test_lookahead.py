"""The lookahead on twin forks: parsing, decisions a plant can carry out, the budget, serving,
and that it beats its base rule where the base rule is poor (paired, on held-out seeds)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from taktline.agents.lookahead import LookaheadPolicy, parse_config, pick
from taktline.agents.policies import load_policy
from taktline.agents.rules import get_rule
from taktline.envs.spec import load_spec
from taktline.envs.twin import Twin
from taktline.errors import PolicyError
from tests.envs_support import paired_difference
from tests.ray_support import Cluster

# One machine, two colour families, a long changeover: FIFO changes over for every other job,
# staying on a colour saves a changeover. A lookahead with FIFO as its base rule must find that.
CHANGEOVER_LINE: dict[str, Any] = {
    "name": "changeover1",
    "time_unit": "min",
    "stations": [
        {"name": "feed", "machines": 1, "power": {"busy_kw": 1.0}},
        {
            "name": "booth",
            "machines": 1,
            "setups": {"default": {"dist": "deterministic", "value": 1.5}},
            "power": {"busy_kw": 10.0, "setup_kw": 10.0},
        },
    ],
    "products": [
        {
            "name": p,
            "family": p,
            "revenue": 50.0,
            "due_date_allowance": 40.0,
            "routing": [
                {"station": "feed", "processing_time": {"dist": "exponential", "mean": 0.5}},
                {"station": "booth", "processing_time": {"dist": "exponential", "mean": 1.0}},
            ],
        }
        for p in ("red", "blue")
    ],
    "arrivals": {"kind": "poisson", "rate": 0.6},
    "costs": {"wip_cost_per_job_time": 0.5, "tardiness_cost_per_time": 1.0, "setup_cost": 10.0},
    "horizon": 240.0,
    "warmup": 40.0,
}


@pytest.fixture(scope="module")
def changeover_spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lines") / "changeover1.yaml"
    path.write_text(yaml.safe_dump(CHANGEOVER_LINE))
    return path


def _decision_snapshot(line: str, seed: int, skip: int = 40) -> tuple[Twin, Any]:
    """A twin at a dispatch decision with at least two jobs waiting, and its snapshot."""
    twin = Twin(load_spec(line), seed=seed)
    fifo = get_rule("FIFO")
    while True:
        req = twin.run_until_decision()
        assert req is not None
        if req.kind == "dispatch" and len(req.candidates) >= 2 and skip <= 0:
            return twin, twin.snapshot()
        skip -= 1
        twin.dispatch(fifo.dispatch(req.candidates, twin.now, None))


# ---- parsing ---------------------------------------------------------------------------------
def test_parse_reads_every_parameter_and_keeps_defaults() -> None:
    cfg = parse_config("lookahead(base=ATC, horizon=45, k=3, margin=0.5, max_candidates=4)")
    assert (cfg.base, cfg.horizon, cfg.k, cfg.margin, cfg.max_candidates) == (
        "ATC",
        45.0,
        3,
        0.5,
        4,
    )
    assert parse_config("LOOKAHEAD").k == 8  # no arguments: the defaults
    assert parse_config(cfg.label()) == cfg  # the label builds the same config again


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("LOOKAHEAD(k=0)", "LOOKAHEAD k: must be an integer >= 1, got 0"),
        ("LOOKAHEAD(horizon=-5)", "LOOKAHEAD horizon: must be a positive time, got -5.0"),
        ("LOOKAHEAD(horizon=soon)", "LOOKAHEAD horizon: expected a float, got 'soon'"),
        ("LOOKAHEAD(depth=3)", "unknown parameter 'depth=3'"),
        ("LOOKAHEAD(base=FASTEST)", "FASTEST"),
        ("LOOKAHEAD(k=2", "expected LOOKAHEAD(base=SAME,horizon=60,k=8)"),
    ],
)
def test_a_bad_parameter_is_refused_naming_it(text: str, named: str) -> None:
    with pytest.raises(PolicyError, match=None) as err:
        load_policy(text)
    assert named in str(err.value)


def test_pick_keeps_the_base_choice_unless_the_winner_is_clear() -> None:
    rng = np.random.default_rng(0)
    noise = rng.normal(0.0, 1.0, size=(8, 1))
    tie = np.hstack([noise, noise + rng.normal(0.0, 1.0, size=(8, 1))])  # no real difference
    clear = np.hstack([noise, noise + 5.0 + rng.normal(0.0, 0.1, size=(8, 1))])
    assert pick(clear, base_col=0, margin=1.5) == 1
    assert pick(tie, base_col=0, margin=1e9) == 0
    assert pick(np.zeros((0, 2)), base_col=0, margin=1.5) == 0  # no scenario: the base pick


# ---- decisions -------------------------------------------------------------------------------
def test_decide_names_a_waiting_job_at_the_pending_machine_and_the_twin_carries_it_out() -> None:
    twin, snap = _decision_snapshot("bodyshop", seed=5)
    policy = LookaheadPolicy.parse("LOOKAHEAD(base=SAME,horizon=30,k=3)")
    decision = policy.decide(snap)
    assert snap.decision is not None
    assert (decision.station, decision.machine) == (snap.decision.station, snap.decision.machine)
    station = next(s for s in snap.stations if s.name == decision.station)
    assert decision.job in {r.id for r in station.queue}
    twin.apply(decision)  # a plant could do it: the twin accepts it
    assert policy.decide(snap) == decision  # the same snapshot, the same answer


def test_decisions_depend_on_the_snapshot_only_never_on_the_twins_future() -> None:
    """A twin restored from the snapshot with another seed has another future; the lookahead
    sees the same snapshot and so decides the same (nothing is read off the true future)."""
    spec = load_spec("bodyshop")
    _, snap = _decision_snapshot("bodyshop", seed=11)
    other = Twin.from_snapshot(spec, snap, seed=999)
    assert other.run_until_decision() is not None
    policy = LookaheadPolicy.parse("LOOKAHEAD(base=SAME,horizon=30,k=3)", spec)
    assert policy.decide(other.snapshot()).job == policy.decide(snap).job


def test_rules_mode_starts_the_job_one_of_its_rules_would_start() -> None:
    _, snap = _decision_snapshot("bodyshop", seed=8)
    policy = LookaheadPolicy.parse("LOOKAHEAD(base=SAME,horizon=30,k=3,mode=rules,rules=SPT+EDD)")
    assert policy.config.mode == "rules"
    picks = {load_policy(r).decide(snap).job for r in ("SAME", "SPT", "EDD")}
    assert policy.decide(snap).job in picks
    with pytest.raises(PolicyError, match="LOOKAHEAD mode: must be jobs or rules"):
        parse_config("LOOKAHEAD(mode=dreams)")


def test_out_of_budget_it_answers_with_the_base_rule_and_says_so() -> None:
    _, snap = _decision_snapshot("bodyshop", seed=2)
    policy = LookaheadPolicy.parse("LOOKAHEAD(base=SAME,horizon=30,k=3,budget_ms=0.000001)")
    decision = policy.decide(snap)
    assert decision.note is not None and "budget_ms" in decision.note
    assert decision.rule == "SAME"  # flagged: the base rule answered, not the search
    assert decision.job == load_policy("SAME").decide(snap).job


def test_a_snapshot_of_another_line_is_refused_naming_the_spec_hash() -> None:
    _, snap = _decision_snapshot("bodyshop", seed=2)
    policy = LookaheadPolicy(spec=load_spec("paintshop"))
    with pytest.raises(PolicyError, match="spec_hash"):
        policy.decide(snap)


@pytest.mark.slow
def test_lookahead_beats_its_poor_base_rule_on_held_out_seeds(changeover_spec: Path) -> None:
    """FIFO changes colour for every other job; the lookahead (FIFO in its rollouts) sees the
    changeover's cost in the window and stays on the colour: paired over 4 seeds, the 95% CI of
    profit(lookahead) - profit(FIFO) lies above zero."""
    spec = load_spec(changeover_spec)
    fifo, look = [], []
    policy = LookaheadPolicy.parse("LOOKAHEAD(base=FIFO,horizon=20,k=4)", spec)
    for seed in range(100, 104):
        assert spec.horizon is not None
        base = Twin(spec, seed, get_rule("FIFO"), warmup=spec.warmup)
        base.run(spec.horizon)
        fifo.append(base.kpis().profit)
        twin = Twin(spec, seed, None, warmup=spec.warmup)
        policy.run(twin, spec.horizon)
        look.append(twin.kpis().profit)
    diff = paired_difference(np.asarray(look), np.asarray(fifo))
    assert diff.low > 0, (look, fifo)
    assert policy.stats["changed"] > 0


def test_simulate_runs_a_lookahead_from_the_command_line(changeover_spec: Path) -> None:
    from typer.testing import CliRunner

    from taktline.cli import app

    out = CliRunner().invoke(
        app,
        [
            "simulate",
            str(changeover_spec),
            "-p",
            "FIFO",
            "-p",
            "LOOKAHEAD(base=FIFO,horizon=20,k=2)",
            "-n",
            "2",
            "--horizon",
            "120",
            "--json",
        ],
    )
    assert out.exit_code == 0, out.output
    import json

    results = json.loads(out.stdout)["results"]
    assert set(results) == {"FIFO", "LOOKAHEAD(base=FIFO,horizon=20.0,k=2)"}


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_rollouts_on_ray_decide_as_in_process(
    ray_cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``workers=2`` splits the scenarios over two Ray tasks on the cluster of RAY_ADDRESS; the
    scenarios and their order are the same, so the scores and the decision are too."""
    import ray

    monkeypatch.setenv("RAY_ADDRESS", ray_cluster.address)
    spec = load_spec("bodyshop")
    snaps = [_decision_snapshot("bodyshop", seed=s)[1] for s in (21, 22, 23)]
    here = LookaheadPolicy.parse("LOOKAHEAD(base=SAME,horizon=30,k=4,margin=0)", spec)
    there = LookaheadPolicy.parse("LOOKAHEAD(base=SAME,horizon=30,k=4,margin=0,workers=2)", spec)
    try:
        assert [there.decide(s).job for s in snaps] == [here.decide(s).job for s in snaps]
        assert there.stats == here.stats  # searched as often, changed the base pick as often
        assert here.stats["searched"] == 3
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_served_lookahead_decides_on_a_posted_snapshot_and_flags_its_deadline(
    tmp_path: Path,
) -> None:
    """``rule:LOOKAHEAD(...)`` over a real uvicorn: the decision for a posted plant snapshot
    comes from the search (restored with Twin.from_snapshot); out of budget, the base rule
    answers and ``decision.note`` says so."""
    from tests.serving_support import AUTH, dispatch_snapshots, run_server

    snaps = [s for s in dispatch_snapshots("bodyshop", 60, seed=4) if _waiting(s) >= 2][:3]
    policies = {
        "look": "rule:LOOKAHEAD(base=SAME,horizon=30,k=3,line=bodyshop)",
        "hasty": "rule:LOOKAHEAD(base=SAME,horizon=30,k=3,line=bodyshop,budget_ms=0.000001)",
    }
    local = LookaheadPolicy.parse("LOOKAHEAD(base=SAME,horizon=30,k=3,line=bodyshop)")
    with run_server(policies, tmp_path) as server, server.client(headers=AUTH) as client:
        for snap in snaps:
            body = client.post("/v1/policies/look/decide", json=snap).json()
            assert body["fallback"] is False, body
            assert body["served_by"].endswith(
                "rule:LOOKAHEAD(base=SAME,horizon=30.0,k=3,line=bodyshop)"
            )
            assert body["decision"]["job"] == local.decide(snap).job  # the same decide path
            hasty = client.post("/v1/policies/hasty/decide", json=snap).json()
            assert hasty["decision"]["note"].startswith("lookahead: no scenario")
            assert hasty["decision"]["job"] == load_policy("SAME").decide(snap).job


def _waiting(snapshot: dict[str, Any]) -> int:
    d = snapshot["decision"]
    station = next(s for s in snapshot["stations"] if s["name"] == d["station"])
    return len(station["queue"])
