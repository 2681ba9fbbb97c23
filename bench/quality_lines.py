"""Quality: the optimizer portfolio over the scenario suite, each line's verdict against its best
rule on held-out seeds (paired, common random numbers).

For every line: every built-in dispatching rule, the lookahead on twin forks (base = the best
rule on pilot seeds) and any extra policy given with ``-p LINE=REF`` (a tuned rule, a learned
bundle), played by :func:`taktline.training.compare.compare`. Prints one table per line (mean
± 95% CI, Δ to the best rule ± CI, p, verdict, decision latency p50/p99), writes a bar chart
per line and a JSON of everything to ``--out``.

    python bench/quality_lines.py [--lines bodyshop,paintshop,dynamic_jobshop] [--episodes 10]
        [--minutes 15] [--k 8] [--horizon 60] [-p paintshop=models:/paint-imitate@candidate]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

SUITE = (
    "bodyshop",
    "paintshop",
    "paint_assembly",
    "cut_weld",
    "dynamic_jobshop",
    "machining",
    "serial5",
)


def main() -> None:
    from taktline.cli_compare import _print
    from taktline.training.compare import bar_chart, compare

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", default=",".join(SUITE))
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--minutes", type=float, default=None, help="per line")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k", type=int, default=8, help="lookahead scenarios per decision")
    ap.add_argument("--horizon", type=float, default=None, help="lookahead horizon (default auto)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("-p", "--policy", action="append", default=[], help="LINE=REF")
    ap.add_argument("--out", type=Path, default=Path("out/quality_lines"))
    args = ap.parse_args()
    extra: dict[str, list[str]] = {}
    for item in args.policy:
        line, _, ref = item.partition("=")
        extra.setdefault(line, []).append(ref)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {}
    for line in [x.strip() for x in args.lines.split(",") if x.strip()]:
        start = time.perf_counter()
        look = "auto"
        if args.horizon is not None or args.k != 8:
            from taktline.agents.rules import DISPATCH_RULES
            from taktline.envs.spec import load_spec
            from taktline.training.compare import PILOT_SEED, _default_horizon, pilot_rules

            spec = load_spec(line)
            assert spec.horizon is not None
            means = pilot_rules(
                spec,
                DISPATCH_RULES,
                [PILOT_SEED + i for i in range(5)],
                spec.horizon,
                float(spec.warmup),
            )
            base = max(means, key=lambda r: means[r])
            h = args.horizon if args.horizon is not None else _default_horizon(spec)
            look = f"LOOKAHEAD(base={base},horizon={h},k={args.k},line={line})"
        result = compare(
            line,
            extra.get(line, []),
            lookahead=look,
            episodes=args.episodes,
            minutes=args.minutes,
            seed=args.seed,
            workers=args.workers,
        )
        chart = bar_chart(result, args.out / f"{line}.png")
        _print(result, chart, None)
        print(f"{line}: {time.perf_counter() - start:.0f} s wall\n", flush=True)
        report[line] = result.as_dict()
        (args.out / "quality_lines.json").write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
