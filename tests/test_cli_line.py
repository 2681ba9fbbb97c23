"""The line commands, run as a user runs them (the installed console script)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml


def _taktline(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("taktline") or str(Path(sys.executable).parent / "taktline")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=300)


def test_lines_lists_the_bundled_lines_as_json() -> None:
    out = _taktline("lines", "--json")
    assert out.returncode == 0, out.stderr
    names = {r["name"] for r in json.loads(out.stdout)}
    assert {"serial5", "bodyshop", "machining", "conwip_loop"} <= names


def test_simulate_compares_rules_on_common_random_numbers(tmp_path: Path) -> None:
    out = _taktline(
        "simulate",
        "bodyshop",
        "-p",
        "FIFO",
        "-p",
        "SAME",
        "-n",
        "3",
        "--horizon",
        "600",
        "--json",
        "--events",
        str(tmp_path / "ev.csv"),
        "--gantt",
        str(tmp_path / "g.png"),
    )
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)["results"]
    assert set(res) == {"FIFO", "SAME"}
    for kpis in res.values():
        assert kpis["throughput"]["mean"] > 0
        assert kpis["throughput"]["ci95"] >= 0
    # setup-aware dispatching changes over less often than FIFO on the body shop
    assert res["SAME"]["setups"]["mean"] < res["FIFO"]["setups"]["mean"]
    assert (tmp_path / "ev.csv").read_text().startswith("time,event,job,station,machine")
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
    out = _taktline("simulate", "serial5", "-p", "FASTEST", "-n", "1", "--horizon", "10")
    assert out.returncode == 2
    assert "unknown dispatching rule 'FASTEST'" in out.stderr
    assert "Traceback" not in out.stderr
