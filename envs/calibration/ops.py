"""Operations, setups and breakdowns paired from a canonical event log (vectorised).

On one machine the events alternate: ``[setup] start finish`` per operation, ``failure repair``
per breakdown. Pairing sorts each machine's events by time and looks at the next row; a
``finish`` without its ``start`` (or a ``repair`` without its ``failure``) is a counted repair,
a ``start`` still open at the end of the log is censored (not an error).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from taktline.envs.calibration.logs import EventLog

_RANK = {"finish": 0, "repair": 1, "failure": 2, "setup": 3, "start": 4}
"""Order of events at the same time on one machine (what ends first, then what begins)."""


@dataclass
class Paired:
    """The activities of a log.

    Attributes:
        ops: one row per operation: job, product, station, machine, first (setup or start
            time), start, finish, net (finish - start - downtime inside), setup (duration or
            NaN).
        downs: one row per breakdown: station, machine, failure, repair (NaN while open).
        end: the time of the last event.
    """

    ops: Any
    downs: Any
    end: float


def _machine_sorted(frame: Any, events: tuple[str, ...]) -> Any:
    sub = frame[frame["event"].isin(events)].copy()
    sub["rank"] = sub["event"].map(_RANK)
    sub["pos"] = np.arange(len(sub))
    return sub.sort_values(["machine", "time", "rank", "pos"], kind="stable").reset_index(drop=True)


def overlap(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Total length of the disjoint sorted intervals ``[a_i, b_i]`` before each time ``t``."""
    if a.size == 0:
        return np.zeros_like(t, dtype=float)
    length = b - a
    cum = np.concatenate([[0.0], np.cumsum(length)])
    k = np.searchsorted(a, t, side="right")  # intervals begun by t
    inside = np.clip(t - a[np.maximum(k - 1, 0)], 0.0, length[np.maximum(k - 1, 0)])
    return np.where(k > 0, cum[np.maximum(k - 1, 0)] + inside, 0.0)


def pair(log: EventLog) -> Paired:
    """Pair the log's operations and breakdowns, counting every repair in ``log.repairs``."""
    import pandas as pd

    f = log.frame
    end = float(f["time"].max())
    # breakdowns
    fr = _machine_sorted(f, ("failure", "repair"))
    same = fr["machine"].shift(-1) == fr["machine"]
    is_f = fr["event"] == "failure"
    nxt_r = same & (fr["event"].shift(-1) == "repair")
    prev_f = (fr["machine"].shift(1) == fr["machine"]) & (fr["event"].shift(1) == "failure")
    log.repair("repair without its failure (dropped)", int(((~is_f) & ~prev_f).sum()))
    last = ~same
    log.repair(
        "failure followed by another failure (the first dropped)",
        int((is_f & ~nxt_r & ~last).sum()),
    )
    fail_rows = fr[is_f & (nxt_r | last)]
    downs = pd.DataFrame(
        {
            "station": fail_rows["station"].to_numpy(),
            "machine": fail_rows["machine"].to_numpy(),
            "failure": fail_rows["time"].to_numpy(dtype=float),
            "repair": np.where(
                nxt_r[fail_rows.index], fr["time"].shift(-1)[fail_rows.index], np.nan
            ),
        }
    )
    # operations: paired within (machine, job), so that two jobs logged in process on one
    # machine at once still pair (and are flagged below) instead of breaking each other's pairs
    ev = _machine_sorted(f, ("setup", "start", "finish"))
    ev = ev.sort_values(["machine", "job", "time", "rank", "pos"], kind="stable")
    ev = ev.reset_index(drop=True)
    same_group = (ev["machine"].shift(-1) == ev["machine"]) & (ev["job"].shift(-1) == ev["job"])
    machine_last = ev.groupby("machine", sort=False)["time"].transform("max")
    at_end = ev["time"] >= machine_last  # nothing later on this machine: still open, censored
    kind, kind_next = ev["event"], ev["event"].shift(-1)
    is_start = (kind == "start") & same_group & (kind_next == "finish")
    open_start = (kind == "start") & ~same_group & at_end
    lost_start = (kind == "start") & ~is_start & ~open_start
    prev_ok = (ev["machine"].shift(1) == ev["machine"]) & (ev["job"].shift(1) == ev["job"])
    orphan_finish = (kind == "finish") & ~(prev_ok & (kind.shift(1) == "start"))
    setup_ok = (kind == "setup") & same_group & (kind_next == "start")
    log.repair("finish without its start (dropped)", int(orphan_finish.sum()))
    log.repair("start without its finish (dropped)", int(lost_start.sum()))
    log.repair(
        "setup without its start (dropped)", int(((kind == "setup") & ~setup_ok & ~at_end).sum())
    )
    st = ev[is_start]
    idx = st.index.to_numpy()
    start_t = st["time"].to_numpy(dtype=float)
    finish_t = ev["time"].to_numpy(dtype=float)[idx + 1]
    setup_prev = setup_ok.shift(1, fill_value=False).to_numpy()[idx]
    setup_t = np.where(setup_prev, ev["time"].to_numpy(dtype=float)[np.maximum(idx - 1, 0)], np.nan)
    ops = pd.DataFrame(
        {
            "job": st["job"].to_numpy(),
            "product": st["product"].to_numpy(),
            "station": st["station"].to_numpy(),
            "machine": st["machine"].to_numpy(),
            "start": start_t,
            "finish": finish_t,
        }
    )
    ops["first"] = np.where(np.isnan(setup_t), start_t, setup_t)
    net = finish_t - start_t
    setup = start_t - setup_t
    closed = downs[downs["repair"].notna()]
    for m, d in closed.groupby("machine", sort=False):
        rows = (ops["machine"] == m).to_numpy()
        a = d["failure"].to_numpy(dtype=float)
        b = d["repair"].to_numpy(dtype=float)
        down_s = overlap(a, b, start_t[rows])
        net[rows] -= overlap(a, b, finish_t[rows]) - down_s
        has = rows & ~np.isnan(setup_t)
        setup[has] -= down_s[has[rows]] - overlap(a, b, setup_t[has])
    ops["net"] = net
    ops["setup"] = setup
    _flag_overlaps(log, ops)
    return Paired(ops=ops, downs=downs, end=end)


OVERLAP_TOL = 1e-9
"""Time by which two intervals must overlap to count as overlapping (float noise aside)."""


def _flag_overlaps(log: EventLog, ops: Any) -> None:
    """Count the operations a real line cannot have done, as warnings (kept and fitted as logged).

    A machine processes one job at a time, and a job is at one machine at a time: an operation
    that starts on its machine before the machine's previous operation finished, or before its
    job's previous operation finished, is a logging error (clocks out of sync, a wrong machine
    id, a job id reused) that the report must show.
    """
    by_m = ops.sort_values(["machine", "start", "finish"], kind="stable")
    prev_fin = by_m["finish"].shift(1).where(by_m["machine"].shift(1) == by_m["machine"])
    log.flag(
        "impossible overlaps: operations starting on a machine before its previous operation"
        " finished (two jobs in process at once; kept as logged)",
        int((by_m["start"] < prev_fin - OVERLAP_TOL).sum()),
    )
    by_j = ops.sort_values(["job", "start", "finish"], kind="stable")
    prev_fin = by_j["finish"].shift(1).where(by_j["job"].shift(1) == by_j["job"])
    log.flag(
        "impossible overlaps: operations starting before their job's previous operation"
        " finished (a job at two machines at once; kept as logged)",
        int((by_j["start"] < prev_fin - OVERLAP_TOL).sum()),
    )
