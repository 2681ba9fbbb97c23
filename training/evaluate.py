"""Evaluation against baselines on common random numbers, with a paired significance test.

Every policy plays the same **cases**: episode ``i`` of a stochastic line is seeded ``seed + i``
for every policy (the twin draws each source from its own stream, so all policies see the same
orders and times), and a job-shop benchmark is one case per instance. Differences are therefore
paired: the table reports each policy's mean with a 95% confidence interval (Student t) and,
against a reference policy, the mean paired difference, its 95% CI, the paired t-test and the
Wilcoxon signed-rank p-values (scipy). Job shops also report the gap to the optimum or the best
known bound when the instance has one.

>>> from taktline.agents.policies import load_policy
>>> ev = evaluate([load_policy("SPT"), load_policy("MWKR")], "taktline/JobShop-v0",
...               {"instance": "ft06"}, episodes=1)
>>> [(r["policy"], r["mean"]) for r in ev.summary()]
[('SPT', 94.0), ('MWKR', 58.0)]
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from taktline.agents.policies import Policy
from taktline.errors import PolicyError

# the KPI each env is judged on, and whether more is better
DEFAULT_METRIC = {
    "taktline/JobShop-v0": ("makespan", False),
    "taktline/LineDispatch-v0": ("profit", True),
    "taktline/LineRelease-v0": ("profit", True),
}


@dataclass(frozen=True)
class Case:
    """One paired evaluation case: the env kwargs and the seed every policy gets."""

    label: str
    env_kwargs: dict[str, Any]
    seed: int


@dataclass
class Evaluation:
    """Per-policy, per-case results and their statistics."""

    env_id: str
    metric: str
    higher_is_better: bool
    cases: list[Case]
    values: dict[str, list[float]] = field(default_factory=dict)
    kpis: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def policies(self) -> list[str]:
        return list(self.values)

    def gaps(self, policy: str) -> list[float] | None:
        """Per-case gap to the optimum/best bound (``None`` when a case has no reference)."""
        out = [k.get("gap") for k in self.kpis[policy]]
        return None if any(g is None for g in out) else [float(g) for g in out]  # type: ignore[arg-type]

    def best(self) -> str:
        """The policy with the best mean."""
        sign = 1.0 if self.higher_is_better else -1.0
        return max(self.policies, key=lambda p: sign * float(np.mean(self.values[p])))

    def summary(self) -> list[dict[str, Any]]:
        """Per policy: n, mean, std, 95% CI (and mean gap for job shops)."""
        rows = []
        for p in self.policies:
            x = np.asarray(self.values[p], dtype=float)
            lo, hi = mean_ci(x)
            row: dict[str, Any] = {
                "policy": p,
                "n": len(x),
                "mean": float(x.mean()),
                "std": float(x.std(ddof=1)) if len(x) > 1 else 0.0,
                "ci_low": lo,
                "ci_high": hi,
            }
            g = self.gaps(p)
            if g is not None:
                row["gap_mean"] = float(np.mean(g))
            rows.append(row)
        return rows

    def paired(self, reference: str | None = None) -> list[dict[str, Any]]:
        """Each policy against ``reference`` (default: the first): ``diff = policy - ref``."""
        ref = reference or self.policies[0]
        if ref not in self.values:
            raise PolicyError(f"reference {ref!r}: not evaluated; have {self.policies}")
        base = np.asarray(self.values[ref], dtype=float)
        rows = []
        for p in self.policies:
            if p == ref:
                continue
            d = np.asarray(self.values[p], dtype=float) - base
            rows.append({"policy": p, "reference": ref, **paired_test(d, self.higher_is_better)})
        return rows

    def as_dict(self, reference: str | None = None) -> dict[str, Any]:
        """Plain data (``--json``, MLflow)."""
        return {
            "env_id": self.env_id,
            "metric": self.metric,
            "higher_is_better": self.higher_is_better,
            "cases": [c.label for c in self.cases],
            "seeds": [c.seed for c in self.cases],
            "summary": self.summary(),
            "paired": self.paired(reference) if len(self.policies) > 1 else [],
            "values": self.values,
            "gaps": {p: self.gaps(p) for p in self.policies},
        }

    def table_rows(self) -> list[dict[str, Any]]:
        """One row per (case, policy): the metric, its gap, and the episode return."""
        rows = []
        for p in self.policies:
            for c, v, k in zip(self.cases, self.values[p], self.kpis[p], strict=True):
                rows.append(
                    {
                        "policy": p,
                        "case": c.label,
                        "seed": c.seed,
                        self.metric: v,
                        "gap": k.get("gap"),
                        "return": k.get("return"),
                    }
                )
        return rows


def mean_ci(x: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval of the mean (the point itself for n < 2)."""
    n = len(x)
    m = float(np.mean(x)) if n else math.nan
    if n < 2:
        return m, m
    from scipy import stats

    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * np.std(x, ddof=1) / math.sqrt(n))
    return m - half, m + half


def paired_test(d: np.ndarray, higher_is_better: bool) -> dict[str, Any]:
    """Mean paired difference, its 95% CI, paired t and Wilcoxon p-values (two-sided)."""
    from scipy import stats

    lo, hi = mean_ci(d)
    out: dict[str, Any] = {
        "n": len(d),
        "diff_mean": float(np.mean(d)),
        "diff_ci_low": lo,
        "diff_ci_high": hi,
        "p_ttest": math.nan,
        "p_wilcoxon": math.nan,
    }
    if len(d) >= 2:
        if np.allclose(d, d[0]):
            out["p_ttest"] = 1.0 if d[0] == 0 else 0.0
        else:
            out["p_ttest"] = float(stats.ttest_1samp(d, 0.0).pvalue)
        out["p_wilcoxon"] = (
            1.0 if not np.any(d) else float(stats.wilcoxon(d, zero_method="zsplit").pvalue)
        )
    better = (lo > 0) if higher_is_better else (hi < 0)
    worse = (hi < 0) if higher_is_better else (lo > 0)
    out["verdict"] = (
        "better"
        if better and len(d) >= 2
        else ("worse" if worse and len(d) >= 2 else "no significant difference")
    )
    return out


def run_episode(
    policy: Policy,
    env: gym.Env[Any, Any],
    seed: int,
    metric: str,
    latencies_ms: list[float] | None = None,
) -> tuple[float, dict[str, Any]]:
    """Play one episode; return the metric and the final KPIs (plus ``return``). With
    ``latencies_ms``, each decision's time in ``policy.choose`` is appended to it."""
    obs, _ = env.reset(seed=seed)
    base = env.unwrapped
    policy.begin_episode(env)
    total, done = 0.0, False
    info: dict[str, Any] = {}
    clock = time.perf_counter
    while not done:
        mask = base.action_masks()  # type: ignore[attr-defined]
        t0 = clock()
        a = policy.choose(env, obs, mask)
        if latencies_ms is not None:
            latencies_ms.append(1000.0 * (clock() - t0))
        if not mask[a]:
            raise PolicyError(f"policy {policy.name}: chose masked action {a}")
        obs, r, term, trunc, info = env.step(a)
        total += float(r)
        done = term or trunc
    kpis = dict(info.get("kpis") or {})
    kpis["return"] = total
    if metric not in kpis:
        raise PolicyError(
            f"metric {metric!r}: not among the episode KPIs ({', '.join(sorted(kpis))})"
        )
    return float(kpis[metric]), kpis


def evaluate_cases(
    policies: Sequence[Policy],
    env_id: str,
    cases: Sequence[Case],
    metric: str | None = None,
    higher_is_better: bool | None = None,
    log: bool = True,
) -> Evaluation:
    """Play every case with every policy (same seeds: common random numbers)."""
    import taktline.envs  # noqa: F401  (registers the env ids)

    names = [p.name for p in policies]
    if len(set(names)) != len(names):
        raise PolicyError(f"policies: names must differ, got {names}")
    default = DEFAULT_METRIC.get(env_id, ("return", True))
    m = metric or default[0]
    hib = default[1] if higher_is_better is None else higher_is_better
    if metric == "return" and higher_is_better is None:
        hib = True
    ev = Evaluation(env_id, m, hib, list(cases))
    envs: dict[str, gym.Env[Any, Any]] = {}
    threads = _single_thread()
    try:
        for p in policies:
            ev.values[p.name], ev.kpis[p.name] = [], []
            for c in cases:
                key = repr(sorted(c.env_kwargs.items()))
                if key not in envs:
                    envs[key] = gym.make(env_id, disable_env_checker=True, **c.env_kwargs)
                v, k = run_episode(p, envs[key], c.seed, m)
                ev.values[p.name].append(v)
                ev.kpis[p.name].append(k)
    finally:
        for env in envs.values():
            env.close()
        _restore_threads(threads)
    if log:
        log_to_mlflow(ev)
    return ev


def _single_thread() -> int | None:
    """One torch thread while stepping: batch-1 forwards are 10x slower with more on a busy
    machine (threads spin waiting for each other). Returns the previous count."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    previous = int(torch.get_num_threads())
    torch.set_num_threads(1)
    return previous


def _restore_threads(previous: int | None) -> None:
    torch = sys.modules.get("torch")
    if torch is not None and previous is not None:
        torch.set_num_threads(previous)


def evaluate(
    policies: Sequence[Policy],
    env_id: str,
    env_kwargs: dict[str, Any] | None = None,
    episodes: int = 10,
    seed: int = 0,
    metric: str | None = None,
    log: bool = True,
) -> Evaluation:
    """Episodes ``seed, seed+1, ...`` of one env, the same for every policy."""
    if episodes < 1:
        raise PolicyError(f"episodes: must be >= 1, got {episodes}")
    kw = dict(env_kwargs or {})
    cases = [Case(f"seed {seed + i}", kw, seed + i) for i in range(episodes)]
    return evaluate_cases(policies, env_id, cases, metric, log=log)


def evaluate_instances(
    policies: Sequence[Policy],
    instances: Sequence[str],
    env_kwargs: dict[str, Any] | None = None,
    log: bool = True,
) -> Evaluation:
    """One case per job-shop instance (deterministic, so one episode each)."""
    base = dict(env_kwargs or {})
    cases = [Case(name, {**base, "instance": name}, 0) for name in instances]
    return evaluate_cases(policies, "taktline/JobShop-v0", cases, log=log)


def log_to_mlflow(ev: Evaluation, prefix: str = "eval") -> bool:
    """Log the summary as metrics and the per-case table as an artifact, when a run is active."""
    mlflow = sys.modules.get("mlflow")
    if mlflow is None or mlflow.active_run() is None:
        return False
    for row in ev.summary():
        name = _metric_key(row["policy"])
        mlflow.log_metric(f"{prefix}.{name}.{ev.metric}_mean", row["mean"])
        if "gap_mean" in row:
            mlflow.log_metric(f"{prefix}.{name}.gap_mean", row["gap_mean"])
    mlflow.log_table(
        {k: [r[k] for r in ev.table_rows()] for k in ev.table_rows()[0]},
        artifact_file=f"{prefix}/table.json",
    )
    mlflow.log_dict(ev.as_dict(), f"{prefix}/evaluation.json")
    return True


def _metric_key(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_-." else "_" for c in name)


def render_table(ev: Evaluation, reference: str | None = None) -> Any:
    """A rich table: mean ± 95% CI half-width, gap, and the paired comparison with the
    reference (difference ± its 95% CI half-width, paired t and Wilcoxon p-values)."""
    from rich.table import Table

    ref = reference or ev.policies[0]
    paired = {r["policy"]: r for r in ev.paired(ref)} if len(ev.policies) > 1 else {}
    arrow = "higher" if ev.higher_is_better else "lower"
    t = Table(
        title=f"{ev.env_id}: {ev.metric} ({arrow} is better), {len(ev.cases)} paired "
        f"cases; Δ = policy - {ref}"
    )
    for col in ("policy", "mean ± CI", "gap", "Δ ± CI", "p t", "p W", "verdict"):
        t.add_column(col, justify="left" if col in ("policy", "verdict") else "right")
    short = {"better": "better", "worse": "worse", "no significant difference": "n.s."}
    for row in ev.summary():
        p = paired.get(row["policy"])
        gap = f"{100 * row['gap_mean']:.1f}%" if "gap_mean" in row else ""
        half = (row["ci_high"] - row["ci_low"]) / 2
        t.add_row(
            row["policy"],
            f"{row['mean']:.1f} ± {half:.1f}",
            gap,
            f"{p['diff_mean']:+.1f} ± {(p['diff_ci_high'] - p['diff_ci_low']) / 2:.1f}"
            if p
            else "—",
            _p(p["p_ttest"]) if p else "",
            _p(p["p_wilcoxon"]) if p else "",
            short[p["verdict"]] if p else "ref",
        )
    return t


def _p(v: float) -> str:
    return "n/a" if v != v else f"{v:.3g}"
