"""Rule priorities shared by envs and agents, and the ``taktline envs`` command."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from types import SimpleNamespace

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from taktline.agents.rules import get_rule
from taktline.envs.priorities import DISPATCH_RULES, RuleDispatcher, rule_choice
from taktline.errors import PolicyError


def _jobs(rng: np.random.Generator, n: int) -> list[SimpleNamespace]:
    # coarse values so that ties (and the tie-break) happen often
    return [
        SimpleNamespace(
            id=int(i),
            family=str(rng.choice(["a", "b"])),
            processing_time=float(rng.integers(1, 4)),
            remaining_work=float(rng.integers(3, 8)),
            remaining_ops=int(rng.integers(1, 4)),
            due_date=float(rng.choice([8.0, 11.0, 20.0, 30.0, np.inf])),
            arrival_time=0.0,
            queue_entry_time=float(rng.integers(0, 3)),
        )
        for i in rng.permutation(n)
    ]


def _atc(c: SimpleNamespace, now: float, jobs: list[SimpleNamespace]) -> float:
    p_bar = sum(j.processing_time for j in jobs) / len(jobs)
    slack = max(0.0, c.due_date - c.processing_time - now)
    return (1.0 / c.processing_time) * math.exp(-slack / (2.0 * p_bar))  # k = 2


# The rule definitions of the agents' rules module docstring, written out independently of
# ``taktline.envs.priorities``: a priority where the smallest starts first.
REFERENCE: dict[str, Callable[[SimpleNamespace, float, str | None, list[SimpleNamespace]], float]]
REFERENCE = {
    "FIFO": lambda c, now, fam, jobs: c.queue_entry_time,
    "SPT": lambda c, now, fam, jobs: c.processing_time,
    "LPT": lambda c, now, fam, jobs: -c.processing_time,
    "EDD": lambda c, now, fam, jobs: c.due_date,
    "MWKR": lambda c, now, fam, jobs: -c.remaining_work,
    "MOPNR": lambda c, now, fam, jobs: -c.remaining_ops,
    "CR": lambda c, now, fam, jobs: (c.due_date - now) / c.remaining_work,
    "ATC": lambda c, now, fam, jobs: -_atc(c, now, jobs),  # largest ATC index first
    "SAME": lambda c, now, fam, jobs: 0 if c.family == fam else 1,
}


def _reference_choice(name: str, jobs: list[SimpleNamespace], now: float, fam: str | None) -> int:
    """The documented choice by full sort: priority, then queue entry time, then lowest id."""
    key = REFERENCE[name]
    order = sorted(
        range(len(jobs)),
        key=lambda i: (key(jobs[i], now, fam, jobs), jobs[i].queue_entry_time, jobs[i].id),
    )
    return order[0]


def test_rule_choice_and_the_agents_rules_match_the_documented_definitions_including_ties() -> None:
    assert set(REFERENCE) == set(DISPATCH_RULES)  # a new rule needs its reference here
    rng = np.random.default_rng(0)
    ties = 0
    for _ in range(300):
        jobs = _jobs(rng, int(rng.integers(1, 7)))
        family = [None, "a", "b"][int(rng.integers(3))]
        for name in DISPATCH_RULES:
            expect = _reference_choice(name, jobs, 5.0, family)
            keys = [REFERENCE[name](j, 5.0, family, jobs) for j in jobs]
            ties += keys.count(keys[expect]) > 1
            assert rule_choice(name, jobs, 5.0, family) == expect, (name, family, jobs)
            assert get_rule(name).dispatch(jobs, 5.0, family) == expect, (name, family, jobs)
            assert RuleDispatcher(name.lower()).dispatch(jobs, 5.0, family) == expect
    assert ties > 500  # the tie-break is exercised, not just the keys


def test_ties_go_to_the_earliest_queue_entry_then_the_lowest_id() -> None:
    def job(i: int, queued: float) -> SimpleNamespace:
        return SimpleNamespace(
            id=i,
            family="a",
            processing_time=2.0,
            remaining_work=2.0,
            remaining_ops=1,
            due_date=9.0,
            arrival_time=0.0,
            queue_entry_time=queued,
        )

    assert rule_choice("SPT", [job(5, 3.0), job(7, 1.0), job(2, 1.0)], 0.0, None) == 2


def test_unknown_rule_and_empty_queue_are_errors() -> None:
    with pytest.raises(PolicyError, match=r"unknown dispatching rule 'SLACK'.*FIFO"):
        rule_choice("SLACK", [SimpleNamespace()], 0.0, None)
    with pytest.raises(PolicyError, match="no waiting job"):
        rule_choice("SPT", [], 0.0, None)


def test_envs_command_lists_every_env_with_kwargs_and_spaces() -> None:
    from taktline.cli_envs import register

    app = typer.Typer()
    register(app)

    @app.command()
    def other() -> None:  # a second command keeps typer's sub-command form
        """unused"""

    out = CliRunner().invoke(app, ["envs", "--json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.output)
    assert [r["id"] for r in rows] == [
        "taktline/JobShop-v0",
        "taktline/LineDispatch-v0",
        "taktline/LineRelease-v0",
    ]
    assert rows[0]["kwargs"] == {"instance": "ft06"}
    assert rows[0]["action_space"] == "Discrete(6)"
    assert rows[1]["parameters"]["action_mode"] == "job"
    assert rows[2]["observation_space"].startswith("Box(")
    table = CliRunner().invoke(app, ["envs"])
    assert table.exit_code == 0 and "LineRelease" in table.output
