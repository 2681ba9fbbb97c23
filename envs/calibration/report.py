"""The fidelity report of a fitted twin: fits with their tests, observed vs simulated KPIs.

:func:`observed_kpis` measures the log's KPIs (throughput, flow time, WIP, per-station
utilisation, waiting and blocking, the last two reconstructed: see :data:`KPI_NOTE`) over the
window after ``warmup``; :func:`compare` sets them against replications
of the fitted spec (run by the caller under a rule: ``taktline fit`` uses FIFO unless told) and
gives each KPI the simulated mean, its 95% CI and a verdict:
``consistent`` (observed inside the CI), ``close`` (within 5% of the simulated mean) or
``differs``. :func:`write_html` writes it with a QQ plot per fitted distribution (PNG, Agg).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np

from taktline.envs.calibration.fit import qq_points
from taktline.envs.calibration.infer import Calibration
from taktline.envs.calibration.logs import EventLog

CLOSE = 0.05
"""Relative error under which an observed KPI outside the CI is still 'close'."""


def observed_kpis(log: EventLog, cal: Calibration, warmup: float = 0.0) -> dict[str, float]:
    """KPIs of the log over ``[warmup, end]`` (per-station ones as ``station.kpi``)."""
    f = log.frame
    assert cal.paired is not None
    end = cal.paired.end
    window = max(end - warmup, 1e-12)
    rel = f[f["event"] == "release"].groupby("job")["time"].first()
    dep = f[f["event"] == "departure"].groupby("job")["time"].first()
    in_win = dep[dep >= warmup]
    flow = (in_win - rel.reindex(in_win.index)).dropna()
    t = np.concatenate([rel.to_numpy(dtype=float), dep.to_numpy(dtype=float)])
    d = np.concatenate([np.ones(len(rel)), -np.ones(len(dep))])
    order = np.argsort(t, kind="stable")
    t, level = t[order], np.cumsum(d[order])
    seg_a = np.clip(t, warmup, end)
    seg_b = np.clip(np.append(t[1:], end), warmup, end)
    out = {
        "throughput": float(len(in_win) / window),
        "flow_time": float(flow.mean()) if len(flow) else float("nan"),
        "wip": float(np.sum(level * (seg_b - seg_a)) / window),
    }
    ops = cal.paired.ops
    machines = {s["name"]: s["machines"] for s in cal.spec["stations"]}
    for st, o in ops.groupby("station"):
        a = np.clip(o["start"].to_numpy(dtype=float), warmup, end)
        b = np.clip(o["finish"].to_numpy(dtype=float), warmup, end)
        gross = o["finish"].to_numpy(dtype=float) - o["start"].to_numpy(dtype=float)
        share = np.divide(
            o["net"].to_numpy(dtype=float), gross, where=gross > 0, out=np.ones_like(gross)
        )
        out[f"{st}.utilization"] = float(np.sum((b - a) * share) / (machines[st] * window))
    caps = {s["name"]: s.get("buffer_capacity") for s in cal.spec["stations"]}
    o = _with_pending(ops, dep, cal)
    entry = queue_entries(o, rel, caps)
    nxt = o["job"].shift(-1) == o["job"]
    blocked_until = np.where(nxt, np.roll(entry, -1), o["finish"].to_numpy(dtype=float))
    first = o["first"].to_numpy(dtype=float)
    fin = o["finish"].to_numpy(dtype=float)
    for st, rows in o.groupby("station").groups.items():
        i = np.asarray(rows)
        # the twin counts a wait when the job is dispatched (pending ones never were)
        counted = (first[i] >= warmup) & np.isfinite(first[i])
        wait = first[i][counted] - entry[i][counted]
        out[f"{st}.mean_wait"] = float(wait.mean()) if wait.size else 0.0
        a = np.clip(fin[i], warmup, end)
        b = np.clip(blocked_until[i], warmup, end)
        out[f"{st}.blocked_share"] = float(np.sum(b - a) / (machines[st] * window))
    return out


def _with_pending(ops: Any, departed: Any, cal: Calibration) -> Any:
    """``ops`` sorted by job and time, plus the next step of every job still in the line.

    A job that finished an operation and neither departed nor started its next one is waiting
    (or blocked) for its next station at the end of the log: a row with infinite start and
    finish there keeps its place in the queue (and its blocked machine) in the reconstruction.
    """
    import pandas as pd

    o = ops.sort_values(["job", "first"], kind="stable")
    routes = {p["name"]: [s["station"] for s in p["routing"]] for p in cal.spec["products"]}
    last = o.groupby("job", sort=False).tail(1)
    step = o.groupby("job", sort=False).cumcount()[last.index].to_numpy()
    nxt = [
        r[k + 1] if r is not None and k + 1 < len(r) else None
        for r, k in zip(last["product"].map(routes), step, strict=True)
    ]
    keep = ~last["job"].isin(departed.index).to_numpy() & np.array([s is not None for s in nxt])
    pending = pd.DataFrame(
        {
            "job": last["job"].to_numpy()[keep],
            "product": last["product"].to_numpy()[keep],
            "station": np.array(nxt, dtype=object)[keep],
            "first": np.inf,
            "start": np.inf,
            "finish": np.inf,
        }
    )
    cols = ["job", "product", "station", "first", "start", "finish"]
    both = pd.concat([o[cols], pending], ignore_index=True)
    return both.sort_values(["job", "first"], kind="stable").reset_index(drop=True)


KPI_NOTE = (
    "Waiting and blocking are reconstructed from the log: a log records when a job finishes"
    " and starts, not when it enters the next buffer. A job enters the next station's queue"
    " when it finishes there (or is released), unless the fitted buffer capacity is full; then"
    " it waits, blocking its machine, until a start at that station frees a slot (the longest"
    " blocked first, as the twin does). mean_wait is dispatch minus queue entry; blocked_share"
    " the blocked machine time over machines x window. With a capacity fitted too small or"
    " too large, both move with it."
)
"""What the report says about the waiting and blocking KPIs (they are derived, not logged)."""


def queue_entries(ops: Any, release: Any, caps: dict[str, int | None]) -> np.ndarray:
    """When each operation's job entered its station's queue (``ops`` sorted by job, first).

    A job's first operation enters at its release (its first setup or start when the log has
    no release); a later one at its previous finish, unless the station's buffer (capacity
    ``c``) is full: the ``k``-th job to arrive at the station (by arrival) can enter only once
    ``k - c`` jobs have left the queue, i.e. at the ``(k - c)``-th dispatch there. Vectorised
    per station with sorted arrays.
    """
    first = ops["first"].to_numpy(dtype=float)
    same = (ops["job"].shift(1) == ops["job"]).to_numpy()
    prev_fin = ops["finish"].shift(1).to_numpy(dtype=float)
    rel = ops["job"].map(release).to_numpy(dtype=float)
    ready = np.where(same, prev_fin, np.where(np.isnan(rel), first, rel))
    ready = np.minimum(ready, first)
    entry = ready.copy()
    station = ops["station"].to_numpy()
    for st, cap in caps.items():
        if cap is None:
            continue
        i = np.flatnonzero(station == st)
        if i.size <= cap:
            continue
        order = i[np.argsort(ready[i], kind="stable")]
        dispatched = np.sort(first[i])
        k = np.arange(order.size)
        slot = np.full(order.size, -np.inf)
        slot[cap:] = dispatched[: order.size - cap]
        entry[order] = np.minimum(np.maximum(ready[order], slot[k]), first[order])
    return entry


def compare(observed: dict[str, float], runs: list[Any]) -> dict[str, dict[str, Any]]:
    """Per KPI: observed, simulated mean and 95% CI half-width, and a verdict."""
    from taktline.envs.kpis import estimate

    sims: dict[str, list[float]] = {}
    for k in runs:
        flat = k.as_dict(flat=True)
        for key in observed:
            if key in flat:
                sims.setdefault(key, []).append(float(flat[key]))
    rows = {}
    for key, obs in observed.items():
        if key not in sims:
            continue
        e = estimate(sims[key])
        if abs(obs - e.mean) <= e.half_width:
            verdict = "consistent"
        elif e.mean and abs(obs - e.mean) / abs(e.mean) <= CLOSE:
            verdict = "close"
        else:
            verdict = "differs"
        rows[key] = {
            "observed": obs,
            "simulated": e.mean,
            "ci95": e.half_width,
            "verdict": verdict,
        }
    return rows


def report_data(
    log: EventLog, cal: Calibration, kpis: dict[str, dict[str, Any]], replications: int
) -> dict[str, Any]:
    """Everything the report says, JSON-ready."""
    return {
        "source": log.source,
        "events": len(log.frame),
        "repairs": cal.repairs,
        "warnings": log.warnings + cal.warnings,
        "failure_basis": cal.basis,
        "fits": {k: f.summary() for k, f in cal.fits.items()},
        "replications": replications,
        "kpis": kpis,
        "kpi_note": KPI_NOTE,
    }


def _qq_png(cal: Calibration, key: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fit = cal.fits[key]
    theo, obs = qq_points(fit)
    fig, ax = plt.subplots(figsize=(3.2, 3.0), dpi=80)
    ax.plot(theo, obs, ".", ms=3)
    lo, hi = float(min(theo.min(), obs.min())), float(max(theo.max(), obs.max()))
    ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
    ax.set_title(f"{key}\n{fit.kind}, KS {fit.ks:.3f}", fontsize=7)
    ax.set_xlabel("fitted quantile", fontsize=7)
    ax.set_ylabel("observed quantile", fontsize=7)
    ax.tick_params(labelsize=6)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def write_html(path: Path, data: dict[str, Any], cal: Calibration, max_plots: int = 60) -> None:
    """Write the report (one HTML file, the QQ plots embedded as PNG)."""
    e = html.escape
    parts = [
        "<!doctype html><meta charset='utf-8'><title>taktline fidelity report</title>",
        "<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:right}"
        ".differs{color:#b00}.close{color:#a60}.consistent{color:#070}</style>",
        f"<h1>Fidelity report: {e(str(cal.spec['name']))}</h1>",
        f"<p>{data['events']} events from {e(data['source'])};"
        f" simulated KPIs over {data['replications']} replications (95% CI).</p>",
        "<h2>Repairs and warnings</h2><ul>",
    ]
    for k, v in data["repairs"].items():
        parts.append(f"<li>repair: {e(k)}: {v}</li>")
    for w in data["warnings"]:
        parts.append(f"<li>warning: {e(w)}</li>")
    if not data["repairs"] and not data["warnings"]:
        parts.append("<li>none</li>")
    parts.append("</ul><h2>KPIs: observed vs simulated</h2><table><tr><th>KPI</th>")
    parts.append("<th>observed</th><th>simulated</th><th>± 95% CI</th><th>verdict</th></tr>")
    for k, r in data["kpis"].items():
        parts.append(
            f"<tr><td>{e(k)}</td><td>{r['observed']:.4g}</td><td>{r['simulated']:.4g}</td>"
            f"<td>{r['ci95']:.2g}</td><td class='{r['verdict']}'>{r['verdict']}</td></tr>"
        )
    parts.append(f"</table><p>{e(KPI_NOTE)}</p>")
    parts.append("<h2>Fitted distributions</h2><table><tr><th>what</th><th>dist</th>")
    parts.append("<th>n</th><th>mean</th><th>fitted mean</th><th>KS</th><th>p</th></tr>")
    for k, s in data["fits"].items():
        parts.append(
            f"<tr><td>{e(k)}</td><td>{e(s['dist']['dist'])}</td><td>{s['n']}</td>"
            f"<td>{s['mean']:.4g}</td><td>{s['fitted_mean']:.4g}</td><td>{s['ks']:.3f}</td>"
            f"<td>{s['p_value']:.3f}</td></tr>"
        )
    parts.append("</table><h2>QQ plots</h2><div>")
    for k in list(cal.fits)[:max_plots]:
        parts.append(f"<img alt='{e(k)}' src='data:image/png;base64,{_qq_png(cal, k)}'>")
    parts.append("</div>")
    path.write_text("\n".join(parts))
