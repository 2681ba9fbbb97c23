"""Is a new job-shop scheduler better than the shipped one? Paired, on fresh random instances.

    python bench/jobshop_weights_check.py --weights new.npz
    python bench/jobshop_weights_check.py --weights new.npz --against old.npz --per-size 20

The selection step before shipping weights: the validation set chose the checkpoint, so its
ratio is biased upward by the choice; this plays both networks on instances from a seed stream
used for nothing else (``--seed``; never a benchmark), greedy and best-of-``--samples`` (each
network at its own stored temperature, with the mirror), and prints the paired difference of
makespan / trivial lower bound with its 95% CI (negative: the new weights are better).
Taillard's instances are never looked at here.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

SIZES = ((15, 15), (20, 15), (20, 20))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", type=Path, required=True, help="the new weights (.npz)")
    ap.add_argument("--against", type=Path, default=None, help="default: the shipped weights")
    ap.add_argument(
        "--per-size", type=int, default=20, help="instances per size (15x15, 20x15, 20x20)"
    )
    ap.add_argument("--samples", type=int, default=128, help="best-of-N (0: greedy only)")
    ap.add_argument("--seed", type=int, default=424_242, help="instance stream (fresh per check)")
    ap.add_argument("--out", type=Path, default=None, help="write the per-instance rows as JSON")
    args = ap.parse_args(argv)
    for p in (args.weights, args.against):
        if p is not None and not p.is_file():
            print(
                f"error: no weights file at {str(p)!r}; pass a .npz from train-jobshop",
                file=sys.stderr,
            )
            return 2
    if args.per_size < 2:
        print(f"error: --per-size needs at least 2 (a CI), got {args.per_size}", file=sys.stderr)
        return 2

    import torch

    from taktline.agents.jobshop_policy import LearnedScheduler, policy_solve

    torch.set_num_threads(1)  # batches of a few hundred rows: more threads only contend
    from taktline.envs.jobshop.generators import taillard_like
    from taktline.training.evaluate import paired_test

    new, old = LearnedScheduler.load(args.weights), LearnedScheduler.load(args.against)
    rng = np.random.default_rng(args.seed)
    instances = [taillard_like(n, m, rng) for n, m in SIZES for _ in range(args.per_size)]
    modes = [("greedy", 0)] + ([(f"best-of-{args.samples}", args.samples)] if args.samples else [])
    rows = []
    t0 = time.perf_counter()
    for k, inst in enumerate(instances):
        lb = max(1, inst.trivial_lower_bound())
        row = {"size": f"{inst.n_jobs}x{inst.n_machines}"}
        for mode, n in modes:
            for who, sched in (("new", new), ("old", old)):
                r = policy_solve(
                    inst,
                    0.0 if n == 0 else 3600.0,
                    seed=k,
                    samples=n or None,
                    batch_size=max(1, n),
                    scheduler=sched,
                )
                row[f"{mode} {who}"] = r.makespan / lb
        rows.append(row)
        print(
            f"\r{k + 1}/{len(instances)} instances, {time.perf_counter() - t0:.0f} s",
            end="",
            file=sys.stderr,
        )
    print(file=sys.stderr)
    print(
        f"new {args.weights} (T {new.temperature:g}) vs {args.against or 'shipped'} "
        f"(T {old.temperature:g}); {len(instances)} fresh instances (seed {args.seed}), "
        "makespan / lower bound:"
    )
    summary = {}
    for mode, _ in modes:
        for size in ["all", *(f"{n}x{m}" for n, m in SIZES)]:
            sel = [r for r in rows if size in ("all", r["size"])]
            a = np.array([r[f"{mode} new"] for r in sel])
            b = np.array([r[f"{mode} old"] for r in sel])
            t = paired_test(a - b, higher_is_better=False)
            summary[f"{mode} {size}"] = {"new": float(a.mean()), "old": float(b.mean()), **t}
            print(
                f"  {mode:>12} {size:>5}: new {a.mean():.4f}  old {b.mean():.4f}  "
                f"Δ {t['diff_mean']:+.4f} [{t['diff_ci_low']:+.4f}, {t['diff_ci_high']:+.4f}]  "
                f"p {t['p_ttest']:.3g}  {t['verdict']}"
            )
    if args.out is not None:
        args.out.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
