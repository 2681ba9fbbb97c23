"""Snapshots: the twin's state at a decision point as plain, JSON-serializable data.

The same structure feeds observations (:func:`taktline.envs.encoding.encode`) and is what a
plant's MES posts to the serving API, so it only holds what a plant can know: what waits where,
each machine's state, expected (not drawn) processing times, due dates and the clock.

Shape::

    {"time": 12.5, "line": "bodyshop", "spec_hash": "...", "time_unit": "min", "wip": 7,
     "decision": {"kind": "dispatch", "station": "weld", "machine": "weld.M2"} | null,
     "stations": [{"name": "weld", "buffer_capacity": 4 | null,
                   "queue": [JOB, ...],
                   "machines": [{"id": "weld.M1", "state": "busy", "job": "J-3",
                                 "family": "sedan"}]}],
     "pool": [JOB, ...]}

    JOB = {"id": "J-3", "product": "sedan", "family": "sedan", "step": 1, "n_steps": 4,
           "processing_time": 2.0, "remaining_work": 6.5, "remaining_ops": 3,
           "due_date": 40.0 | null, "arrival_time": 1.2, "queue_entry_time": 10.0}
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from taktline.envs.twin import Job, Twin

STATE_NAMES = ("idle", "setup", "busy", "blocked", "down")


def job_record(job: Job, product_names: list[str]) -> dict[str, Any]:
    step = min(job.step, len(job.route) - 1)
    return {
        "id": f"J-{job.id}",
        "product": product_names[job.product],
        "family": job.family,
        "step": job.step,
        "n_steps": len(job.route),
        "processing_time": job.means[step],
        "remaining_work": job.remwork[step],
        "remaining_ops": len(job.route) - job.step,
        "due_date": job.due_date if math.isfinite(job.due_date) else None,
        "arrival_time": job.arrival_time,
        "queue_entry_time": job.queue_entry_time,
    }


def make_snapshot(twin: Twin) -> dict[str, Any]:
    """Snapshot of ``twin`` now, including the pending decision if there is one."""
    names = [p.name for p in twin.spec.products]
    req = twin.pending
    decision: dict[str, Any] | None = None
    if req is not None and req.kind == "dispatch":
        decision = {
            "kind": "dispatch",
            "station": twin.stations[req.station].name,
            "machine": twin.machines[req.machine].name,
        }
    elif req is not None:
        decision = {"kind": "release"}
    stations = []
    for s, st in zip(twin.stations, twin.spec.stations, strict=True):
        stations.append(
            {
                "name": s.name,
                "buffer_capacity": st.buffer_capacity,
                "queue": [job_record(j, names) for j in s.buffer],
                "machines": [
                    {
                        "id": m.name,
                        "state": STATE_NAMES[m.state],
                        "job": f"J-{m.job.id}" if m.job is not None else None,
                        "family": m.last_family,
                    }
                    for m in s.machines
                ],
            }
        )
    return {
        "time": twin.now,
        "line": twin.spec.name,
        "spec_hash": twin.spec_hash,
        "time_unit": twin.spec.time_unit,
        "wip": twin.wip,
        "decision": decision,
        "stations": stations,
        "pool": [job_record(j, names) for j in twin.pool],
    }
