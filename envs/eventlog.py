"""The event log: export to CSV/Parquet and turn into Gantt bars."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from taktline.envs.twin import Twin
from taktline.errors import SpecError

EVENT_LOG_SUFFIXES = (".csv", ".parquet")
"""The file types :func:`export_events` writes."""
GANTT_SUFFIXES = (".png", ".svg", ".pdf")
"""The file types a Gantt chart is written as (the suffix picks the format)."""


def events_frame(twin: Twin) -> Any:
    """The event log as a pandas DataFrame (time, event, job, station, machine)."""
    import pandas as pd

    return pd.DataFrame.from_records(
        twin.events(), columns=["time", "event", "job", "station", "machine"]
    )


def export_events(twin: Twin, path: Path) -> None:
    """Write the event log to ``path`` (.csv or .parquet)."""
    frame = events_frame(twin)
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        raise SpecError(
            f"events: unknown file type {path.suffix!r}; use {' or '.join(EVENT_LOG_SUFFIXES)}"
        )


def gantt_bars(twin: Twin) -> list[dict[str, Any]]:
    """Bars (machine, job, start, end, kind) for setups, processing and breakdowns."""
    if twin.log is None:
        raise SpecError("gantt: the twin ran without its event log; pass log_events=True")
    bars: list[dict[str, Any]] = []
    open_setup: dict[int, tuple[float, int]] = {}
    open_proc: dict[int, tuple[float, int]] = {}
    open_down: dict[int, float] = {}
    names = [m.name for m in twin.machines]
    for t, kind, job, _station, m in twin.log:
        if kind == "setup":
            open_setup[m] = (t, job)
        elif kind == "start":
            if m in open_setup:
                s0, j0 = open_setup.pop(m)
                bars.append(
                    {"machine": names[m], "job": j0, "start": s0, "end": t, "kind": "setup"}
                )
            open_proc[m] = (t, job)
        elif kind == "finish" and m in open_proc:
            start, j = open_proc.pop(m)
            bars.append(
                {"machine": names[m], "job": j, "start": start, "end": t, "kind": "process"}
            )
        elif kind == "failure":
            open_down[m] = t
        elif kind == "repair" and m in open_down:
            bars.append(
                {
                    "machine": names[m],
                    "job": job,
                    "start": open_down.pop(m),
                    "end": t,
                    "kind": "down",
                }
            )
    return bars
