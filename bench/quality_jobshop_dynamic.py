"""Quality: the learned job-shop scheduler dispatching a dynamic job shop online, against the rules
on tardiness (and profit), paired on the same held-out seeds.

The line is ``dynamic_jobshop`` (orders arriving at random, due dates, five work centres) or any
line given; the policies are played by :func:`taktline.training.compare.compare`, the same path
as ``taktline compare``, so every policy meets the same seeds (common random numbers). The
scheduler is the shipped static network (trained for makespan on random Taillard-like
instances; it never sees a due date): each dispatch poses the queue as the job shop left to do
(:mod:`taktline.agents.jobshop_online`). ``--lookahead auto`` adds the search on twin forks
(:mod:`taktline.agents.lookahead`, base = the best pilot rule; about 50 ms a decision, so ~6
minutes for 10 episodes) as a second, non-learned answer. Prints, per policy, total tardiness
and profit per episode (mean ± 95% CI) and the paired difference to the rule best on each, with
its CI and p.

    python bench/quality_jobshop_dynamic.py [--line dynamic_jobshop] [--episodes 10]
        [--weights w.npz] [--rules FIFO,SPT,EDD,CR,ATC,MWKR] [--lookahead auto|'LOOKAHEAD(...)']
        [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    from taktline.errors import TaktlineError
    from taktline.training.compare import compare
    from taktline.training.evaluate import mean_ci, paired_test

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--line", default="dynamic_jobshop")
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--weights", default=None, help="scheduler weights (default: shipped)")
    ap.add_argument("--rules", default="FIFO,SPT,EDD,CR,ATC,MWKR")
    ap.add_argument(
        "--lookahead", default=None, help="'auto' or a LOOKAHEAD(...) reference (default: none)"
    )
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    ref = "scheduler" if args.weights is None else f"scheduler:{args.weights}"
    rules = [r.strip() for r in args.rules.split(",") if r.strip()]
    t0 = time.perf_counter()
    try:
        comp = compare(
            args.line,
            [ref],
            rules=rules,
            lookahead=args.lookahead,
            episodes=args.episodes,
            seed=args.seed,
        )
    except TaktlineError as exc:  # a bad line, rule, weights or lookahead: one line, no trace
        raise SystemExit(f"error: {exc}") from None
    ev = comp.evaluation
    rows = {r["policy"]: r for r in comp.rows()}
    out: dict[str, dict[str, float | str]] = {}
    for metric, higher in (("total_tardiness", False), ("tardiness_cost", False), ("profit", True)):
        values = {p: np.array([k[metric] for k in ev.kpis[p]], float) for p in ev.policies}
        best_rule = (max if higher else min)(
            (p for p in values if p in rules), key=lambda p: values[p].mean()
        )
        print(f"\n{args.line}: {metric} per episode, {len(ev.cases)} paired seeds; "
              f"Δ = policy - {best_rule} (the rule best on it)")  # fmt: skip
        print(f"{'policy':<24}{'mean':>12}{'±CI':>10}{'Δ':>12}{'Δ CI':>24}{'p':>9}")
        for p, v in values.items():
            lo, hi = mean_ci(v)
            line = f"{p[:23]:<24}{v.mean():>12,.0f}{(hi - lo) / 2:>10,.0f}"
            if p != best_rule:
                t = paired_test(v - values[best_rule], higher)
                ci = f"[{t['diff_ci_low']:,.0f}, {t['diff_ci_high']:,.0f}]"
                line += f"{t['diff_mean']:>12,.0f}{ci:>24}{t['p_ttest']:>9.2g}  {t['verdict']}"
                out.setdefault(p, {})[f"{metric}_vs_{best_rule}"] = t["diff_mean"]
            print(line)
            out.setdefault(p, {})[metric] = float(v.mean())
    print()
    for p in rows:
        if p.startswith(("SCHEDULER", "LOOKAHEAD")):
            p50, p99 = rows[p]["latency_p50_ms"], rows[p]["latency_p99_ms"]
            print(f"{p}: decision p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    print(f"{time.perf_counter() - t0:.0f} s wall")
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
