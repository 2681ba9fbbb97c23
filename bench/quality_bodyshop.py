"""Quality benchmark 2: on the body-shop line, a trained dispatch policy against every single
dispatching rule, on profit, with common random numbers and a paired 95% CI.

    python bench/quality_bodyshop.py --minutes 20          # train, then evaluate
    python bench/quality_bodyshop.py --bundle PATH         # evaluate only

The policy (``bodyshop_dispatch.yaml``: at each free robot cell it picks which rule decides)
and each rule play the same ``--episodes`` shifts (seeds disjoint from the ones training
evaluated on). Prints the table and whether the paired CI of (policy - best rule) excludes zero.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from rich.console import Console


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=20.0, help="training wall-clock budget")
    ap.add_argument("--workdir", type=Path, default=Path("bench_out/bodyshop"))
    ap.add_argument("--bundle", type=Path, help="evaluate this bundle instead of training")
    ap.add_argument("--episodes", type=int, default=30, help="paired evaluation episodes")
    ap.add_argument("--seed", type=int, default=50_000, help="first evaluation seed")
    ap.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        help="extra config override key=value (repeatable)",
    )
    args = ap.parse_args()
    import torch

    from taktline.agents.bundle import PolicyBundle
    from taktline.agents.policies import NeuralPolicy, RulePolicy
    from taktline.training.config import load_config
    from taktline.training.evaluate import evaluate, render_table

    torch.set_num_threads(1)
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if args.bundle:
        bundle_dir = args.bundle.resolve()
    else:
        from taktline.training.sb3_backend import train

        cfg = load_config("bodyshop_dispatch", [f"budget.max_minutes={args.minutes}", *args.sets])
        os.chdir(workdir)
        result = train(cfg)
        if result.best_bundle is None:
            raise SystemExit("training produced no bundle")
        bundle_dir = (workdir / result.best_bundle).resolve()
    train_min = (time.time() - t0) / 60
    bundle = PolicyBundle.load(bundle_dir)
    rules = bundle.env_kwargs.get("rules") or ["FIFO", "SPT", "EDD", "MWKR", "CR", "ATC", "SAME"]
    policy = NeuralPolicy(bundle, name="policy")
    ev = evaluate(
        [policy, *(RulePolicy(r) for r in rules)],
        bundle.env_id,
        bundle.env_kwargs,
        episodes=args.episodes,
        seed=args.seed,
        log=False,
    )
    best_rule = max((r.upper() for r in rules), key=lambda r: sum(ev.values[r]))
    console = Console(width=160)
    console.print(render_table(ev, reference=best_rule))
    (row,) = [r for r in ev.paired(best_rule) if r["policy"] == "policy"]
    if row["diff_ci_low"] > 0:
        verdict = "excludes zero: the policy is better"
    elif row["diff_ci_high"] < 0:
        verdict = "excludes zero: the policy is WORSE"
    else:
        verdict = "does NOT exclude zero"
    console.print(
        f"best single rule: {best_rule}; policy - {best_rule}: {row['diff_mean']:+.1f} profit per "
        f"shift, 95% CI [{row['diff_ci_low']:+.1f}, {row['diff_ci_high']:+.1f}] "
        f"({verdict}); "
        f"p(t)={row['p_ttest']:.3g}, p(W)={row['p_wilcoxon']:.3g}; "
        f"training {train_min:.1f} min; the evaluated bundle is from step "
        f"{bundle.lineage.get('num_timesteps')}"
    )
    data = {
        "evaluation": ev.as_dict(best_rule),
        "best_rule": best_rule,
        "paired": row,
        "training_minutes": None if args.bundle else train_min,
        "bundle": str(bundle_dir),
    }
    (workdir / "results.json").write_text(json.dumps(data, indent=2))


if __name__ == "__main__":
    main()
