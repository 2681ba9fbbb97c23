"""The anytime hybrid on job shops: construct, N5 tabu search, CP-SAT LNS and ``solve --method``."""

from __future__ import annotations

import csv
import itertools
import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from taktline.agents.jobshop_dispatch import dispatch
from taktline.agents.jobshop_hybrid import hybrid_solve, lns
from taktline.agents.jobshop_search import CONSTRUCT_RULES, AnytimePoint, construct, tabu_search
from taktline.cli import app
from taktline.envs.jobshop import check_schedule, load_bundled
from taktline.envs.jobshop.generators import (
    flexible,
    random_routing,
    taillard_like,
    with_release_and_due_dates,
)
from taktline.errors import PolicyError


def _assert_monotone(log: list[AnytimePoint]) -> None:
    times = [p.time_s for p in log]
    makespans = [p.makespan for p in log]
    assert times == sorted(times), times
    assert all(b <= a for a, b in itertools.pairwise(makespans)), makespans


def test_construct_is_no_worse_than_every_rule_and_feasible() -> None:
    inst = load_bundled("la16")
    best_rule = min(
        dispatch(inst, r, s).makespan for r in CONSTRUCT_RULES for s in ("active", "non-delay")
    )
    res = construct(inst, time_limit_s=0.3, seed=0)
    assert check_schedule(inst, res.schedule) == res.makespan <= best_rule
    _assert_monotone(res.log)


def test_tabu_schedule_is_feasible_and_improves_a_rule_schedule_on_ft10() -> None:
    inst = load_bundled("ft10")
    start = dispatch(inst, "MWKR")
    res = tabu_search(inst, start.schedule, time_limit_s=30, seed=0, max_iterations=2000)
    assert check_schedule(inst, res.schedule) == res.makespan
    # MWKR gives 1000+ on ft10 (optimum 930); 2,000 N5 moves reach below 1000
    assert 930 <= res.makespan < min(start.makespan, 1000)
    _assert_monotone(res.log)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tabu_is_feasible_and_never_worse_with_releases_recirculation_and_zero_times(
    seed: int,
) -> None:
    inst = random_routing(8, 4, rng=seed, ops_per_job=(3, 7), time_range=(0, 9), recirculation=True)
    inst = with_release_and_due_dates(inst, rng=seed, release_span=0.5)
    start = dispatch(inst, "SPT")
    res = tabu_search(inst, start.schedule, time_limit_s=30, seed=seed, max_iterations=500)
    assert check_schedule(inst, res.schedule) == res.makespan <= start.makespan


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_incremental_move_matches_a_full_recomputation_of_heads_and_tails(seed: int) -> None:
    from taktline.agents.jobshop_search import _Graph

    inst = random_routing(
        20, 6, rng=seed, ops_per_job=(4, 10), time_range=(0, 20), recirculation=True
    )
    inst = with_release_and_due_dates(inst, rng=seed, release_span=0.5)
    rng = random.Random(seed)
    g = _Graph(inst, dispatch(inst, "SPT").schedule)
    assert g.evaluate()
    checked = 0
    for _ in range(200):
        moves = g.n5_moves(g.critical_blocks(rng))
        if not moves:
            break
        if g.move(*moves[rng.randrange(len(moves))]):
            head, tail, makespan = list(g.head), list(g.tail), g.makespan
            assert g.evaluate()
            assert (head, tail, makespan) == (g.head, g.tail, g.makespan)
            checked += 1
    assert checked > 20


def test_tabu_search_is_reproducible_for_a_seed_and_iteration_cap() -> None:
    inst = taillard_like(10, 5, rng=3)
    start = dispatch(inst, "SPT").schedule
    a = tabu_search(inst, start, time_limit_s=30, seed=7, max_iterations=300)
    b = tabu_search(inst, start, time_limit_s=30, seed=7, max_iterations=300)
    assert a.schedule == b.schedule


def test_lns_schedule_is_feasible_and_never_worse_than_its_start() -> None:
    inst = load_bundled("la16")
    start = dispatch(inst, "SPT")
    res = lns(inst, start.schedule, time_limit_s=2.0, step_time_s=0.3, seed=0)
    assert check_schedule(inst, res.schedule) == res.makespan <= start.makespan
    _assert_monotone(res.log)


def test_hybrid_reaches_and_proves_the_ft06_optimum_within_3_s() -> None:
    res = hybrid_solve(load_bundled("ft06"), time_limit_s=3.0)
    assert check_schedule(load_bundled("ft06"), res.schedule) == res.makespan == 55
    assert res.lower_bound == 55
    assert min(p.time_s for p in res.log if p.makespan == 55) < 3.0


def test_hybrid_anytime_log_is_monotone_and_its_last_point_is_the_result() -> None:
    inst = load_bundled("ta01")
    res = hybrid_solve(inst, time_limit_s=3.0)
    _assert_monotone(res.log)
    assert res.log[-1].makespan == res.makespan == check_schedule(inst, res.schedule)
    assert res.wall_time_s < 6.0  # the budget, plus one LNS step's model building (slack: CI load)


def test_hybrid_refuses_a_flexible_job_shop_naming_cpsat() -> None:
    inst = flexible(4, 3, rng=0, machines_per_op=(2, 3))
    with pytest.raises(PolicyError, match=r"flexible.*--method cpsat"):
        hybrid_solve(inst, time_limit_s=1.0)


def test_cli_solve_hybrid_writes_a_monotone_anytime_csv_and_json(tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    out = CliRunner().invoke(
        app,
        [
            "solve",
            "ft06",
            "--method",
            "hybrid",
            "--time-limit",
            "2",
            "--anytime-log",
            str(log),
            "--json",
        ],
    )
    assert out.exit_code == 0, out.output
    data = json.loads(out.output[out.output.index("{") :])
    assert data["method"] == "hybrid" and data["makespan"] == data["replayed_makespan"] == 55
    rows = list(csv.DictReader(log.open()))
    makespans = [int(r["best_makespan"]) for r in rows]
    assert makespans == sorted(makespans, reverse=True) and makespans[-1] == 55


@pytest.mark.parametrize("method", ["cpsat", "rule"])
def test_cli_solve_cpsat_and_rule_methods_report_a_checked_schedule(
    method: str, tmp_path: Path
) -> None:
    log = tmp_path / "log.csv"
    args = ["solve", "la01", "--method", method, "--time-limit", "1", "--json"]
    out = CliRunner().invoke(app, [*args, "--anytime-log", str(log)])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output[out.output.index("{") :])
    assert data["method"] == method and data["makespan"] >= 666
    assert data["replayed_makespan"] <= data["makespan"]
    makespans = [int(r["best_makespan"]) for r in csv.DictReader(log.open())]
    assert makespans and makespans == sorted(makespans, reverse=True)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--method", "genetic"], "--method: expected one of cpsat, rule, policy, hybrid"),
        (["--method", "hybrid", "--time-limit", "-1"], "--time-limit: must be > 0, got -1"),
        (["--method", "policy", "--weights", "missing.npz"], "--weights: no such file"),
        (["--method", "cpsat", "--weights", "w.npz"], "--weights: only --method policy or hybrid"),
        (["--method", "hybrid", "--anytime-log", "log.txt"], "--anytime-log"),
    ],
)
def test_cli_solve_bad_method_options_give_one_clear_error(args: list[str], needle: str) -> None:
    out = CliRunner().invoke(app, ["solve", "ft06", *args])
    assert out.exit_code == 2, out.output
    assert needle in out.output and "Traceback" not in out.output
