"""Readable terminal output: tables fit 80 columns with compact numbers; Gantt legends key
families and states, not jobs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from taktline.cli import app
from taktline.tables import compact, estimate_cell


@pytest.mark.parametrize(
    ("value", "text"),
    [(40712.3, "40.7k"), (-1258.0, "-1.26k"), (0.41131, "0.411"), (432.0, "432"), (2.5e6, "2.5M")],
)
def test_compact_numbers_have_three_significant_digits_and_a_suffix(
    value: float, text: str
) -> None:
    assert compact(value) == text


def test_estimate_cell_writes_the_half_width_compactly() -> None:
    assert estimate_cell(41720.5, 1234.0) == "41.7k ±1.2k"


def test_simulate_table_at_80_columns_has_no_ellipsis_and_compact_numbers() -> None:
    result = CliRunner().invoke(
        app,
        ["simulate", "bodyshop", "-p", "FIFO", "-p", "SAME", "-p", "SPT", "-p", "EDD", "-n", "2"],
        env={"COLUMNS": "80"},
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "…" not in result.stdout
    assert max(len(line) for line in lines) <= 80
    profit = next(line for line in lines if line.strip().startswith("profit"))
    # four rules, each a compact mean and half-width on the profit row (e.g. 41.7k ±17k)
    assert len(re.findall(r"-?\d+(?:\.\d+)?k ±\d+(?:\.\d+)?k?", profit)) == 4, profit
    assert "e+" not in result.stdout


def test_simulate_table_is_wider_on_a_wider_terminal() -> None:
    rules = ["FIFO", "SPT", "LPT", "EDD", "CR", "MWKR"]
    args = ["simulate", "serial5", *[x for r in rules for x in ("-p", r)], "-n", "2"]
    narrow = CliRunner().invoke(app, [*args, "--horizon", "400"], env={"COLUMNS": "80"})
    wide = CliRunner().invoke(app, [*args, "--horizon", "400"], env={"COLUMNS": "160"})
    assert narrow.exit_code == wide.exit_code == 0, narrow.output + wide.output
    width = {
        n: max(len(line) for line in r.stdout.splitlines()) for n, r in [(80, narrow), (160, wide)]
    }
    assert width[80] <= 80 < width[160] <= 160, width
    # in 160 columns every KPI is one line: the header's rule sits on line 3 after the title
    rows = [line for line in wide.stdout.splitlines() if line.strip()]
    assert len(rows) == 1 + 2 + 9, wide.stdout


def test_line_gantt_legend_lists_families_and_states_not_jobs(tmp_path: Path) -> None:
    from taktline.agents.rules import get_rule
    from taktline.envs.eventlog import gantt_bars, watch_families
    from taktline.envs.jobshop.gantt import legend_labels, plot_gantt
    from taktline.envs.spec import load_spec
    from taktline.envs.twin import Twin

    spec = load_spec("bodyshop")
    twin = Twin(spec, 0, get_rule("SAME"), log_events=True)
    families = watch_families(twin)
    twin.run(960.0)
    bars = gantt_bars(twin, families)
    assert any(b["kind"] == "down" for b in bars)  # the body shop's breakdowns are charted
    assert all(b["job"] is None for b in bars if b["kind"] == "down")  # no "job -1"
    labels = legend_labels(bars)
    expected = {f"family {p.family_name}" for p in spec.products}
    assert set(labels) == expected | {"setup", "down"}
    assert not any(label.startswith("job") for label in labels)
    assert plot_gantt(bars, tmp_path / "g.png", title="bodyshop").stat().st_size > 0
