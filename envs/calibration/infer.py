"""A line spec inferred and fitted from a canonical event log.

Structure: the stations (in order of first use), their parallel machines (distinct machine
ids), the products and their routings (the most frequent station sequence of each product's
finished jobs), product families (two products are one family when a machine of a station with
setups went from one to the other without a setup) and buffer capacities (the observed maximum
queue where the log shows blocking, unbounded where it shows none; ``buffers`` overrides).
Times: processing per (station, product), setups per family pair, breakdowns per station (time
to failure on a busy or calendar basis, the failure-free stretch at the end right-censored;
time to repair) and arrivals (Poisson, renewal or the observed order list; a closed loop when
every new order enters the line as one leaves; the observed order list with due dates when the
log maps a due-date column), each fitted by :mod:`.fit`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from taktline.envs.calibration.fit import THIN_N, Fit, fit_durations
from taktline.envs.calibration.logs import EventLog, LogError
from taktline.envs.calibration.ops import Paired, overlap, pair

ArrivalKind = Literal["auto", "renewal", "orders"]
RELIABILITY = ("exponential", "lognormal", "gamma", "weibull")
"""Candidates for times to failure (those that take right-censored data)."""


@dataclass
class Calibration:
    """A fitted spec and everything the fidelity report says about it.

    Attributes:
        spec: the fitted line spec as a dict (``LineSpec.model_validate`` takes it).
        fits: each fitted distribution by a path (``processing/drill/piston``).
        warnings: what the report must say (thin cells, stations that never failed...).
        repairs: counted repairs of the log.
        basis: per station with breakdowns, the time-to-failure basis and both likelihoods.
        paired: the log's operations and breakdowns.
    """

    spec: dict[str, Any]
    fits: dict[str, Fit] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    repairs: dict[str, int] = field(default_factory=dict)
    basis: dict[str, dict[str, Any]] = field(default_factory=dict)
    paired: Paired | None = None


def _fit(cal: Calibration, key: str, values: Any, censored: Any = None) -> dict[str, Any]:
    f = fit_durations(values, censored)
    cal.fits[key] = f
    if f.n - f.n_censored < THIN_N:
        cal.warnings.append(f"{key}: thin data, n = {f.n - f.n_censored} < {THIN_N}")
    return f.dist


def fit_line(
    log: EventLog,
    name: str = "fitted",
    time_unit: str = "min",
    buffers: dict[str, int | None] | None = None,
    arrivals: ArrivalKind = "auto",
    warmup: float = 0.0,
) -> Calibration:
    """Infer and fit a line spec from ``log``.

    Raises:
        LogError: when the log has no complete operation to learn from.
    """
    import pandas as pd

    p = pair(log)
    ops = p.ops
    if ops.empty:
        raise LogError(f"{log.source}: no operation has both its start and finish; nothing to fit")
    cal = Calibration(spec={}, paired=p)
    f = log.frame
    # products: the log's, else one per routing (named by it)
    prod_of_job = f.dropna(subset=["job"]).groupby("job", sort=False)["product"].first()
    ops = ops.sort_values(["start", "finish"], kind="stable").reset_index(drop=True)
    stations = list(pd.unique(ops["station"]))
    code = {s: i for i, s in enumerate(stations)}
    ops["scode"] = ops["station"].map(code).astype(np.int64)
    ops["step"] = ops.groupby("job", sort=False).cumcount()
    base = len(stations) + 1
    sig = (ops["scode"] + 1) * np.power(float(base), ops["step"].clip(upper=30))
    job_sig = sig.groupby(ops["job"], sort=False).sum()
    departed = set(f.loc[f["event"] == "departure", "job"])
    done = job_sig[job_sig.index.isin(departed)] if departed else job_sig
    if prod_of_job.isna().all():
        labels = {s: f"product_{i + 1}" for i, s in enumerate(pd.unique(done.to_numpy()))}
        prod_of_job = job_sig.map(labels)
        cal.warnings.append("the log names no products: one product per observed routing")
        ops["product"] = ops["job"].map(prod_of_job)
    else:
        ops["product"] = ops["job"].map(prod_of_job)
    if ops["product"].isna().any():
        n = int(ops["product"].isna().sum())
        raise LogError(f"{log.source}: column 'product': {n} operations of jobs without a product")
    products = list(pd.unique(ops["product"]))
    done_prod = done.index.map(prod_of_job)
    routings: dict[str, list[str]] = {}
    for prod in products:
        sigs = done[done_prod == prod]
        if sigs.empty:
            sigs = job_sig[job_sig.index.map(prod_of_job) == prod]
        mode = sigs.mode().iloc[0]
        rep = sigs.index[sigs.to_numpy() == mode][0]
        routings[prod] = list(ops.loc[ops["job"] == rep, "station"])
        odd = int((sigs != mode).sum())
        if odd:
            cal.warnings.append(f"product {prod!r}: {odd} finished jobs deviate from its routing")
    families = _families(ops, log, products)
    # processing times
    steps: dict[str, list[dict[str, Any]]] = {}
    for prod in products:
        rows = ops[ops["product"] == prod]
        steps[prod] = []
        for st in routings[prod]:
            x = rows.loc[rows["station"] == st, "net"].to_numpy()
            steps[prod].append(
                {"station": st, "processing_time": _fit(cal, f"processing/{st}/{prod}", x)}
            )
    # stations
    machines = f.dropna(subset=["machine", "station"]).groupby("station")["machine"].nunique()
    caps = _buffers(ops, f, routings, stations)
    if buffers:
        unknown = [s for s in buffers if s not in code]
        if unknown:
            raise LogError(
                f"--buffer: unknown station {unknown[0]!r}; the log's stations are"
                f" {', '.join(stations)}"
            )
        caps.update(buffers)
    st_specs = []
    never_failed = []
    for st in stations:
        spec_st: dict[str, Any] = {
            "name": st,
            "machines": int(machines.get(st, 1)),
            "buffer_capacity": caps.get(st),
        }
        fail = _failures(cal, p, ops, st)
        if fail is None:
            never_failed.append(st)
        else:
            spec_st["failures"] = fail
        setups = _setups(cal, ops, st, families)
        if setups is not None:
            spec_st["setups"] = setups
        st_specs.append(spec_st)
    if never_failed:
        cal.warnings.append(
            f"stations that never failed in {p.end:g} time units: {', '.join(never_failed)}"
            " (fitted without breakdowns; a longer time between failures cannot be excluded)"
        )
    prod_specs = [
        {"name": prod, "family": families[prod], "routing": steps[prod]} for prod in products
    ]
    arr = _arrivals(cal, f, prod_of_job, products, arrivals)
    horizon = float(p.end) if p.end > 0 else None
    cal.spec = {
        "name": name,
        "description": f"fitted from {log.source}",
        "time_unit": time_unit,
        "stations": st_specs,
        "products": prod_specs,
        "arrivals": arr,
        "horizon": horizon,
        "warmup": warmup,
    }
    cal.repairs = dict(log.repairs)
    return cal


def _families(ops: Any, log: EventLog, products: list[str]) -> dict[str, str]:
    """Products joined into one family when a setup station changed between them without one."""
    parent = {p: p for p in products}

    def find(a: str) -> str:
        while parent[a] != a:
            a = parent[a]
        return a

    setup_st = set(ops.loc[ops["setup"].notna(), "station"])
    sub = ops[ops["station"].isin(setup_st)].sort_values(["machine", "first"], kind="stable")
    prev = sub["product"].shift(1)
    same_m = sub["machine"].shift(1) == sub["machine"]
    free = sub[same_m & sub["setup"].isna() & (prev != sub["product"])]
    pairs = set(zip(prev[free.index], free["product"], strict=True))
    for a, b in sorted(pairs):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[str, list[str]] = {}
    for p in products:
        groups.setdefault(find(p), []).append(p)
    return {p: "+".join(sorted(groups[find(p)])) for p in products}


def _setups(cal: Calibration, ops: Any, st: str, families: dict[str, str]) -> dict | None:
    rows = ops[ops["station"] == st].sort_values(["machine", "first"], kind="stable")
    if rows["setup"].notna().sum() == 0:
        return None
    fam = rows["product"].map(families)
    prev = fam.shift(1).where(rows["machine"].shift(1) == rows["machine"])
    has = rows["setup"].notna()
    first = bool((has & prev.isna()).any())
    d = rows.loc[has & prev.notna(), "setup"]
    if d.empty:
        d = rows.loc[has, "setup"]
    out: dict[str, Any] = {"default": _fit(cal, f"setups/{st}/default", d.to_numpy())}
    matrix: dict[str, dict[str, Any]] = {}
    pairs = (prev[has & prev.notna()] + "\x00" + fam[has & prev.notna()]).to_numpy()
    if len(set(pairs)) > 1:
        for key in sorted(set(pairs)):
            x = d.to_numpy()[pairs == key]
            a, b = key.split("\x00")
            if len(x) >= 5:
                matrix.setdefault(a, {})[b] = _fit(cal, f"setups/{st}/{a}->{b}", x)
    out["matrix"] = matrix
    out["first"] = first
    return out


def _failures(cal: Calibration, p: Paired, ops: Any, st: str) -> dict | None:
    """Breakdowns of ``st``: TTF on the basis with the higher likelihood, censored at the end."""
    downs = p.downs[p.downs["station"] == st]
    if downs.empty:
        return None
    ttr = (downs["repair"] - downs["failure"]).dropna().to_numpy()
    obs: dict[str, list[float]] = {"calendar": [], "busy": []}
    cens: dict[str, list[float]] = {"calendar": [], "busy": []}
    outside = 0
    machines = p.ops.loc[p.ops["station"] == st, "machine"].unique()
    for m in machines:  # one loop per machine, vectorised over its breakdowns
        d = downs[downs["machine"] == m]
        o = p.ops[p.ops["machine"] == m].sort_values("start")
        a, b = o["start"].to_numpy(dtype=float), o["finish"].to_numpy(dtype=float)
        fail = d["failure"].to_numpy(dtype=float)
        rep = d["repair"].to_numpy(dtype=float)
        since = np.concatenate([[0.0], rep])  # each failure's previous repair (0: log start)
        k = np.searchsorted(a, fail, side="right") - 1
        in_proc = (k >= 0) & (fail < b[np.maximum(k, 0)]) & (fail >= a[np.maximum(k, 0)])
        outside += int((~in_proc).sum())
        obs["calendar"] += list(fail - since[:-1])
        obs["busy"] += list(overlap(a, b, fail) - overlap(a, b, since[:-1]))
        last = since[-1]
        if np.isfinite(last) and p.end > last:
            cens["calendar"].append(p.end - last)
            cens["busy"].append(
                float(overlap(a, b, np.array([p.end]))[0] - overlap(a, b, np.array([last]))[0])
            )
    fits = {}
    for basis in ("calendar", "busy"):
        x = np.asarray(obs[basis])
        if basis == "busy" and (outside or (x <= 0).any()):
            continue
        fits[basis] = fit_durations(x, cens[basis], candidates=RELIABILITY)
    chosen = max(fits, key=lambda k: fits[k].loglik)
    cal.basis[st] = {
        "chosen": chosen,
        "loglik": {k: v.loglik for k, v in fits.items()},
        "failures_outside_processing": outside,
    }
    cal.fits[f"failures/{st}/time_to_failure"] = fits[chosen]
    n = fits[chosen].n - fits[chosen].n_censored
    if n < THIN_N:
        cal.warnings.append(f"failures/{st}/time_to_failure: thin data, n = {n} < {THIN_N}")
    return {
        "time_to_failure": fits[chosen].dist,
        "time_to_repair": _fit(cal, f"failures/{st}/time_to_repair", ttr if ttr.size else [0.0]),
        "basis": chosen,
    }


def _buffers(ops: Any, f: Any, routings: dict[str, list[str]], stations: list[str]) -> dict:
    """Capacity per station: the observed maximum queue where the log shows blocking, else None.

    Blocking shows as a machine that finished while work waited at its station and yet began
    nothing at once (a rule dispatches the waiting work at the finish time unless the finished
    job cannot leave). A job enters the next queue at the latest when its machine begins its
    next job; that lower bound on the queue is the capacity estimate.
    """
    o = ops.sort_values(["machine", "first"], kind="stable").copy()
    same = o["machine"].shift(-1) == o["machine"]
    o["next_act"] = np.where(same, o["first"].shift(-1), np.inf)
    o = o.sort_values(["job", "first"], kind="stable")
    nxt_job = o["job"].shift(-1) == o["job"]
    rel = f[f["event"] == "release"].groupby("job")["time"].first()
    arr = f[f["event"] == "arrival"].groupby("job")["time"].first()
    # entry of each op into its station's queue (late bound)
    prev_fin = o["finish"].shift(1).where(o["job"].shift(1) == o["job"])
    prev_next = o["next_act"].shift(1).where(o["job"].shift(1) == o["job"])
    entry = np.minimum(prev_next, o["first"]).where(prev_fin.notna(), o["job"].map(rel))
    entry = entry.fillna(o["first"])
    o["entry"] = entry
    o["next_station"] = o["station"].shift(-1).where(nxt_job)
    caps: dict[str, int | None] = {}
    late_release = (rel - arr.reindex(rel.index)).fillna(0.0) > 1e-9
    entry_late = set(
        f.loc[(f["event"] == "release") & f["job"].isin(rel.index[late_release]), "station"]
    )
    for st in stations:
        at = o[o["station"] == st]
        ent = np.sort(at["entry"].to_numpy(dtype=float))
        beg = np.sort(at["first"].to_numpy(dtype=float))
        # -1 before +1 at equal times: a lower bound on the queue
        t = np.concatenate([beg, ent])
        d = np.concatenate([-np.ones(beg.size), np.ones(ent.size)])
        order = np.lexsort((d, t))
        qmax = int(max(np.cumsum(d[order]).max(), 0))
        up = o[o["next_station"] == st]
        blocked = 0
        for ust, u in up.groupby("station"):
            ua = o[o["station"] == ust]
            ue = np.sort(ua["entry"].to_numpy(dtype=float))
            ub = np.sort(ua["first"].to_numpy(dtype=float))
            fin = u["finish"].to_numpy(dtype=float)
            waiting = np.searchsorted(ue, fin, "right") - np.searchsorted(ub, fin, "right")
            late = u["next_act"].to_numpy(dtype=float) > fin + 1e-9
            blocked += int(((waiting > 0) & late).sum())
        caps[st] = qmax if (blocked > 0 or st in entry_late) else None
    return caps


def _arrivals(
    cal: Calibration, f: Any, prod_of_job: Any, products: list[str], kind: ArrivalKind
) -> dict:
    arr = f[f["event"] == "arrival"]
    if arr.empty:
        arr = f[f["event"] == "release"]
    first = arr.groupby("job", sort=False)["time"].first().sort_values(kind="stable")
    prods = first.index.map(prod_of_job)
    counts = prods.value_counts()
    mix = {p: float(counts.get(p, 0)) / len(first) for p in products}
    due = None
    if "due_date" in f.columns and f["due_date"].notna().any() and kind != "renewal":
        due = f.dropna(subset=["job"]).groupby("job", sort=False)["due_date"].first()
        due = due.reindex(first.index).to_numpy(dtype=float)
        early = int((due < 0).sum())
        if early:  # due before the log's first event: the spec's clock starts there
            cal.warnings.append(f"due dates before the log's start, set to 0: {early}")
            due = np.maximum(due, 0.0)
    if kind == "orders" or len(first) < 3 or due is not None:
        # an order list replays the observed orders (with their due dates when mapped)
        times = first.to_numpy(dtype=float)
        dues = due if due is not None else np.full(len(first), np.nan)
        return {
            "kind": "orders",
            "orders": [
                {"product": p, "release_time": float(t)}
                | ({} if np.isnan(d) else {"due_date": float(d)})
                for p, t, d in zip(prods, times, dues, strict=True)
            ],
        }
    t0 = float(first.iloc[0])
    dep = np.sort(f.loc[f["event"] == "departure", "time"].to_numpy(dtype=float))
    later = first[first > t0].to_numpy(dtype=float)
    if dep.size and later.size:
        hit = np.searchsorted(dep, later)
        on_dep = (hit < dep.size) & (np.abs(dep[np.minimum(hit, dep.size - 1)] - later) < 1e-9)
        if on_dep.mean() > 0.99 and kind == "auto":
            return {"kind": "closed", "wip": int((first == t0).sum()), "mix": mix}
    gaps = np.diff(first.to_numpy(dtype=float))
    ia = fit_durations(gaps[gaps > 0] if (gaps > 0).any() else gaps)
    cal.fits["arrivals/interarrival_time"] = ia
    if ia.kind == "exponential":
        return {"kind": "poisson", "rate": 1.0 / float(ia.dist["mean"]), "mix": mix}
    return {"kind": "renewal", "interarrival_time": ia.dist, "mix": mix}
