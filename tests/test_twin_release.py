"""Release control: immediate, CONWIP and kanban hold the line's WIP where they should."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from taktline.agents.rules import get_release_rule, get_rule
from taktline.envs.eventlog import export_events
from taktline.envs.spec import load_spec
from taktline.envs.twin import Twin
from taktline.errors import PolicyError


@pytest.mark.parametrize("cap", [3, 8])
def test_conwip_release_never_exceeds_the_cap_and_trades_wip_for_throughput(cap: int) -> None:
    spec = load_spec("serial5")
    twin = Twin(spec, 1, get_rule("FIFO"), get_release_rule(f"CONWIP({cap})"))
    peak: list[int] = []
    twin.hooks.append(lambda *a: peak.append(twin.wip))
    twin.run(1500.0)
    assert max(peak) == cap  # reached, never exceeded
    push = Twin(spec, 1, get_rule("FIFO"))
    push.run(1500.0)
    k, kp = twin.kpis(), push.kpis()
    assert k.wip < kp.wip  # less WIP in the line than pushing every order in at once
    assert k.flow_time < kp.flow_time  # Little's law: less WIP, shorter flow time


def test_kanban_limits_jobs_at_every_station() -> None:
    spec = load_spec("serial5")
    twin = Twin(spec, 2, get_rule("FIFO"), get_release_rule("KANBAN(2)"))
    seen = [0] * len(twin.stations)

    def hook(*_: object) -> None:
        for i, s in enumerate(twin.stations):
            seen[i] = max(seen[i], s.count)

    twin.hooks.append(hook)
    twin.run(1500.0)
    assert max(seen) == 2
    assert twin.kpis().completed > 100


def test_release_rule_parsing_names_the_fix() -> None:
    with pytest.raises(PolicyError, match=r"CONWIP needs a positive integer, e.g. CONWIP\(10\)"):
        get_release_rule("CONWIP(x)")
    with pytest.raises(PolicyError, match="choose IMMEDIATE, CONWIP"):
        get_release_rule("PUSH")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_event_log_exports_to_csv_and_parquet(tmp_path: Path, suffix: str) -> None:
    twin = Twin(load_spec("bodyshop"), 0, get_rule("SPT"), log_events=True)
    twin.run(300.0)
    path = tmp_path / f"events{suffix}"
    export_events(twin, path)
    frame = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    assert list(frame.columns) == ["time", "event", "job", "station", "machine"]
    assert len(frame) == len(twin.events())
    kinds = set(frame["event"])
    assert {"arrival", "release", "start", "finish", "departure", "setup"} <= kinds
    assert frame["time"].is_monotonic_increasing
