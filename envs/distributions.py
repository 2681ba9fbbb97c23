"""Processing-time, arrival, failure and repair distributions.

A distribution is a frozen pydantic model tagged by ``dist`` (so specs read naturally:
``{dist: exponential, mean: 4.0}``; a bare number means deterministic). Each knows its mean and
squared coefficient of variation (used for load checks and queueing theory), and makes a
:class:`Sampler` that draws from a numpy ``Generator`` in blocks — drawing one number at a time
from numpy costs more than the whole event it feeds.

Restoring a twin from a plant's snapshot needs two more draws, both from the one generator given:

``sample_remaining(rng, elapsed)``
    The time left of an activity that has run ``elapsed`` already: ``X - e`` given ``X > e``.
    Exact everywhere except one documented fallback:

    * exponential: a fresh draw (memoryless);
    * deterministic, uniform, triangular, Weibull, lognormal, normal: inversion of the
      conditional CDF ``u ~ U(F(e), 1)``, ``x = F⁻¹(u)`` (closed forms; the normal quantile is
      :class:`statistics.NormalDist`, inverted on the tail side so that deep tails keep their
      precision); empirical: a uniform pick among the samples above ``e``;
    * gamma (no closed-form CDF): rejection from the distribution itself (at most
      ``_REJECT_BLOCKS`` blocks), then, deep in the tail, exact rejection from an exponential
      envelope (``(1 + y/e)^(k-1) <= exp((k-1) y/e)``); if that too fails ``_ENVELOPE_TRIES``
      times, ``Exp(scale)`` — the limit of the gamma residual life as ``e`` grows;
    * a bounded distribution already past its upper end (an overdue activity, ``F(e) = 1``):
      ``0.0`` — the activity ends now.

``sample_residual(rng)``
    The time left of an activity seen at a random moment of a long run of such activities (the
    equilibrium forward-recurrence time, density ``(1 - F(x)) / mean``): used where a snapshot
    cannot say how far an activity has run (a failure clock's age, the operation a breakdown
    interrupted). Exact for exponential (a fresh draw) and deterministic (``U * value``); for
    the others sampling-importance-resampling: ``_SIR_DRAWS`` draws, one picked with weight ``x``
    (length-biased), times ``U(0, 1)``.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

_BLOCK = 2048
_REJECT_BLOCKS = 1  # blocks of _BLOCK plain draws tried before the tail method (P(X > e) small)
_ENVELOPE_TRIES = 1000
_SIR_DRAWS = 4096
_STD_NORMAL = NormalDist()


class _Dist(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @property
    def mean(self) -> float:
        raise NotImplementedError

    @property
    def scv(self) -> float:
        """Squared coefficient of variation, variance / mean²."""
        raise NotImplementedError

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        raise NotImplementedError

    def sampler(self, rng: np.random.Generator) -> Sampler:
        return Sampler(self, rng)

    def sample_remaining(self, rng: np.random.Generator, elapsed: float) -> float:
        """Time left of an activity of this length that has run ``elapsed``: ``X - e | X > e``.

        Raises:
            ValueError: when ``elapsed`` is negative or not a number.
        """
        e = _check_elapsed(elapsed)
        return max(self._remaining(rng, e), 0.0)

    def _remaining(self, rng: np.random.Generator, e: float) -> float:
        return _by_rejection(self, rng, e)

    def _tail_remaining(self, rng: np.random.Generator, e: float) -> float:
        """Deep in the tail where plain rejection failed (see the module docstring)."""
        return float(rng.exponential(self.mean)) if self.mean > 0 else 0.0

    def sample_residual(self, rng: np.random.Generator) -> float:
        """Time left of this activity seen at a random moment (equilibrium forward recurrence)."""
        x = self.draw(rng, _SIR_DRAWS)
        total = float(x.sum())
        if total <= 0:
            return 0.0
        pick = float(x[int(rng.choice(_SIR_DRAWS, p=x / total))])
        return pick * float(rng.random())


class Deterministic(_Dist):
    dist: Literal["deterministic"] = "deterministic"
    value: float = Field(ge=0)

    @property
    def mean(self) -> float:
        return self.value

    @property
    def scv(self) -> float:
        return 0.0

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.full(n, self.value)

    def _remaining(self, rng: np.random.Generator, e: float) -> float:
        return self.value - e

    def sample_residual(self, rng: np.random.Generator) -> float:
        return self.value * float(rng.random())


class Exponential(_Dist):
    dist: Literal["exponential"] = "exponential"
    mean_: float = Field(gt=0, alias="mean")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @property
    def mean(self) -> float:
        return self.mean_

    @property
    def scv(self) -> float:
        return 1.0

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.exponential(self.mean_, n)

    def _remaining(self, rng: np.random.Generator, e: float) -> float:
        return float(rng.exponential(self.mean_))

    def sample_residual(self, rng: np.random.Generator) -> float:
        return float(rng.exponential(self.mean_))


class Uniform(_Dist):
    dist: Literal["uniform"] = "uniform"
    low: float = Field(ge=0)
    high: float

    @model_validator(mode="after")
    def _order(self) -> Uniform:
        if self.high < self.low:
            raise ValueError(f"high must be >= low ({self.low}), got {self.high}")
        return self

    @property
    def mean(self) -> float:
        return (self.low + self.high) / 2

    @property
    def scv(self) -> float:
        m = self.mean
        return ((self.high - self.low) ** 2 / 12) / m**2 if m > 0 else 0.0

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.uniform(self.low, self.high, n)

    def _remaining(self, rng: np.random.Generator, e: float) -> float:
        lo = max(self.low, e)
        if lo >= self.high:  # a point (low == high), or overdue: clamped to 0 by the caller
            return self.high - e
        return lo + (self.high - lo) * float(rng.random()) - e


class Triangular(_Dist):
    dist: Literal["triangular"] = "triangular"
    low: float = Field(ge=0)
    mode: float
    high: float

    @model_validator(mode="after")
    def _order(self) -> Triangular:
        if not (self.low <= self.mode <= self.high) or self.low == self.high:
            raise ValueError(
                f"need low <= mode <= high and low < high, got {self.low}, {self.mode}, {self.high}"
            )
        return self

    @property
    def mean(self) -> float:
        return (self.low + self.mode + self.high) / 3

    @property
    def scv(self) -> float:
        a, c, b = self.low, self.mode, self.high
        var = (a * a + b * b + c * c - a * b - a * c - b * c) / 18
        return var / self.mean**2 if self.mean > 0 else 0.0

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.triangular(self.low, self.mode, self.high, n)

    def _remaining(self, rng: np.random.Generator, e: float) -> float:
        a, c, b = self.low, self.mode, self.high
        if e >= b:
            return 0.0
        # work with the survival s = 1 - F: it stays precise near the upper end
        if e <= a:
            s_e = 1.0
        elif e <= c:
            s_e = 1.0 - (e - a) ** 2 / ((b - a) * (c - a))
        else:
            s_e = (b - e) ** 2 / ((b - a) * (b - c))
        s = s_e * (1.0 - float(rng.random()))  # U(0, S(e)], the conditional survival
        if s <= (b - c) / (b - a):
            x = b - math.sqrt(s * (b - a) * (b - c))
        else:
            x = a + math.sqrt((1.0 - s) * (b - a) * (c - a))
        return x - e


class TruncatedNormal(_Dist):
    """Normal(mu, sigma) truncated to [low, high] (default: non-negative), by rejection."""

    dist: Literal["normal"] = "normal"
    mu: float
    sigma: float = Field(ge=0)
    low: float = Field(default=0.0, ge=0)
    high: float = math.inf

    @model_validator(mode="after")
    def _check(self) -> TruncatedNormal:
        if self.high <= self.low:
            raise ValueError(f"high must be > low ({self.low}), got {self.high}")
        if self.sigma > 0 and (self.high - self.mu) / self.sigma < -6:
            raise ValueError("the window [low, high] lies more than 6 sigma below mu")
        if self.sigma > 0 and (self.low - self.mu) / self.sigma > 6:
            raise ValueError("the window [low, high] lies more than 6 sigma above mu")
        return self

    def _moments(self) -> tuple[float, float]:
        if self.sigma == 0:
            return min(max(self.mu, self.low), self.high), 0.0
        a = (self.low - self.mu) / self.sigma
        b = (self.high - self.mu) / self.sigma

        def phi(x: float) -> float:
            return 0.0 if math.isinf(x) else math.exp(-x * x / 2) / math.sqrt(2 * math.pi)

        def cdf(x: float) -> float:
            return 0.5 * (1 + math.erf(x / math.sqrt(2)))

        z = cdf(b) - cdf(a)
        pa, pb = phi(a), phi(b)
        ta = 0.0 if math.isinf(a) else a * pa
        tb = 0.0 if math.isinf(b) else b * pb
        mean = self.mu + self.sigma * (pa - pb) / z
        var = self.sigma**2 * (1 + (ta - tb) / z - ((pa - pb) / z) ** 2)
        return mean, var

    @property
    def mean(self) -> float:
        return self._moments()[0]

    @property
    def scv(self) -> float:
        m, v = self._moments()
        return v / m**2 if m > 0 else 0.0

    def _remaining(self, rng: np.random.Generator, e: float) -> float:
        lo = max(self.low, e)
        if self.sigma == 0 or lo >= self.high:
            return self._moments()[0] - e if self.sigma == 0 else 0.0
        z = _normal_between(rng, (lo - self.mu) / self.sigma, (self.high - self.mu) / self.sigma)
        return self.mu + self.sigma * z - e

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.sigma == 0:
            return np.full(n, self._moments()[0])
        out = rng.normal(self.mu, self.sigma, n)
        bad = (out < self.low) | (out > self.high)
        while bad.any():
            out[bad] = rng.normal(self.mu, self.sigma, int(bad.sum()))
            bad = (out < self.low) | (out > self.high)
        return out


class Lognormal(_Dist):
    """Lognormal given by the mean and standard deviation of the time itself (not of its log)."""

    dist: Literal["lognormal"] = "lognormal"
    mean_: float = Field(gt=0, alias="mean")
    std: float = Field(ge=0)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @property
    def mean(self) -> float:
        return self.mean_

    @property
    def scv(self) -> float:
        return (self.std / self.mean_) ** 2

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        s2 = math.log1p(self.scv)
        return rng.lognormal(math.log(self.mean_) - s2 / 2, math.sqrt(s2), n)

    def _remaining(self, rng: np.random.Generator, e: float) -> float:
        if self.std == 0:
            return self.mean_ - e
        s2 = math.log1p(self.scv)
        mu, sigma = math.log(self.mean_) - s2 / 2, math.sqrt(s2)
        a = -math.inf if e <= 0 else (math.log(e) - mu) / sigma
        return math.exp(mu + sigma * _normal_between(rng, a, math.inf)) - e


class Gamma(_Dist):
    dist: Literal["gamma"] = "gamma"
    shape: float = Field(gt=0)
    scale: float = Field(gt=0)

    @property
    def mean(self) -> float:
        return self.shape * self.scale

    @property
    def scv(self) -> float:
        return 1.0 / self.shape

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.gamma(self.shape, self.scale, n)

    def _tail_remaining(self, rng: np.random.Generator, e: float) -> float:
        # Y = X - e has density ∝ (1 + y/e)^(k-1) exp(-y/θ); for k >= 1 it is below
        # exp(-y (1/θ - (k-1)/e)), an exponential envelope once e is past the mode (k-1)θ
        k, theta = self.shape, self.scale
        rate = 1.0 / theta - max(k - 1.0, 0.0) / e if e > 0 else 1.0 / theta
        if rate > 0:
            for _ in range(_ENVELOPE_TRIES):
                y = float(rng.exponential(1.0 / rate))
                accept = (1.0 + y / e) ** (k - 1.0) * math.exp(-max(k - 1.0, 0.0) * y / e)
                if float(rng.random()) < accept:
                    return y
        return float(rng.exponential(theta))


class Weibull(_Dist):
    dist: Literal["weibull"] = "weibull"
    shape: float = Field(gt=0)
    scale: float = Field(gt=0)

    @property
    def mean(self) -> float:
        return self.scale * math.gamma(1 + 1 / self.shape)

    @property
    def scv(self) -> float:
        g1 = math.gamma(1 + 1 / self.shape)
        g2 = math.gamma(1 + 2 / self.shape)
        return g2 / g1**2 - 1

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.scale * rng.weibull(self.shape, n)

    def _remaining(self, rng: np.random.Generator, e: float) -> float:
        # S(x) = exp(-(x/λ)^k): given X > e, (X/λ)^k = (e/λ)^k + Exp(1)
        k, lam = self.shape, self.scale
        return lam * ((e / lam) ** k + float(rng.exponential())) ** (1.0 / k) - e


class Empirical(_Dist):
    """Resample (with replacement) from observed times, e.g. an MES export."""

    dist: Literal["empirical"] = "empirical"
    samples: tuple[float, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _nonneg(self) -> Empirical:
        neg = [s for s in self.samples if s < 0]
        if neg:
            raise ValueError(f"samples must be >= 0, got {neg[0]}")
        return self

    @property
    def mean(self) -> float:
        return float(np.mean(self.samples))

    @property
    def scv(self) -> float:
        m = self.mean
        return float(np.var(self.samples)) / m**2 if m > 0 else 0.0

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.choice(np.asarray(self.samples, dtype=float), n)

    def _remaining(self, rng: np.random.Generator, e: float) -> float:
        above = [x for x in self.samples if x > e]
        return above[int(rng.integers(len(above)))] - e if above else 0.0


def _check_elapsed(elapsed: float) -> float:
    e = float(elapsed)
    if not e >= 0 or math.isinf(e):
        raise ValueError(f"elapsed: must be a finite time >= 0, got {elapsed!r}")
    return e


def _by_rejection(dist: _Dist, rng: np.random.Generator, e: float) -> float:
    """``X - e | X > e`` by plain rejection, falling back to ``dist._tail_remaining``."""
    for _ in range(_REJECT_BLOCKS):
        x = dist.draw(rng, _BLOCK)
        above = x[x > e]
        if above.size:
            return float(above[0]) - e
    return dist._tail_remaining(rng, e)


def _normal_between(rng: np.random.Generator, a: float, b: float) -> float:
    """A standard normal conditioned on ``a < Z <= b``, by inversion on the lower-tail side."""
    flip = a > 0  # then invert -Z on (-b, -a]: small probabilities keep their precision
    lo, hi = (-b, -a) if flip else (a, b)
    p_lo = 0.0 if math.isinf(lo) else 0.5 * math.erfc(-lo / math.sqrt(2))
    p_hi = 1.0 if math.isinf(hi) else 0.5 * math.erfc(-hi / math.sqrt(2))
    if p_hi <= p_lo:  # beyond ~37 sigma the CDF underflows: the exponential tail limit
        if flip:
            return min(a + float(rng.exponential()) / a, b)
        return max(b - float(rng.exponential()) / max(-b, 1.0), a)
    u = p_lo + (p_hi - p_lo) * float(rng.random())
    z = _STD_NORMAL.inv_cdf(min(max(u, 1e-300), 1.0 - 1e-16))
    z = min(max(z, lo), hi)
    return -z if flip else z


Distribution = Annotated[
    Deterministic
    | Exponential
    | Uniform
    | Triangular
    | TruncatedNormal
    | Lognormal
    | Gamma
    | Weibull
    | Empirical,
    Field(discriminator="dist"),
]

DIST_NAMES = (
    "deterministic",
    "exponential",
    "uniform",
    "triangular",
    "normal",
    "lognormal",
    "gamma",
    "weibull",
    "empirical",
)


def coerce_dist(value: Any) -> Any:
    """Let a bare number stand for a deterministic time (``time: 4`` == ``{dist:
    deterministic, value: 4}``)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return {"dist": "deterministic", "value": value}
    return value


class Sampler:
    """Draws from one distribution with one generator, a block at a time."""

    __slots__ = ("_buf", "_const", "_dist", "_i", "_rng")

    def __init__(self, dist: _Dist, rng: np.random.Generator) -> None:
        self._dist = dist
        self._rng = rng
        self._const: float | None = dist.value if isinstance(dist, Deterministic) else None
        self._buf: list[float] = []
        self._i = 0

    def __call__(self) -> float:
        if self._const is not None:
            return self._const
        i = self._i
        if i >= len(self._buf):
            self._buf = self._dist.draw(self._rng, _BLOCK).tolist()
            i = 0
        self._i = i + 1
        return self._buf[i]
