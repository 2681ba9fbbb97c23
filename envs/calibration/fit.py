"""Fitting one sample of durations to the spec's distribution kinds.

Each candidate (exponential, uniform, triangular, normal, lognormal, gamma, Weibull) is fitted
by maximum likelihood (:mod:`scipy.stats`); the candidates a Kolmogorov-Smirnov test does not
reject at 1% are ranked by AIC and the best one wins; when every candidate is rejected the
sample itself becomes an ``empirical`` distribution. A sample with no spread is
``deterministic``. Right-censored samples (the failure-free stretch at the end of a log) are
fitted with :class:`scipy.stats.CensoredData` (exponential, gamma, Weibull, lognormal).

Large samples are fitted on a fixed-seed subsample of :data:`MAX_FIT_SAMPLES` (the mean and
the test statistic are still reported on all of it): the MLE of a few parameters from 20,000
draws is as good as from a million, and a triangular fit costs milliseconds instead of minutes.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAX_FIT_SAMPLES = 20_000
"""Samples a fit uses at most (a fixed-seed subsample beyond it)."""
KS_ALPHA = 0.01
"""Significance level at which the Kolmogorov-Smirnov test rejects a candidate."""
EMPIRICAL_MAX = 500
"""Samples an empirical distribution keeps at most (evenly spaced order statistics)."""
THIN_N = 30
"""Fewer samples than this make a cell 'thin' (a warning in the report)."""


@dataclass
class Fit:
    """A fitted distribution and how well it fits.

    Attributes:
        dist: the spec's distribution as a dict (``{"dist": "gamma", "shape": ..}``).
        n: observations (censored ones included).
        n_censored: right-censored observations.
        mean: the sample mean (uncensored observations).
        std: the sample standard deviation.
        fitted_mean: the mean of the fitted distribution.
        ks: the KS statistic of the chosen fit (0 for deterministic).
        p_value: the KS p-value (1 for deterministic and empirical).
        aic: AIC of each candidate fitted.
        loglik: the log-likelihood of the chosen fit.
        sample: the observations (for QQ plots), at most MAX_FIT_SAMPLES.
    """

    dist: dict[str, Any]
    n: int
    n_censored: int
    mean: float
    std: float
    fitted_mean: float
    ks: float
    p_value: float
    aic: dict[str, float] = field(default_factory=dict)
    loglik: float = 0.0
    sample: Any = None

    @property
    def kind(self) -> str:
        return str(self.dist["dist"])

    def summary(self) -> dict[str, Any]:
        """The fit as JSON-ready numbers (no sample)."""
        return {
            "dist": self.dist if self.kind != "empirical" else {"dist": "empirical"},
            "n": self.n,
            "n_censored": self.n_censored,
            "mean": self.mean,
            "std": self.std,
            "fitted_mean": self.fitted_mean,
            "ks": self.ks,
            "p_value": self.p_value,
            "aic": self.aic,
            "thin": self.n < THIN_N,
        }


def _frozen(kind: str, params: tuple[float, ...]) -> Any:
    from scipy import stats

    return {
        "exponential": lambda p: stats.expon(0.0, p[0]),
        "uniform": lambda p: stats.uniform(p[0], p[1] - p[0]),
        "triangular": lambda p: stats.triang((p[1] - p[0]) / (p[2] - p[0]), p[0], p[2] - p[0]),
        "normal": lambda p: stats.norm(p[0], p[1]),
        "lognormal": lambda p: stats.lognorm(p[1], 0.0, math.exp(p[0])),
        "gamma": lambda p: stats.gamma(p[0], 0.0, p[1]),
        "weibull": lambda p: stats.weibull_min(p[0], 0.0, p[1]),
    }[kind](params)


def _mle(kind: str, x: np.ndarray) -> tuple[float, ...]:
    """Maximum-likelihood parameters of ``kind`` (closed forms where there are)."""
    from scipy import stats

    if kind == "exponential":
        return (float(x.mean()),)
    if kind == "uniform":
        return (float(x.min()), float(x.max()))
    if kind == "normal":
        return (float(x.mean()), float(x.std()))
    if kind == "lognormal":
        lx = np.log(x)
        return (float(lx.mean()), float(lx.std()))
    if kind == "gamma":
        a, _, scale = stats.gamma.fit(x, floc=0.0)
        return (float(a), float(scale))
    if kind == "weibull":
        c, _, scale = stats.weibull_min.fit(x, floc=0.0)
        return (float(c), float(scale))
    if kind == "triangular":
        lo, hi = float(x.min()), float(x.max())
        span = hi - lo
        # the MLE's bounds sit just outside the sample; scipy refines c (and the bounds)
        c, loc, scale = stats.triang.fit(x, 0.5, loc=lo - 1e-3 * span, scale=span * 1.002)
        return (float(loc), float(loc + c * scale), float(loc + scale))
    raise ValueError(kind)  # pragma: no cover


def _spec_dist(kind: str, p: tuple[float, ...]) -> dict[str, Any]:
    """The spec's dict for a scipy fit (``low`` of bounded kinds clipped at 0)."""
    if kind == "exponential":
        return {"dist": "exponential", "mean": p[0]}
    if kind == "uniform":
        return {"dist": "uniform", "low": max(p[0], 0.0), "high": p[1]}
    if kind == "triangular":
        low = max(p[0], 0.0)
        return {"dist": "triangular", "low": low, "mode": max(p[1], low), "high": p[2]}
    if kind == "normal":
        return {"dist": "normal", "mu": p[0], "sigma": p[1]}
    if kind == "lognormal":
        mu, s = p
        mean = math.exp(mu + s * s / 2)
        return {"dist": "lognormal", "mean": mean, "std": mean * math.sqrt(math.expm1(s * s))}
    if kind == "gamma":
        return {"dist": "gamma", "shape": p[0], "scale": p[1]}
    return {"dist": "weibull", "shape": p[0], "scale": p[1]}


CANDIDATES = ("exponential", "uniform", "triangular", "normal", "lognormal", "gamma", "weibull")
"""The candidate kinds, in the order ties are broken."""
N_PARAMS = {
    "exponential": 1,
    "uniform": 2,
    "triangular": 3,
    "normal": 2,
    "lognormal": 2,
    "gamma": 2,
    "weibull": 2,
}


def fit_durations(
    values: Any, censored: Any = None, seed: int = 0, candidates: tuple[str, ...] = CANDIDATES
) -> Fit:
    """Fit a sample of positive durations (and optional right-censored ones).

    Args:
        values: the observed durations.
        censored: durations known only to exceed the value (a failure that has not come yet).
        seed: the seed of the subsample of a large sample.
        candidates: the kinds to try.

    Returns:
        The chosen :class:`Fit`.

    Raises:
        ValueError: when ``values`` is empty.
    """
    from scipy import stats

    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    c = np.asarray([] if censored is None else censored, dtype=float)
    c = c[np.isfinite(c) & (c > 0)]
    if x.size == 0:
        raise ValueError("no observations to fit")
    n, mean = int(x.size), float(x.mean())
    std = float(x.std(ddof=1)) if n > 1 else 0.0
    full = x
    if x.size > MAX_FIT_SAMPLES:
        x = np.random.default_rng(seed).choice(x, MAX_FIT_SAMPLES, replace=False)
    base: dict[str, Any] = {
        "n": n + int(c.size),
        "n_censored": int(c.size),
        "mean": mean,
        "std": std,
    }
    if n == 1 or float(x.max() - x.min()) <= 1e-9 * max(1.0, abs(mean)):
        d = {"dist": "deterministic", "value": max(mean, 0.0)}
        return Fit(d, fitted_mean=max(mean, 0.0), ks=0.0, p_value=1.0, sample=x, **base)
    positive = bool(x.min() > 0)
    results: dict[str, tuple[float, float, float, tuple[float, ...]]] = {}
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for kind in candidates:
            if kind in ("exponential", "lognormal", "gamma", "weibull") and not positive:
                continue
            try:
                if c.size and kind in ("exponential", "lognormal", "gamma", "weibull"):
                    p = _censored_mle(kind, x, c)
                else:
                    p = _mle(kind, x)
                frozen = _frozen(kind, p)
                ll = float(np.sum(frozen.logpdf(x)))
                if c.size:
                    ll += float(np.sum(frozen.logsf(c)))
                if not math.isfinite(ll):
                    continue
                ks, pv = stats.kstest(x, frozen.cdf)
            except (ValueError, RuntimeError, FloatingPointError):
                continue
            results[kind] = (2 * N_PARAMS[kind] - 2 * ll, float(ks), float(pv), p)
    aic = {k: v[0] for k, v in results.items()}
    accepted = [k for k, v in results.items() if v[2] >= KS_ALPHA]
    if not accepted:
        qs = np.quantile(full, np.linspace(0, 1, min(EMPIRICAL_MAX, n)))
        d = {"dist": "empirical", "samples": [float(v) for v in qs]}
        return Fit(d, fitted_mean=float(qs.mean()), ks=0.0, p_value=1.0, aic=aic, sample=x, **base)
    best = min(accepted, key=lambda k: (aic[k], CANDIDATES.index(k)))
    a, ks, pv, p = results[best]
    d = _spec_dist(best, p)
    fitted_mean = float(_frozen(best, p).mean())
    if best == "normal":  # the spec's normal is truncated at 0: its mean is what the twin draws
        from taktline.envs.distributions import TruncatedNormal

        fitted_mean = TruncatedNormal(mu=p[0], sigma=p[1]).mean
    return Fit(
        d,
        fitted_mean=fitted_mean,
        ks=ks,
        p_value=pv,
        aic=aic,
        loglik=(2 * N_PARAMS[best] - a) / 2,
        sample=x,
        **base,
    )


def _censored_mle(kind: str, x: np.ndarray, c: np.ndarray) -> tuple[float, ...]:
    """MLE with right-censored observations (scipy's ``CensoredData``)."""
    from scipy import stats

    if kind == "exponential":  # closed form: total time on test / failures
        return (float((x.sum() + c.sum()) / x.size),)
    data = stats.CensoredData(uncensored=x, right=c)
    if kind == "lognormal":
        s, _, scale = stats.lognorm.fit(data, floc=0.0)
        return (float(math.log(scale)), float(s))
    if kind == "gamma":
        a, _, scale = stats.gamma.fit(data, floc=0.0)
        return (float(a), float(scale))
    k, _, scale = stats.weibull_min.fit(data, floc=0.0)
    return (float(k), float(scale))


def qq_points(fit: Fit, points: int = 200) -> tuple[Any, Any]:
    """Theoretical and sample quantiles of a fit (for its QQ plot)."""
    from taktline.envs.distributions import coerce_dist

    sample = np.sort(np.asarray(fit.sample, dtype=float))
    probs = (np.arange(1, points + 1) - 0.5) / points
    observed = np.quantile(sample, probs)
    from pydantic import TypeAdapter

    from taktline.envs.distributions import Distribution

    dist = TypeAdapter(Distribution).validate_python(coerce_dist(fit.dist))
    draws = np.sort(dist.draw(np.random.default_rng(0), 20_000))
    return np.quantile(draws, probs), observed
