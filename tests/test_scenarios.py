"""The scenario suite: lines where control matters load, are listed, run, and separate rules."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from taktline.agents.rules import get_release_rule, get_rule
from taktline.cli import app
from taktline.envs.spec import bundled_lines, load_spec
from taktline.envs.twin import Twin
from taktline.training.evaluate import mean_ci

SCENARIOS = ("paintshop", "release_breakdowns", "dynamic_jobshop", "paint_assembly", "cut_weld")
SEEDS = range(6)

# (best, worst) as (dispatching rule, release rule), chosen from docs/scenarios.md's table
SEPARATED = {
    "paintshop": (("SAME", "IMMEDIATE"), ("SPT", "IMMEDIATE")),
    "release_breakdowns": (("FIFO", "CONWIP(10)"), ("FIFO", "IMMEDIATE")),
    "dynamic_jobshop": (("ATC", "IMMEDIATE"), ("FIFO", "IMMEDIATE")),
    "paint_assembly": (("SAME", "IMMEDIATE"), ("FIFO", "IMMEDIATE")),
    "cut_weld": (("SAME", "IMMEDIATE"), ("FIFO", "IMMEDIATE")),
}


def _profit(line: str, rule: str, release: str, seed: int) -> float:
    twin = Twin(load_spec(line), seed, get_rule(rule), get_release_rule(release))
    twin.run()
    return twin.kpis().profit


@pytest.mark.parametrize("line", SCENARIOS)
def test_scenario_loads_with_a_description_and_a_horizon(line: str) -> None:
    spec = load_spec(line)
    assert spec.name == line and len(spec.description.split()) > 40
    assert spec.horizon is not None and spec.horizon > spec.warmup
    assert spec.costs.tardiness_cost_per_time > 0 or spec.costs.wip_cost_per_job_time > 0


def test_scenarios_are_listed_by_taktline_lines() -> None:
    assert set(SCENARIOS) <= set(bundled_lines())
    out = CliRunner().invoke(app, ["lines", "--json"])
    assert out.exit_code == 0, out.output
    assert set(SCENARIOS) <= {row["name"] for row in json.loads(out.output)}


@pytest.mark.parametrize("line", SCENARIOS)
def test_scenario_runs_its_default_horizon_under_a_rule_within_half_a_second(line: str) -> None:
    start = time.perf_counter()
    twin = Twin(load_spec(line), 0, get_rule("ATC"))
    twin.run()
    elapsed = time.perf_counter() - start
    k = twin.kpis()
    assert k.completed > 100 and np.isfinite(k.profit)
    assert elapsed < 2.0  # ~0.01-0.05 s measured; generous for a loaded shared machine


@pytest.mark.parametrize("line", SCENARIOS)
def test_best_and_worst_rules_differ_by_a_paired_ci_that_excludes_zero(line: str) -> None:
    best, worst = SEPARATED[line]
    d = np.array([_profit(line, *best, s) - _profit(line, *worst, s) for s in SEEDS])
    lo, hi = mean_ci(d)
    assert lo > 0, (line, d.mean(), lo, hi)
