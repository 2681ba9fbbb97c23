"""Quality benchmark: the anytime hybrid (construct -> tabu -> CP-SAT LNS) against CP-SAT and the
rules at equal wall-clock time on Taillard instances.

    python bench/quality_jobshop_anytime.py                         # ta01-20, ta41-80; 1, 10, 60 s
    python bench/quality_jobshop_anytime.py --instances ta41-ta50 --budgets 10
    python bench/quality_jobshop_anytime.py --from-results a/results.json b/results.json

Per instance and budget ``B`` (seconds) it runs, one after another in this process:

* ``cpsat``: :func:`taktline.agents.cpsat.solve` for ``B`` s with ``--workers`` workers;
* ``hybrid``: :func:`taktline.agents.jobshop_hybrid.hybrid_solve` for ``B`` s (the rules and the
  learned scheduler build the start, tabu search on one core, then CP-SAT LNS steps with
  ``--workers`` workers);
* ``policy``: the learned scheduler (shipped weights, or ``--weights``) alone: its greedy
  schedule, then sampled batches for ``B`` s (:func:`taktline.agents.jobshop_policy.policy_solve`);
* ``rules``: every dispatching rule in both schemes, then MWKR sampling, for ``min(B,
  --rule-budget)`` s (more time buys little);
* ``MWKR``: the greedy rule alone (budget-independent).

It prints the mean gap to the best known makespan per instance group, method and budget, says
whether the hybrid's mean gap is below CP-SAT's at each budget, writes ``results.json`` (every
makespan, updated after each instance) and ``anytime.png``: mean gap against time (log scale),
the hybrid's and CP-SAT's anytime logs and each method's result at each budget.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

GROUPS = {"ta01-20": range(1, 21), "ta41-80": range(41, 81)}


def parse_instances(text: str) -> list[str]:
    """``ta41-ta50,ta01`` -> names; the default is ta01-20 and ta41-80."""
    names: list[str] = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-")
            lo, hi = int(a.removeprefix("ta")), int(b.removeprefix("ta"))
            names += [f"ta{i:02d}" for i in range(lo, hi + 1)]
        elif part:
            names.append(part)
    return names


def group_of(name: str) -> str:
    k = int(name.removeprefix("ta")) if name.startswith("ta") else -1
    return next((g for g, r in GROUPS.items() if k in r), "other")


def run_instance(
    name: str, budget: float, workers: int, rule_budget: float, learned: Any
) -> dict[str, Any]:
    """Makespans of every method on one instance at one budget, plus the hybrid's anytime log."""
    from taktline.agents.cpsat import solve
    from taktline.agents.jobshop_dispatch import dispatch
    from taktline.agents.jobshop_hybrid import hybrid_solve
    from taktline.agents.jobshop_policy import policy_solve
    from taktline.agents.jobshop_search import construct
    from taktline.envs.jobshop.bundled import resolve_instance
    from taktline.envs.jobshop.replay import check_schedule

    inst = resolve_instance(name)
    out: dict[str, Any] = {"reference": inst.reference()[0], "lower_bound": inst.lower_bound}
    cp_log: list[tuple[float, int, str]] = []
    cp = solve(
        inst,
        time_limit_s=budget,
        num_workers=workers,
        on_solution=lambda t, ms: cp_log.append((t, ms, "cpsat")),
    )
    if cp.schedule:
        check_schedule(inst, cp.schedule)
    out["cpsat"] = cp.makespan
    out["cpsat_log"] = cp_log
    hy = hybrid_solve(inst, time_limit_s=budget, num_workers=workers, start_policy=learned)
    out["hybrid"] = check_schedule(inst, hy.schedule)
    out["hybrid_log"] = [(p.time_s, p.makespan, p.stage) for p in hy.log]
    out["hybrid_wall_s"] = hy.wall_time_s
    pol = policy_solve(inst, time_limit_s=budget, scheduler=learned)
    out["policy"] = check_schedule(inst, pol.schedule)
    out["policy_log"] = [(p.time_s, p.makespan, p.stage) for p in pol.log]
    out["rules"] = construct(inst, time_limit_s=min(budget, rule_budget)).makespan
    out["MWKR"] = dispatch(inst, "MWKR").makespan
    return out


METHODS = ("cpsat", "hybrid", "policy", "rules", "MWKR")


def gap(makespan: int | None, ref: int) -> float:
    return float("nan") if makespan is None else 100.0 * (makespan / ref - 1.0)


def report(results: dict[str, dict[str, dict[str, Any]]], names: list[str]) -> None:
    """Mean gaps per group, method and budget; the hybrid-vs-CP-SAT verdict per budget."""
    budgets = sorted(results, key=float)
    groups = sorted({group_of(n) for n in names})
    print("\nmean gap to best known makespan, % (n = instances per group)")
    header = f"{'group':10} {'budget s':>8} {'n':>3} " + " ".join(f"{m:>8}" for m in METHODS)
    print(header)
    for g in groups:
        for b in budgets:
            rows = [results[b][n] for n in names if group_of(n) == g and n in results[b]]
            if not rows:
                continue
            means = [np.nanmean([gap(r.get(m), r["reference"]) for r in rows]) for m in METHODS]
            print(f"{g:10} {b:>8} {len(rows):>3} " + " ".join(f"{v:8.2f}" for v in means))
            missing = {m: sum(r.get(m) is None for r in rows) for m in METHODS}
            if any(missing.values()):
                print(
                    f"{'':10} no schedule within {b} s (left out of that mean): "
                    + ", ".join(f"{m} {k}/{len(rows)}" for m, k in missing.items() if k)
                )
            h = np.array([gap(r["hybrid"], r["reference"]) for r in rows])
            c = np.array([gap(r["cpsat"], r["reference"]) for r in rows])
            both = ~np.isnan(c) & ~np.isnan(h)
            wins = int((h[both] < c[both]).sum() + (np.isnan(c) & ~np.isnan(h)).sum())
            verdict = "BELOW" if both.any() and h[both].mean() < c[both].mean() else "NOT below"
            hm = f"{h[both].mean():.2f}" if both.any() else "-"
            cm = f"{c[both].mean():.2f}" if both.any() else "-"
            print(
                f"{'':10} hybrid {verdict} CP-SAT at {b} s on the {int(both.sum())} instances "
                f"CP-SAT solved: {hm}% vs {cm}%; hybrid better on {wins}/{len(rows)} "
                "(no CP-SAT schedule counts as a hybrid win)"
            )


def _curve(r: dict[str, Any], key: str, grid: np.ndarray) -> list[float]:
    """One instance's gap at each grid time from an anytime log (NaN before its first schedule)."""
    log = r[key]
    ms = [min((m for t, m, _ in log if t <= x), default=None) for x in grid]
    return [gap(m, r["reference"]) for m in ms]


def plot(results: dict[str, dict[str, dict[str, Any]]], names: list[str], path: Path) -> None:
    """Mean gap vs time (log x) per group: anytime logs of the budget run on the most instances,
    and each method's mean at every budget run on all of them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = sorted(results, key=float)
    fig, ax = plt.subplots(figsize=(8, 5))
    colour = {
        "hybrid": "tab:blue",
        "cpsat": "tab:orange",
        "rules": "tab:green",
        "policy": "tab:red",
    }
    for k, g in enumerate(sorted({group_of(n) for n in names})):
        line = ("-", "--", ":")[k % 3]
        group = [n for n in names if group_of(n) == g]
        # the anytime curves come from the largest budget run on the most of the group
        top = max(budgets, key=lambda b: (sum(n in results[b] for n in group), float(b)))
        done = [n for n in group if n in results[top]]
        if not done:
            continue
        grid = np.geomspace(0.01, float(top), 80)
        for method in ("hybrid", "cpsat", "policy"):
            key = f"{method}_log"
            if not all(results[top][n].get(key) for n in done):  # older results: no policy
                continue
            curves = np.array([_curve(results[top][n], key, grid) for n in done])
            ok = ~np.isnan(curves).any(axis=0)  # only where every instance has a schedule
            label = f"{method} anytime ({top} s run), {g}"
            ax.plot(grid[ok], curves[:, ok].mean(axis=0), line, color=colour[method], label=label)
        for method, marker, label in (
            ("cpsat", "o", "CP-SAT at each budget"),
            ("rules", "s", "rules + sampling (<= 1 s)"),
            ("hybrid", "^", "hybrid at each budget"),
            ("policy", "v", "learned scheduler at each budget"),
        ):
            # a budget counts only where the method scheduled every instance (no biased means)
            pts = [
                (
                    float(b),
                    np.mean([gap(results[b][n][method], results[b][n]["reference"]) for n in done]),
                )
                for b in budgets
                if all(n in results[b] and results[b][n].get(method) is not None for n in done)
            ]
            if pts:
                style = marker + (line if method == "rules" else "")
                xy = zip(*pts, strict=True)
                ax.plot(*xy, style, color=colour[method], label=f"{label}, {g}")
    ax.set_xscale("log")
    ax.set_xlabel("wall-clock time per instance, s (log scale)")
    ax.set_ylabel("mean gap to best known, %")
    ax.set_title("job shops: learned scheduler, anytime hybrid and CP-SAT at equal time")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"anytime plot written to {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--instances", default="ta01-ta20,ta41-ta80", help="e.g. ta41-ta50,ta01")
    ap.add_argument("--budgets", default="1,10,60", help="seconds per instance, comma-separated")
    ap.add_argument("--workers", type=int, default=2, help="CP-SAT workers (cpsat and LNS)")
    ap.add_argument("--rule-budget", type=float, default=1.0, help="cap on the rules' budget")
    ap.add_argument("--weights", type=Path, help="learned scheduler weights (default: shipped)")
    ap.add_argument("--out", type=Path, default=Path("bench_out/jobshop_anytime"))
    ap.add_argument(
        "--from-results",
        type=Path,
        nargs="+",
        help="only report and plot these results.json files (merged; later files win)",
    )
    args = ap.parse_args()
    if args.from_results:
        merged: dict[str, dict[str, dict[str, Any]]] = {}
        for path in args.from_results:
            for b, rows in json.loads(path.read_text()).items():
                if b != "meta":
                    merged.setdefault(b, {}).update(rows)
        done = sorted({n for rows in merged.values() for n in rows})
        args.out.mkdir(parents=True, exist_ok=True)
        report(merged, done)
        plot(merged, done, args.out / "anytime.png")
        return
    from taktline.agents.jobshop_policy import LearnedScheduler

    learned = LearnedScheduler.load(args.weights)
    names = parse_instances(args.instances)
    budgets = [b.strip() for b in args.budgets.split(",") if b.strip()]
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, dict[str, Any]]] = {b: {} for b in budgets}
    t0 = time.time()
    for b in budgets:
        for n in names:
            r = run_instance(n, float(b), args.workers, args.rule_budget, learned)
            results[b][n] = r
            print(
                f"[{time.time() - t0:7.0f} s] {n} {b:>3} s: "
                + ", ".join(f"{m} {r[m]} ({gap(r[m], r['reference']):.1f}%)" for m in METHODS),
                flush=True,
            )
            meta = {"cpu_count": os.cpu_count(), "load_avg": os.getloadavg()}
            (args.out / "results.json").write_text(json.dumps({"meta": meta, **results}))
    report(results, names)
    plot(results, names, args.out / "anytime.png")


if __name__ == "__main__":
    main()
