"""The line commands, run as a user runs them (the installed console script)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

from taktline.agents.rules import get_rule
from taktline.envs.kpis import Kpis
from taktline.envs.spec import load_spec
from taktline.envs.twin import Twin
from tests.envs_support import paired_difference


def _taktline(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("taktline") or str(Path(sys.executable).parent / "taktline")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=300)


def test_lines_lists_the_bundled_lines_as_json() -> None:
    out = _taktline("lines", "--json")
    assert out.returncode == 0, out.stderr
    names = {r["name"] for r in json.loads(out.stdout)}
    assert {"serial5", "bodyshop", "machining", "conwip_loop"} <= names


def test_simulate_compares_rules_on_common_random_numbers(tmp_path: Path) -> None:
    n, seed, horizon = 10, 7, 600.0
    out = _taktline(
        "simulate",
        "bodyshop",
        "-p",
        "FIFO",
        "-p",
        "SAME",
        "-n",
        str(n),
        "--seed",
        str(seed),
        "--horizon",
        str(horizon),
        "--json",
        "--events",
        str(tmp_path / "ev.csv"),
        "--gantt",
        str(tmp_path / "g.png"),
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    res = data["results"]
    assert set(res) == {"FIFO", "SAME"}
    assert (data["seed"], data["replications"]) == (seed, n)
    # the same replications in this process: every rule on seeds seed .. seed + n - 1
    spec = load_spec("bodyshop")
    runs: dict[str, list[Kpis]] = {}
    logs: dict[str, list[list[dict[str, object]]]] = {}
    for rule in res:
        for i in range(n):
            twin = Twin(spec, seed + i, get_rule(rule), log_events=True)
            twin.run(horizon)
            runs.setdefault(rule, []).append(twin.kpis())
            logs.setdefault(rule, []).append(twin.events())
    for i in range(n):  # common random numbers: both rules get the same orders at the same times
        fifo, same = (
            [(e["time"], e["job"]) for e in logs[r][i] if e["event"] == "arrival"] for r in res
        )
        assert fifo == same and len(fifo) > 100, i
    # the CLI's figures are those replications' mean and t-based 95% CI, rule by rule
    t975 = float(stats.t.ppf(0.975, n - 1))
    for rule, kpis in res.items():
        for name in ("throughput", "setups", "flow_time", "wip", "profit"):
            values = np.array([getattr(k, name) for k in runs[rule]])
            assert kpis[name]["mean"] == pytest.approx(values.mean(), rel=1e-12), (rule, name)
            half = t975 * values.std(ddof=1) / np.sqrt(n)
            assert kpis[name]["ci95"] == pytest.approx(half, rel=1e-9), (rule, name)
    # setup-aware dispatching changes over less often than FIFO on the body shop: the paired
    # 95% CI of SAME - FIFO lies below zero
    setups = paired_difference([k.setups for k in runs["SAME"]], [k.setups for k in runs["FIFO"]])
    assert setups.high < 0, setups
    # the event log is the first replication of the first rule
    events = (tmp_path / "ev.csv").read_text().splitlines()
    assert events[0] == "time,event,job,station,machine,product"
    assert len(events) - 1 == len(logs["FIFO"][0])
    assert (tmp_path / "g.png").stat().st_size > 5000


def test_simulate_table_has_confidence_intervals() -> None:
    out = _taktline("simulate", "serial5", "-p", "SPT", "-n", "2", "--horizon", "300")
    assert out.returncode == 0, out.stderr
    assert "±" in out.stdout and "throughput" in out.stdout


def test_validate_prints_every_problem_and_fails(tmp_path: Path) -> None:
    bad = {
        "name": "bad",
        "stations": [{"name": "a", "machines": 0}],
        "products": [{"name": "p", "routing": [{"station": "zz", "processing_time": 1}]}],
        "arrivals": {"kind": "poisson", "rate": 0.1},
    }
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    out = _taktline("validate", str(path), "--json")
    assert out.returncode == 1
    problems = json.loads(out.stdout)["problems"]
    assert "stations[0].machines: must be >= 1, got 0" in problems


@pytest.mark.parametrize("line", ["serial5", "bodyshop", "machining", "conwip_loop"])
def test_validate_accepts_the_bundled_lines(line: str) -> None:
    out = _taktline("validate", line)
    assert out.returncode == 0, out.stdout + out.stderr


def test_unknown_rule_is_a_clear_error_not_a_traceback() -> None:
    out = _taktline("simulate", "serial5", "-p", "FASTEST", "-n", "1", "--horizon", "300")
    assert out.returncode == 2
    assert "unknown dispatching rule 'FASTEST'" in out.stderr
    assert "Traceback" not in out.stderr
