"""Rules and CP-SAT on job shops; the CLI commands; Gantt charts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from taktline.agents.cpsat import replay, solve
from taktline.agents.jobshop_dispatch import dispatch
from taktline.agents.rules import get_rule
from taktline.cli_jobshop import register
from taktline.envs.jobshop import JobShopInstance, check_schedule, load_bundled, load_instance
from taktline.envs.jobshop.gantt import GanttBar, bars_from_schedule, plot_gantt
from taktline.envs.jobshop.generators import flexible, taillard_like, with_release_and_due_dates
from taktline.errors import SpecError

RULES = ("SPT", "LPT", "MWKR", "MOPNR", "FIFO")
KEYS = {  # (processing time, work remaining, operations remaining, ready time, due date)
    "SPT": lambda p, w, k, r, d: (p,),
    "LPT": lambda p, w, k, r, d: (-p,),
    "MWKR": lambda p, w, k, r, d: (-w,),
    "MOPNR": lambda p, w, k, r, d: (-k,),
    "FIFO": lambda p, w, k, r, d: (r,),
    "EDD": lambda p, w, k, r, d: (d,),
}


def _textbook(inst: JobShopInstance, rule: str, scheme: str) -> int:
    """A from-scratch Giffler–Thompson / non-delay rule scheduler, written independently of
    ``JobShopState`` (full recomputation, no incremental keys) as a reference."""
    m_of, p_of = inst.machines_matrix(), inst.times_matrix()
    nxt = [0] * inst.n_jobs
    ready = list(inst.release_dates or [0] * inst.n_jobs)
    due = inst.due_dates or [math.inf] * inst.n_jobs
    free = [0] * inst.n_machines
    ops = [(j, nxt[j]) for j in range(inst.n_jobs)]
    while ops:
        est = {j: max(ready[j], free[m_of[j][i]]) for j, i in ops}
        if scheme == "active":
            t, mstar = min((est[j] + p_of[j][i], m_of[j][i]) for j, i in ops)
            conflict = [(j, i) for j, i in ops if m_of[j][i] == mstar and est[j] < t]
        else:
            t, mstar = min((est[j], m_of[j][i]) for j, i in ops)
            conflict = [(j, i) for j, i in ops if m_of[j][i] == mstar and est[j] == t]

        def priority(o: tuple[int, int]) -> tuple[float, ...]:
            j, i = o
            p, work, left = p_of[j][i], sum(p_of[j][i:]), len(p_of[j]) - i
            return (*KEYS[rule](p, work, left, ready[j], due[j]), ready[j], j)

        j, i = min(conflict, key=priority)
        end = est[j] + p_of[j][i]
        free[mstar] = ready[j] = end
        nxt[j] += 1
        ops = [(q, nxt[q]) for q in range(inst.n_jobs) if nxt[q] < len(p_of[q])]
    return max(ready)


@pytest.mark.parametrize("scheme", ["active", "non-delay"])
@pytest.mark.parametrize("rule", RULES)
def test_rule_makespans_match_an_independent_textbook_scheduler(rule: str, scheme: str) -> None:
    for name in ("ft06", "ft10", "la01"):
        assert dispatch(load_bundled(name), rule, scheme).makespan == _textbook(
            load_bundled(name), rule, scheme
        )
    for seed in range(15):
        inst = taillard_like(7, 5, rng=seed, time_range=(1, 20))  # small times: many ties
        assert dispatch(inst, rule, scheme).makespan == _textbook(inst, rule, scheme)


# Published optima of Taillard's 15 x 15 instances (Taillard 1993; all proven optimal since)
TA_OPTIMA = (1231, 1244, 1218, 1175, 1224, 1238, 1227, 1217, 1274, 1241)


def test_rule_results_on_ta01_to_ta10_are_feasible_and_their_gaps_to_the_optimum_reported(
    capsys: pytest.CaptureFixture[str],
) -> None:
    lines = ["instance  scheme     " + " ".join(f"{r:>12s}" for r in RULES)]
    for k, optimum in enumerate(TA_OPTIMA, start=1):
        inst = load_bundled(f"ta{k:02d}")
        # an active schedule never leaves every machine idle while work remains, so its
        # makespan is at most the total work
        total_work = sum(sum(row) for row in inst.times_matrix())
        for scheme in ("active", "non-delay"):
            cells = []
            for rule in RULES:
                res = dispatch(inst, rule, scheme)
                assert check_schedule(inst, res.schedule) == res.makespan
                assert (res.reference_kind, res.reference) == ("optimum", optimum)
                assert optimum <= res.makespan <= total_work
                assert res.gap == pytest.approx((res.makespan - optimum) / optimum, abs=1e-12)
                cells.append(f"{res.makespan:5d} {100 * res.gap:5.1f}%")
            lines.append(f"{inst.name:8s}  {scheme:9s}  " + " ".join(f"{c:>12s}" for c in cells))
    with capsys.disabled():
        print("\n" + "\n".join(lines))


@pytest.mark.parametrize("scheme", ["active", "non-delay"])
def test_dispatch_uses_due_dates_and_releases_for_edd(scheme: str) -> None:
    differs = 0
    for seed in range(10):
        inst = with_release_and_due_dates(
            taillard_like(6, 4, rng=seed, time_range=(1, 20)), rng=seed + 1, release_span=0.3
        )
        res = dispatch(inst, "EDD", scheme)
        assert check_schedule(inst, res.schedule) == res.makespan
        releases = inst.release_dates or ()
        assert all(s.start >= releases[s.job] for s in res.schedule if s.op == 0)
        # the textbook scheduler, ranking by due date with the jobs ready at their releases
        assert res.makespan == _textbook(inst, "EDD", scheme), seed
        for rule in RULES:
            assert dispatch(inst, rule, scheme).makespan == _textbook(inst, rule, scheme)
        differs += res.makespan != dispatch(inst, "FIFO", scheme).makespan
    assert differs > 0  # the due dates change the schedule: EDD is not FIFO in disguise


def test_dispatch_accepts_rule_objects_and_reports_the_scheme() -> None:
    res = dispatch(load_bundled("ft06"), get_rule("mwkr"), "non-delay")
    assert (res.rule, res.scheme, res.reference) == ("MWKR", "non-delay", 55)
    assert res.as_dict()["gap"] == pytest.approx(res.makespan / 55 - 1)


@pytest.mark.parametrize(
    ("name", "optimum"),
    [("ft06", 55), ("la01", 666), ("la02", 655), ("la03", 597), ("la04", 590), ("la05", 593)],
)
def test_cp_sat_proves_the_optimum_and_its_schedule_replays_to_it(name: str, optimum: int) -> None:
    inst = load_bundled(name)
    res = solve(inst, time_limit_s=20, num_workers=2)
    assert (res.status, res.makespan, res.lower_bound) == ("optimal", optimum, optimum)
    assert check_schedule(inst, res.schedule) == optimum
    assert replay(inst, res).makespan == optimum


def test_cp_sat_reports_feasible_with_a_bound_when_time_runs_out() -> None:
    inst = load_bundled("ta01")
    res = solve(inst, time_limit_s=1.0)
    assert res.status in ("feasible", "optimal")
    assert res.makespan is not None and res.lower_bound <= 1231 <= res.makespan
    # "optimal" only with a closed gap; "feasible" reports the open gap it could not close
    assert (res.lower_bound == res.makespan) == (res.status == "optimal")
    assert replay(inst, res).makespan <= res.makespan


def test_flexible_job_shop_is_solved_and_rule_dispatched_feasibly() -> None:
    inst = flexible(6, 4, rng=3, ops_per_job=(2, 4), machines_per_op=(1, 3), time_range=(2, 9))
    res = solve(inst, time_limit_s=20)
    assert res.status == "optimal" and res.makespan is not None
    assert check_schedule(inst, res.schedule) == res.makespan
    assert replay(inst, res).makespan == res.makespan
    for rule in RULES:
        for scheme in ("active", "non-delay"):
            d = dispatch(inst, rule, scheme)
            assert check_schedule(inst, d.schedule) == d.makespan >= res.makespan


def test_cp_sat_respects_release_dates() -> None:
    inst = with_release_and_due_dates(taillard_like(5, 3, rng=4), rng=4, release_span=0.8)
    res = solve(inst, time_limit_s=10)
    assert res.status == "optimal"
    assert check_schedule(inst, res.schedule) == res.makespan
    assert replay(inst, res).makespan == res.makespan
    assert res.makespan <= dispatch(inst, "MWKR").makespan


def _cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def test_cli_instances_lists_bundled_instances_as_json() -> None:
    out = CliRunner().invoke(_cli(), ["instances", "--json"])
    assert out.exit_code == 0, out.output
    rows = {r["name"]: r for r in json.loads(out.output)}
    assert rows["la40"]["optimum"] == 1222 and rows["ta80"]["n_jobs"] == 100


def test_cli_solve_and_schedule_print_json_and_write_gantt(tmp_path: Path) -> None:
    runner = CliRunner()
    png = tmp_path / "ft06.png"
    out = runner.invoke(
        _cli(), ["solve", "ft06", "--time-limit", "10", "--json", "--gantt", str(png)]
    )
    assert out.exit_code == 0, out.output
    data = json.loads(out.output[out.output.index("{") :])
    assert (data["status"], data["makespan"], data["lower_bound"]) == ("optimal", 55, 55)
    assert len(data["schedule"]) == 36 and png.stat().st_size > 1000

    out = runner.invoke(
        _cli(), ["schedule", "la01", "--rule", "MWKR", "--scheme", "non-delay", "--json"]
    )
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["scheme"] == "non-delay" and data["reference"] == 666
    assert math.isclose(data["gap"], data["makespan"] / 666 - 1)

    out = runner.invoke(_cli(), ["schedule", "ta01", "--rule", "SPT"])
    assert out.exit_code == 0 and "optimum" in out.output


def test_cli_reads_instance_files(tmp_path: Path) -> None:
    f = tmp_path / "mini.fjs"
    f.write_text("2 2 1.5\n2 2 1 3 2 4 1 2 2\n1 1 1 5\n")
    out = CliRunner().invoke(_cli(), ["schedule", str(f), "--rule", "SPT", "--json"])
    assert out.exit_code == 0, out.output
    inst = load_instance(f)
    assert (inst.n_jobs, inst.n_machines, inst.is_flexible) == (2, 2, True)
    assert json.loads(out.output)["makespan"] == dispatch(inst, "SPT").makespan


def test_gantt_draws_schedules_and_generic_bars(tmp_path: Path) -> None:
    res = dispatch(load_bundled("ft06"), "MWKR")
    png = plot_gantt(bars_from_schedule(res.schedule), tmp_path / "a.png", title="ft06")
    assert png.read_bytes()[:4] == b"\x89PNG"
    bars = [
        {"machine": "lathe 2", "job": 3, "start": 0, "end": 4, "kind": "setup"},
        {"machine": "lathe 10", "job": 3, "start": 4, "end": 9, "kind": "process"},
        GanttBar("lathe 2", None, 5, 7, "down"),
    ]
    svg = plot_gantt(bars, tmp_path / "b.svg")
    text = svg.read_text()
    assert text.startswith("<?xml") and "lathe 10" in text and "setup" in text
    with pytest.raises(SpecError, match="kind"):
        plot_gantt(
            [{"machine": "m", "job": 1, "start": 0, "end": 1, "kind": "idle"}], tmp_path / "c.png"
        )
