"""KPIs a plant manager reads, and replication statistics (mean and 95% confidence interval)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field


@dataclass
class StationKpis:
    name: str
    utilization: float
    availability: float
    blocked_share: float
    starved_share: float
    setup_share: float
    mean_wait: float
    mean_queue: float


@dataclass
class Kpis:
    """Statistics of one run over the observation window (after warm-up)."""

    window: float
    throughput: float
    completed: int
    released: int
    wip: float
    flow_time: float
    lead_time: float
    makespan: float
    total_tardiness: float
    max_tardiness: float
    share_late: float
    setups: int
    energy_kwh: float
    energy_cost: float
    revenue: float
    wip_cost: float
    tardiness_cost: float
    setup_cost: float
    profit: float
    stations: list[StationKpis] = field(default_factory=list)

    def as_dict(self, flat: bool = False) -> dict[str, float | int | list[dict[str, float]]]:
        d = asdict(self)
        if flat:
            st = d.pop("stations")
            for s in st:
                for k, v in s.items():
                    if k != "name":
                        d[f"{s['name']}.{k}"] = v
        return d

    def scalar(self) -> dict[str, float]:
        """The scalar KPIs (no per-station breakdown), for tables and metrics."""
        return {k: float(v) for k, v in asdict(self).items() if k != "stations"}


HEADLINE = (
    "throughput",
    "wip",
    "flow_time",
    "makespan",
    "total_tardiness",
    "share_late",
    "setups",
    "energy_kwh",
    "profit",
)


def t_quantile_975(dof: int) -> float:
    """Two-sided 95% Student-t quantile (exact via scipy when present)."""
    try:
        from scipy.stats import t

        return float(t.ppf(0.975, dof))
    except ImportError:  # pragma: no cover - scipy ships with the package's dependencies
        table = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 10: 2.228, 20: 2.086}
        return table.get(dof, 1.96)


@dataclass(frozen=True)
class Estimate:
    mean: float
    half_width: float
    n: int

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    def __str__(self) -> str:
        if self.n < 2 or not math.isfinite(self.half_width):
            return f"{self.mean:.4g}"
        return f"{self.mean:.4g} ± {self.half_width:.2g}"


def estimate(values: Sequence[float]) -> Estimate:
    """Mean and 95% CI half-width over independent replications."""
    n = len(values)
    if n == 0:
        return Estimate(math.nan, math.nan, 0)
    mean = sum(values) / n
    if n < 2:
        return Estimate(mean, math.inf, n)
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return Estimate(mean, t_quantile_975(n - 1) * math.sqrt(var / n), n)


def summarize(runs: Sequence[Kpis]) -> dict[str, Estimate]:
    """Per-KPI estimates over replications."""
    keys = list(runs[0].scalar()) if runs else []
    return {k: estimate([r.scalar()[k] for r in runs]) for k in keys}
