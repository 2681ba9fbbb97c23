"""Processing-time, arrival, failure and repair distributions.

A distribution is a frozen pydantic model tagged by ``dist`` (so specs read naturally:
``{dist: exponential, mean: 4.0}``; a bare number means deterministic). Each knows its mean and
squared coefficient of variation (used for load checks and queueing theory), and makes a
:class:`Sampler` that draws from a numpy ``Generator`` in blocks — drawing one number at a time
from numpy costs more than the whole event it feeds.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

_BLOCK = 2048


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
