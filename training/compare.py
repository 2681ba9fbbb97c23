"""Honest verdicts: every optimizer of the portfolio against the best single rule, paired.

:func:`compare` plays one line (a bundled name or any spec file) under

* every built-in dispatching rule (the baselines),
* the lookahead on twin forks (``LOOKAHEAD(base=<best rule>, ...)`` unless one is given),
* whatever else is named (a tuned rule ``ATC(k=2.3)``, a learned policy ``models:/NAME@ALIAS``),

on the same held-out seeds (common random numbers: episode ``i`` is seeded ``seed + i`` for every
policy) in ``LineDispatch-v0`` with job actions, the env every policy is judged in. The reference
is the rule with the best mean **on those held-out seeds** — a choice that favours the rules, so
a win against it is not an artefact of selection. The lookahead's base rule, which must be fixed
before the held-out seeds are played, is the best rule on separate pilot seeds (simulated inline,
fast).

The result holds, per policy, the objective's mean and 95% CI, the paired difference to the best
rule with its 95% CI and p-values, the verdict, and the decision latency (p50/p99 of
``choose``). Episodes are played in rounds (one seed for every policy) until ``episodes`` rounds
or ``minutes`` are done, so a time budget never leaves an unpaired case. With ``workers > 1`` the
rounds run as Ray tasks (the cluster of ``RAY_ADDRESS`` when set, else a local Ray).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from taktline.errors import PolicyError, SpecError
from taktline.training.evaluate import Case, Evaluation

ENV_ID = "taktline/LineDispatch-v0"
PILOT_SEED = 1_000_000
"""Pilot seeds (the lookahead's base rule) start here, far from any held-out seed."""


@dataclass
class Comparison:
    """The evaluation of a portfolio on one line, with latencies and the reference rule."""

    line: str
    evaluation: Evaluation
    reference: str
    rules: list[str]
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)
    pilot: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0

    def rows(self) -> list[dict[str, Any]]:
        """One row per policy: mean, CI, paired Δ to the reference, p, verdict, latency."""
        ev = self.evaluation
        paired = {r["policy"]: r for r in ev.paired(self.reference)}
        out = []
        for row in ev.summary():
            lat = np.asarray(self.latencies_ms.get(row["policy"], []), dtype=float)
            p = paired.get(row["policy"])
            out.append(
                {
                    **row,
                    "kind": policy_kind(row["policy"]),
                    "diff_mean": p["diff_mean"] if p else 0.0,
                    "diff_ci_low": p["diff_ci_low"] if p else 0.0,
                    "diff_ci_high": p["diff_ci_high"] if p else 0.0,
                    "p_ttest": p["p_ttest"] if p else math.nan,
                    "p_wilcoxon": p["p_wilcoxon"] if p else math.nan,
                    "verdict": p["verdict"] if p else "reference",
                    "latency_p50_ms": float(np.percentile(lat, 50)) if lat.size else math.nan,
                    "latency_p99_ms": float(np.percentile(lat, 99)) if lat.size else math.nan,
                    "decisions": int(lat.size),
                }
            )
        return out

    def winner(self) -> str:
        """The policy to deploy: the best mean among those significantly better than the best
        rule, else the best rule itself."""
        sign = 1.0 if self.evaluation.higher_is_better else -1.0
        better = [r for r in self.rows() if r["verdict"] == "better"]
        if not better:
            return self.reference
        return max(better, key=lambda r: sign * r["mean"])["policy"]

    def as_dict(self) -> dict[str, Any]:
        """Plain data (``--json``, MLflow)."""
        ev = self.evaluation
        return {
            "line": self.line,
            "env_id": ev.env_id,
            "metric": ev.metric,
            "higher_is_better": ev.higher_is_better,
            "seeds": [c.seed for c in ev.cases],
            "reference": self.reference,
            "winner": self.winner(),
            "pilot": self.pilot,
            "rows": self.rows(),
            "values": ev.values,
            "wall_s": self.wall_s,
        }


def policy_kind(name: str) -> str:
    """``rule``, ``lookahead``, ``tuned rule`` or ``learned`` (for tables and bar colours)."""
    from taktline.agents.rules import DISPATCH_RULES

    head = name.strip().upper().partition("(")[0]
    if head == "LOOKAHEAD":
        return "lookahead"
    if head in DISPATCH_RULES:
        return "rule" if "(" not in name else "tuned rule"
    return "learned"


def pilot_rules(
    spec: Any, rules: Sequence[str], seeds: Sequence[int], horizon: float, warmup: float
) -> dict[str, float]:
    """Mean profit of each rule run inline in the twin on the pilot seeds."""
    from taktline.agents.rules import get_rule
    from taktline.envs.twin import replicate

    out = {}
    for name in rules:
        runs = [
            replicate(spec, get_rule(name), 1, seed=s, until=horizon, warmup=warmup)[0]
            for s in seeds
        ]
        out[name] = float(np.mean([k.profit for k in runs]))
    return out


def _play_round(
    refs: Sequence[str], env_kwargs: dict[str, Any], seed: int, metric: str
) -> dict[str, tuple[float, dict[str, Any], list[float]]]:
    """Every policy on one seed: ``{name: (metric, kpis, latencies_ms)}``."""
    import gymnasium as gym

    import taktline.envs  # noqa: F401  (registers the env ids in a Ray worker too)
    from taktline.agents.policies import load_policy
    from taktline.training.evaluate import run_episode

    env = gym.make(ENV_ID, disable_env_checker=True, **env_kwargs)
    out = {}
    try:
        for ref in refs:
            policy = load_policy(ref, seed=seed)
            lat: list[float] = []
            value, kpis = run_episode(policy, env, seed, metric, lat)
            out[policy.name] = (value, kpis, lat)
    finally:
        env.close()
    return out


def compare(
    line: str,
    policies: Sequence[str] = (),
    *,
    rules: Sequence[str] | None = None,
    lookahead: str | None = "auto",
    episodes: int = 10,
    minutes: float | None = None,
    seed: int = 0,
    pilot: int = 5,
    workers: int = 1,
    on_round: Callable[[int, int], None] | None = None,
) -> Comparison:
    """Play the portfolio on ``line``; see the module docstring.

    Args:
        line: A bundled line name or a spec file.
        policies: More policy references (tuned rules, ``models:/...``, bundles).
        rules: The baseline rules (default: every built-in dispatching rule).
        lookahead: ``"auto"`` (base = the best pilot rule), a ``LOOKAHEAD(...)`` reference,
            or ``None`` for none.
        episodes: Held-out seeds ``seed .. seed + episodes - 1`` (at most).
        minutes: Stop starting rounds after this much wall time (at least two rounds run).
        seed: The first held-out seed.
        pilot: Pilot seeds for the lookahead's base rule.
        workers: Ray tasks playing rounds at once (1: in this process).
        on_round: Called with (rounds done, rounds planned) after each round.
    """
    from taktline.agents.policies import load_policy
    from taktline.agents.rules import DISPATCH_RULES
    from taktline.envs.spec import load_spec

    start = time.perf_counter()
    spec = load_spec(line)
    if spec.horizon is None:
        raise SpecError(
            f"line {spec.name!r}: has no default horizon; add `horizon:` to the spec to compare "
            "policies on it"
        )
    if episodes < 2:
        raise PolicyError(f"episodes: must be >= 2 for a paired CI, got {episodes}")
    if minutes is not None and not minutes > 0:
        raise PolicyError(f"minutes: must be > 0, got {minutes}")
    if workers < 1:
        raise PolicyError(f"workers: must be >= 1, got {workers}")
    rule_names = [r.upper() for r in (rules or DISPATCH_RULES)]
    for r in rule_names:
        load_policy(r)  # an unknown rule is refused before any work
    warmup = float(spec.warmup)
    pilot_means = pilot_rules(
        spec, rule_names, [PILOT_SEED + i for i in range(pilot)], spec.horizon, warmup
    )
    base = max(pilot_means, key=lambda r: pilot_means[r])
    refs = list(rule_names)
    if lookahead == "auto":
        refs.append(f"LOOKAHEAD(base={base},horizon={_default_horizon(spec)},k=8,line={line})")
    elif lookahead:
        refs.append(lookahead)
    refs.extend(policies)
    names = [load_policy(r).name for r in refs]  # bad references fail here, naming themselves
    if len(set(names)) != len(names):
        raise PolicyError(f"policies: names must differ, got {names}")
    env_kwargs = {
        "line": str(Path(line)) if Path(line).suffix else line,
        "horizon": float(spec.horizon),
        "warmup": warmup,
        "action_mode": "job",
    }
    metric = "profit"
    ev = Evaluation(ENV_ID, metric, True, [])
    latencies: dict[str, list[float]] = {n: [] for n in names}
    for n in names:
        ev.values[n], ev.kpis[n] = [], []

    def record(i: int, result: dict[str, tuple[float, dict[str, Any], list[float]]]) -> None:
        ev.cases.append(Case(f"seed {seed + i}", env_kwargs, seed + i))
        for n in names:
            value, kpis, lat = result[n]
            ev.values[n].append(value)
            ev.kpis[n].append(kpis)
            latencies[n].extend(lat)
        if on_round is not None:
            on_round(len(ev.cases), episodes)

    def out_of_time() -> bool:
        done = len(ev.cases) >= 2
        return minutes is not None and done and time.perf_counter() - start > 60 * minutes

    if workers == 1:
        for i in range(episodes):
            if out_of_time():
                break
            record(i, _play_round(refs, env_kwargs, seed + i, metric))
    else:
        calls = [(refs, env_kwargs, seed + i, metric) for i in range(episodes)]
        in_order_on_ray(_play_round, calls, workers, record, out_of_time)
    reference = max(rule_names, key=lambda r: float(np.mean(ev.values[r])))
    return Comparison(
        spec.name,
        ev,
        reference,
        rule_names,
        latencies,
        pilot_means,
        time.perf_counter() - start,
    )


def _default_horizon(spec: Any) -> float:
    """A rollout of a thirty-second of the line's horizon, at least 20 time units (30 minutes
    for a 16-hour line: long enough to see a changeover's cost, short enough that the rollout
    rule's own choices do not drown the first decision's effect)."""
    return float(max(20.0, round(float(spec.horizon) / 32.0)))


def in_order_on_ray(
    fn: Callable[..., Any],
    calls: Sequence[tuple[Any, ...]],
    workers: int,
    record: Callable[[int, Any], None],
    out_of_time: Callable[[], bool] = lambda: False,
) -> None:
    """``fn(*calls[i])`` as Ray tasks, ``workers`` at a time (the cluster of ``RAY_ADDRESS``
    when set, else a local Ray); ``record(i, result)`` in call order as results come in. Once
    ``out_of_time()``, no more calls start; the running ones finish and are recorded."""
    import ray

    from taktline.raycluster import attach

    attach()
    task = ray.remote(num_cpus=1)(fn)
    pending: dict[Any, int] = {}
    results: dict[int, Any] = {}
    nxt, recorded = 0, 0
    while nxt < len(calls) or pending:
        while nxt < len(calls) and len(pending) < workers and not out_of_time():
            pending[task.remote(*calls[nxt])] = nxt  # type: ignore[attr-defined]
            nxt += 1
        if not pending:
            break
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            results[pending.pop(ref)] = ray.get(ref)
        while recorded in results:
            record(recorded, results.pop(recorded))
            recorded += 1
        if out_of_time():
            nxt = len(calls)  # start no more; the running calls finish and count


def bar_chart(comparison: Comparison, path: Path) -> Path:
    """Two panels: each policy's mean with its 95% CI (the best rule's mean as a line), and the
    verdict — the paired difference to the best rule with its 95% CI for the challengers (every
    policy that is not a plain rule; the runner-up rule when there is none), where a few percent
    show."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = comparison.rows()
    colours = {
        "rule": "#9aa5b1",
        "tuned rule": "#5b8def",
        "lookahead": "#2ca58d",
        "learned": "#e07a5f",
    }
    sign = 1.0 if comparison.evaluation.higher_is_better else -1.0
    rules = sorted(
        (r for r in rows if r["kind"] == "rule" and r["verdict"] != "reference"),
        key=lambda r: -sign * r["mean"],
    )
    challengers = [r for r in rows if r["kind"] != "rule"] or rules[:1]
    width = max(6.0, 0.8 * len(rows)) + 0.9 * len(challengers) + 1.5
    fig, (ax, vx) = plt.subplots(
        1,
        2,
        figsize=(width, 4.2),
        dpi=110,
        gridspec_kw={"width_ratios": [len(rows), max(len(challengers), 2)]},
    )
    xs = np.arange(len(rows))
    means = np.array([r["mean"] for r in rows])
    err = np.array(
        [[r["mean"] - r["ci_low"] for r in rows], [r["ci_high"] - r["mean"] for r in rows]]
    )
    ax.bar(xs, means, yerr=err, capsize=4, color=[colours[r["kind"]] for r in rows])
    ref = next(r for r in rows if r["policy"] == comparison.reference)
    ax.axhline(ref["mean"], color="#333", lw=1, ls="--", label=f"best rule {comparison.reference}")
    lo = float(np.min([r["ci_low"] for r in rows]))
    hi = float(np.max([r["ci_high"] for r in rows]))
    pad = 0.15 * max(hi - lo, 1e-9)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_xticks(xs, [_short(r["policy"]) for r in rows], rotation=30, ha="right", fontsize=8)
    ev = comparison.evaluation
    ax.set_ylabel(f"{ev.metric} per episode (95% CI)")
    ax.set_title(
        f"{comparison.line}: {len(ev.cases)} paired seeds; winner {_short(comparison.winner())}",
        fontsize=10,
    )
    for x, r in zip(xs, rows, strict=True):
        if r["verdict"] in ("better", "worse"):
            ax.annotate(
                "▲" if r["verdict"] == "better" else "▼",
                (x, r["ci_high"]),
                ha="center",
                va="bottom",
                fontsize=9,
            )
    ax.legend(fontsize=8, loc="lower right")
    cx = np.arange(len(challengers))
    diffs = np.array([r["diff_mean"] for r in challengers])
    derr = np.array(
        [
            [r["diff_mean"] - r["diff_ci_low"] for r in challengers],
            [r["diff_ci_high"] - r["diff_mean"] for r in challengers],
        ]
    )
    vx.bar(cx, diffs, yerr=derr, capsize=4, color=[colours[r["kind"]] for r in challengers])
    vx.axhline(0.0, color="#333", lw=1, ls="--")
    vx.set_xticks(
        cx, [_short(r["policy"]) for r in challengers], rotation=30, ha="right", fontsize=8
    )
    vx.set_ylabel(f"Δ {ev.metric} vs {comparison.reference} (paired 95% CI)")
    vx.set_title("the verdict", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _short(name: str) -> str:
    """``LOOKAHEAD(base=SAME,horizon=60.0,k=8,line=...)`` -> ``LOOKAHEAD(SAME,h=60,k=8)``."""
    if not name.upper().startswith("LOOKAHEAD("):
        return name if len(name) <= 28 else name[:27] + "…"
    args = dict(a.split("=", 1) for a in name[10:-1].split(",") if "=" in a)
    h = args.get("horizon", "?").removesuffix(".0")
    return f"LOOKAHEAD({args.get('base', '?')},h={h},k={args.get('k', '?')})"


def log_comparison(comparison: Comparison, chart: Path | None) -> str | None:
    """Log the comparison to MLflow (a run in experiment ``compare``); returns the run id."""
    import mlflow

    from taktline.training import tracking
    from taktline.training.evaluate import _metric_key

    tracking.configure()
    exp = tracking.ensure_experiment("compare")
    with mlflow.start_run(experiment_id=exp, run_name=f"compare {comparison.line}") as run:
        ev = comparison.evaluation
        mlflow.set_tags(
            {
                "taktline.line": comparison.line,
                "taktline.reference": comparison.reference,
                "taktline.winner": comparison.winner(),
            }
        )
        mlflow.log_params({"episodes": len(ev.cases), "seeds": f"{ev.cases[0].seed}.."})
        for r in comparison.rows():
            key = _metric_key(_short(r["policy"]))
            mlflow.log_metric(f"compare.{key}.{ev.metric}_mean", r["mean"])
            mlflow.log_metric(f"compare.{key}.diff_mean", r["diff_mean"])
            if math.isfinite(r["latency_p50_ms"]):
                mlflow.log_metric(f"compare.{key}.latency_p50_ms", r["latency_p50_ms"])
        mlflow.log_dict(comparison.as_dict(), "compare/comparison.json")
        if chart is not None:
            mlflow.log_artifact(str(chart), "compare")
        return str(run.info.run_id)
