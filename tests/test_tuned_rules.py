"""Parametric rules: parsing, exactness of the defaults, and ``taktline optimize`` on Ray."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from taktline.agents.policies import RulePolicy
from taktline.agents.rules import get_rule
from taktline.agents.tuned import TunedRule, parse_rule, tuned_rule
from taktline.envs.spec import load_spec
from taktline.envs.twin import Twin
from taktline.errors import PolicyError
from tests.ray_support import Cluster


@pytest.mark.parametrize(
    ("text", "name", "params"),
    [
        ("ATC(k=2.5)", "ATC(k=2.5)", {"k": 2.5}),
        ("atc( K = 2 )", "ATC", {"k": 2.0}),
        ("SAME(threshold=3, pick=largest)", "SAME(threshold=3,pick=largest)", {"threshold": 3}),
        ("SAME(slack=-5,order=EDD)", "SAME(slack=-5,order=edd)", {"order": "edd"}),
        ("SAME()", "SAME", {"pick": "fifo"}),
        ("SLACKHYB(w=0.5)", "SLACKHYB(w=0.5)", {"w": 0.5}),
    ],
)
def test_parametric_names_parse_to_canonical_names_and_values(
    text: str, name: str, params: dict[str, object]
) -> None:
    rule = get_rule(text)
    assert isinstance(rule, TunedRule)
    assert rule.name == name
    assert params.items() <= rule.params.items()
    # the canonical name parses back to the same rule (all defaults: the plain rule's name)
    assert get_rule(rule.name) == rule if "(" in rule.name else get_rule(name).name == name


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("ATC(q=1)", ["parameter 'q'", "ATC takes k"]),
        ("ATC(k=-1)", ["parameter k", "> 0", "'-1'"]),
        ("ATC(k=fast)", ["parameter k", "a number", "'fast'"]),
        ("ATC(k)", ["'k'", "name=value"]),
        ("SAME(pick=big)", ["parameter pick", "fifo|largest|edd", "'big'"]),
        ("SAME(threshold=2.5)", ["parameter threshold", "whole number", "'2.5'"]),
        ("SAME(threshold=0)", ["parameter threshold", ">= 1", "'0'"]),
        ("SPT(k=1)", ["SPT takes no parameters", "ATC, SAME, SLACKHYB"]),
        ("FOO(k=1)", ["FOO is no dispatching rule"]),
        ("ATC(k=1", ["expected FAMILY(name=value"]),
        ("ATC(k=1,k=2)", ["k given twice"]),
    ],
)
def test_bad_parametric_names_raise_one_clear_error_naming_the_parameter(
    text: str, words: list[str]
) -> None:
    with pytest.raises(PolicyError) as err:
        get_rule(text)
    for w in words:
        assert w in str(err.value), str(err.value)


@pytest.mark.parametrize(
    ("line", "plain", "family", "params"),
    [
        ("paintshop", "SAME", "SAME", {}),
        ("bodyshop", "SAME", "SAME", {"threshold": "inf", "pick": "fifo"}),
        ("dynamic_jobshop", "ATC", "ATC", {"k": 2.0}),
        ("dynamic_jobshop", "CR", "SLACKHYB", {"w": 1.0}),
    ],
)
def test_parametric_rule_with_default_parameters_decides_exactly_as_the_plain_rule(
    line: str, plain: str, family: str, params: dict[str, object]
) -> None:
    rule = tuned_rule(family, **params)
    assert isinstance(rule, TunedRule) and type(get_rule(plain)) is not TunedRule
    for seed in (0, 1):
        a = Twin(load_spec(line), seed, get_rule(plain), log_events=True)
        b = Twin(load_spec(line), seed, rule, log_events=True)
        a.run()
        b.run()
        assert a.events() == b.events() and len(a.events()) > 500
        assert a.kpis().profit == b.kpis().profit


def test_tuned_parameters_change_decisions_on_the_paint_shop() -> None:
    spec = load_spec("paintshop")
    a = Twin(spec, 0, get_rule("SAME"))
    b = Twin(spec, 0, get_rule("SAME(threshold=8)"))
    a.run()
    b.run()
    assert a.kpis().setups != b.kpis().setups


def test_rule_policy_decides_with_a_parametric_rule_on_a_snapshot() -> None:
    twin = Twin(load_spec("paintshop"), seed=2)
    while True:
        req = twin.run_until_decision()
        assert req is not None
        if req.kind == "dispatch" and len(req.candidates) >= 3:
            break
        twin.dispatch(0)
    snap = twin.snapshot()
    rule = parse_rule("SAME(threshold=2,pick=largest)")
    want = req.candidates[
        rule.dispatch(req.candidates, twin.now, twin.machines[req.machine].last_family)
    ]
    decision = RulePolicy("SAME(threshold=2,pick=largest)").decide(snap)
    assert decision.kind == "dispatch" and decision.job == f"J-{want.id}"


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_optimize_on_ray_with_embedded_mlflow_keeps_a_rule_no_worse_than_the_untuned_one(
    ray_cluster: Cluster, tmp_path: Path
) -> None:
    env = ray_cluster.env()
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "taktline.cli",
            "optimize",
            "dynamic_jobshop",
            "--family",
            "ATC",
            "--trials",
            "4",
            "--replications",
            "3",
            "--holdout",
            "6",
            "--json",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(proc.stdout[proc.stdout.index("{") :])
    v = out["verdict"]
    chosen = (
        v["policy_mean"] if out["chosen"]["rule"] == out["tuned"]["rule"] else v["baseline_mean"]
    )
    assert chosen >= v["baseline_mean"]  # never worse than the best untuned rule, held out
    assert out["trials_run"] >= 1 and out["tuned"]["rule"].startswith("ATC")
    assert (tmp_path / "mlflow.db").exists()
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = mlflow.get_run(out["run_id"])
    assert run.data.tags["verdict"] in ("won", "lost") and "chosen" in run.data.tags
    assert (out["model_version"] is not None) == v["won"]
