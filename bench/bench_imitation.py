"""Throughput: DAgger labelling in one process vs on Ray workers, measured in the same run.

The lookahead's labels are about 95% of an imitation's wall time, so labelling episodes in
parallel (``taktline imitate --workers N``) is where its throughput comes from. This runs the
same collection (iteration 0, the expert alone, ``--episodes`` episodes) with 1 worker, then
with ``--workers`` Ray workers on a local Ray (``num_cpus`` = workers), and prints labels per
wall second and the ratio. The states are identical (tests/test_imitation.py checks it), so
only the clock differs. On this 2-core machine the ceiling is 2x less Ray's overhead.

    python bench/bench_imitation.py [--line bodyshop] [--workers 2] [--episodes 2]
        [--expert 'LOOKAHEAD(base=SAME,horizon=30,k=8,line=bodyshop)']
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    import ray

    from taktline.training.imitation import EpisodeJob, play_episodes

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--line", default="bodyshop")
    ap.add_argument("--expert", default="LOOKAHEAD(base=SAME,horizon=30,k=8,line=bodyshop)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--episodes", type=int, default=2)
    args = ap.parse_args()
    jobs = [
        EpisodeJob(
            line=args.line,
            expert=args.expert,
            network_spec=None,
            weights=None,
            beta=1.0,
            seed=900_000 + k,
            rng_seed=(0, k),
            deadline=time.time() + 3600.0,
            holdout=0.15,
        )
        for k in range(args.episodes)
    ]
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    rates = {}
    for workers in (1, args.workers):
        t0 = time.perf_counter()
        parts = play_episodes(jobs, workers)
        wall = time.perf_counter() - t0
        labels = sum(len(d) for d, _, _ in parts)
        expert = sum(tp.expert_s for _, tp, _ in parts)
        rates[workers] = labels / wall
        print(
            f"{workers} worker(s): {labels} labels in {wall:.1f} s = {labels / wall:.1f} "
            f"labels/s (expert {expert / wall / workers:.0%} of the workers' core time)"
        )
    ray.shutdown()
    print(f"ratio {args.workers} workers / 1: {rates[args.workers] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
