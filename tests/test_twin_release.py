"""Release control: immediate, CONWIP and kanban hold the line's WIP where they should."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from taktline.agents.rules import get_release_rule, get_rule
from taktline.envs.eventlog import export_events
from taktline.envs.kpis import Estimate, Kpis
from taktline.envs.spec import load_spec
from taktline.envs.twin import Twin
from taktline.errors import PolicyError
from tests.envs_support import paired_difference

SERIAL5 = load_spec("serial5")
SEEDS = range(10)  # paired replications: every release rule sees the same orders and times


def _run(release: str | None, seed: int, watch: bool = True) -> tuple[Kpis, int, list[int]]:
    """Run serial5 under FIFO: KPIs, the peak line WIP and each station's peak job count
    (watched after every event unless ``watch`` is off)."""
    twin = Twin(SERIAL5, seed, get_rule("FIFO"), release and get_release_rule(release))
    peak = [0]
    at_station = [0] * len(twin.stations)

    def hook(*_: object) -> None:
        peak[0] = max(peak[0], twin.wip)
        for i, s in enumerate(twin.stations):
            at_station[i] = max(at_station[i], s.count)

    if watch:
        twin.hooks.append(hook)
    twin.run(1500.0)
    return twin.kpis(), peak[0], at_station


@pytest.mark.parametrize("cap", [3, 8])
def test_conwip_release_never_exceeds_the_cap_and_reaches_it(cap: int) -> None:
    for seed in SEEDS[:3]:
        assert _run(f"CONWIP({cap})", seed)[1] == cap, seed
        assert _run(None, seed)[1] > cap, seed  # pushing, the line would hold more


def test_conwip_release_trades_wip_for_throughput() -> None:
    push = [_run(None, s, watch=False)[0] for s in SEEDS]
    tight, loose = ([_run(f"CONWIP({c})", s, watch=False)[0] for s in SEEDS] for c in (3, 8))

    def diff(a: list[Kpis], b: list[Kpis], kpi: str) -> Estimate:
        return paired_difference([getattr(k, kpi) for k in a], [getattr(k, kpi) for k in b])

    for conwip in (tight, loose):
        # less WIP in the line than pushing every order in at once, and so (Little's law)
        # a shorter flow time through it
        assert diff(conwip, push, "wip").high < 0
        assert diff(conwip, push, "flow_time").high < 0
    # the price is throughput: a cap of 3 is below what the line needs for its 0.8 orders/min
    # and loses throughput; a cap of 8 keeps it within 1% of pushing
    push_thr = sum(k.throughput for k in push) / len(push)
    assert diff(tight, push, "throughput").high < 0
    loss = diff(loose, push, "throughput")
    assert -0.01 * push_thr < loss.low and loss.high < 0.01 * push_thr, loss
    # the tighter the cap, the less WIP and the less throughput
    assert diff(tight, loose, "wip").high < 0
    assert diff(tight, loose, "throughput").high < 0


def test_kanban_limits_jobs_at_every_station() -> None:
    for seed in SEEDS[:3]:
        kpis, _, seen = _run("KANBAN(2)", seed)
        assert max(seen) == 2 and all(n <= 2 for n in seen), (seed, seen)
        assert kpis.completed > 100
        assert max(_run(None, seed)[2]) > 2, seed  # without cards some station holds more


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
    # product: what a fitted twin learns its routings from (taktline fit)
    assert list(frame.columns) == ["time", "event", "job", "station", "machine", "product"]
    assert len(frame) == len(twin.events())
    kinds = set(frame["event"])
    assert {"arrival", "release", "start", "finish", "departure", "setup"} <= kinds
    assert frame["time"].is_monotonic_increasing
