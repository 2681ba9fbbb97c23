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
    """The event log as a pandas DataFrame (time, event, job, station, machine, product).

    ``product`` names the product of each job's row (``None`` on machine events without a job,
    and on every row when the products cannot be recovered, see :func:`job_products`).
    """
    import pandas as pd

    frame = pd.DataFrame.from_records(
        twin.events(), columns=["time", "event", "job", "station", "machine"]
    )
    products = job_products(twin)
    if products is None or frame.empty:
        frame["product"] = None
        return frame
    import numpy as np

    names = np.array([p.name for p in twin.spec.products], dtype=object)
    ids = pd.to_numeric(frame["job"].str.slice(2), errors="coerce")
    known = (ids.notna() & (ids < len(products))).to_numpy()
    col = np.full(len(frame), None, dtype=object)
    col[known] = names[np.asarray(products)[ids[known].to_numpy(dtype=np.int64)]]
    frame["product"] = col
    return frame


def job_products(twin: Twin) -> list[int] | None:
    """The product index of every job the twin has made, by job number (``None`` if unknown).

    The kernel does not keep a departed job, so the products are recovered the way the twin
    drew them: job ``k`` is the ``k``-th order, whose product is the ``k``-th draw of the mix
    stream of ``Twin(spec, seed)`` (an order list's orders arrive by release time, ties in list
    order). The jobs still in the line or the pool check the recovery; a twin restored from a
    snapshot or forked with a new seed fails that check (or has no job to check it with and is
    not built from its seed alone) and gets ``None``: the log then has no products.
    """
    import numpy as np

    from taktline.envs.distributions import Sampler, Uniform
    from taktline.envs.spec import OrderList
    from taktline.envs.streams import spawn_streams

    spec = twin.spec
    n = int(getattr(twin, "_next_job", 0))
    live = list(twin.jobs_in_line.values()) + list(twin.pool)
    if isinstance(spec.arrivals, OrderList):
        names = [p.name for p in spec.products]
        flat = [
            (o.release_time, names.index(o.product))
            for o in spec.arrivals.orders
            for _ in range(o.quantity)
        ]
        flat.sort(key=lambda x: x[0])  # stable: ties keep list order, as the event heap does
        products = [p for _, p in flat][:n]
    elif len(spec.products) == 1:
        products = [0] * n
    else:
        cdf = np.cumsum(spec.product_shares())
        cdf[-1] = 1.0
        mix = Sampler(Uniform(low=0.0, high=1.0), spawn_streams(twin.seed, 2)[1])
        u = np.array([mix() for _ in range(n)])
        products = np.searchsorted(cdf, u, side="left").tolist()
    if len(products) < n or any(j.id >= len(products) or products[j.id] != j.product for j in live):
        return None
    return products


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


def watch_families(twin: Twin) -> dict[int, str]:
    """The family of every job the twin sets up or starts from now on (filled as it runs).

    The event log names jobs by number only, and a job's family leaves the twin with the job;
    a Gantt chart coloured by family (:func:`gantt_bars`) needs this record, made by an event
    hook installed before the run.
    """
    families: dict[int, str] = {}

    def note(_t: float, kind: str, job: int, _station: int, _machine: int) -> None:
        if kind in ("setup", "start") and job not in families:
            found = twin.jobs_in_line.get(job)
            if found is not None:
                families[job] = found.family

    twin.hooks.append(note)
    return families


def gantt_bars(twin: Twin, families: dict[int, str] | None = None) -> list[dict[str, Any]]:
    """Bars (machine, job, start, end, kind) for setups, processing and breakdowns; with
    ``families`` (:func:`watch_families`) each setup and processing bar names its family too,
    and the chart is coloured and keyed by family rather than by job."""
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
    for bar in bars:
        if bar["kind"] == "down":
            bar["job"] = None  # a repair names no job (-1); the bar is the machine's
        elif families is not None:
            bar["family"] = families.get(bar["job"])
    return bars
