"""The declarative line spec: stations, products and routings, arrivals, failures, setups,
energy and costs — validated with pydantic at load time, before any simulation.

Errors name the path, the value and the fix, e.g. ``stations[2].machines: must be >= 1, got 0``.
Unknown keys are errors. A spec that cannot run (a routing to a missing station, an open line
whose load is >= 1 with unbounded buffers) is rejected; a load close to 1 is a warning.

>>> spec = load_spec("serial5")
>>> [s.name for s in spec.stations]
['cut', 'drill', 'mill', 'deburr', 'inspect']
"""

from __future__ import annotations

import hashlib
import json
import math
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from taktline.envs.distributions import DIST_NAMES, Distribution, coerce_dist
from taktline.envs.files import load_data_file
from taktline.errors import SpecError

Dist = Annotated[Distribution, BeforeValidator(coerce_dist)]

HOURS_PER_UNIT = {"s": 1 / 3600, "min": 1 / 60, "h": 1.0}


class _Model(BaseModel):
    # NaN and infinity are never a rate, a cost or a time a person means to write
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Failures(_Model):
    """Machine breakdowns: time to failure and time to repair, per machine."""

    time_to_failure: Dist = Field(description="time between breakdowns")
    time_to_repair: Dist = Field(description="time to repair a breakdown")
    basis: Literal["busy", "calendar"] = Field(
        "calendar",
        description="count time to failure in calendar time or only while the machine is busy",
    )

    @property
    def availability(self) -> float:
        ttf, ttr = self.time_to_failure.mean, self.time_to_repair.mean
        return ttf / (ttf + ttr) if ttf + ttr > 0 else 1.0


class Setups(_Model):
    """Sequence-dependent setup times between product families at a station."""

    default: Dist = Field(
        default_factory=lambda: coerce_dist(0.0),
        description="setup time when the family changes and no matrix entry applies",
    )
    matrix: dict[str, dict[str, Dist]] = Field(
        default_factory=dict, description="matrix[from_family][to_family] = setup time"
    )
    first: bool = Field(False, description="whether the very first job on a machine needs one")


class Power(_Model):
    """Power draw of one machine in each state, in kW (blocked draws idle power)."""

    idle_kw: float = Field(0.0, ge=0)
    setup_kw: float = Field(0.0, ge=0)
    busy_kw: float = Field(0.0, ge=0)
    down_kw: float = Field(0.0, ge=0)


class Station(_Model):
    name: str = Field(min_length=1, description="unique station name")
    machines: int = Field(1, ge=1, description="identical parallel machines")
    buffer_capacity: int | None = Field(
        None, ge=0, description="jobs that may wait in the input buffer; null = unbounded"
    )
    failures: Failures | None = Field(None, description="breakdowns of each machine")
    setups: Setups | None = Field(None, description="changeovers between product families")
    power: Power = Field(default_factory=Power, description="power draw per machine state")


class Step(_Model):
    station: str = Field(description="name of a station in `stations`")
    processing_time: Dist = Field(description="processing time of this step")


class Product(_Model):
    name: str = Field(min_length=1, description="unique product name")
    family: str | None = Field(None, description="setup family; defaults to the product name")
    routing: list[Step] = Field(min_length=1, description="the ordered processing steps")
    revenue: float = Field(0.0, ge=0, description="revenue per finished unit")
    due_date_allowance: float | None = Field(
        None, ge=0, description="due date = arrival time + this allowance"
    )

    @property
    def family_name(self) -> str:
        return self.family or self.name

    @property
    def work(self) -> float:
        return sum(s.processing_time.mean for s in self.routing)


class Order(_Model):
    product: str = Field(description="name of a product in `products`")
    release_time: float = Field(0.0, ge=0, description="when the order arrives")
    due_date: float | None = Field(None, ge=0, description="absolute due date")
    quantity: int = Field(1, ge=1, description="units (each a job)")


class PoissonArrivals(_Model):
    kind: Literal["poisson"] = "poisson"
    rate: float = Field(gt=0, description="orders per time unit")
    mix: dict[str, float] | None = Field(None, description="product -> weight; default equal")


class RenewalArrivals(_Model):
    kind: Literal["renewal"] = "renewal"
    interarrival_time: Dist = Field(description="time between order arrivals")
    mix: dict[str, float] | None = Field(None, description="product -> weight; default equal")


class OrderList(_Model):
    kind: Literal["orders"] = "orders"
    orders: list[Order] = Field(min_length=1, description="the fixed order list")


class ClosedLoop(_Model):
    """A closed CONWIP loop: a new order enters the moment one leaves (infinite backlog)."""

    kind: Literal["closed"] = "closed"
    wip: int = Field(ge=1, description="orders in the loop (CONWIP cap)")
    mix: dict[str, float] | None = Field(None, description="product -> weight; default equal")


Arrivals = Annotated[
    PoissonArrivals | RenewalArrivals | OrderList | ClosedLoop, Field(discriminator="kind")
]


class Costs(_Model):
    wip_cost_per_job_time: float = Field(0.0, ge=0, description="holding cost per job per time")
    tardiness_cost_per_time: float = Field(0.0, ge=0)
    energy_price_per_kwh: float = Field(0.0, ge=0)
    setup_cost: float = Field(0.0, ge=0, description="cost per setup")


class LineSpec(_Model):
    """A production line or job shop. Times are in ``time_unit``."""

    name: str = Field(min_length=1, description="the line's name")
    description: str = Field("", description="free text shown by `taktline lines`")
    time_unit: Literal["s", "min", "h"] = Field("min", description="unit of every time")
    stations: list[Station] = Field(min_length=1, description="the stations (see below)")
    products: list[Product] = Field(min_length=1, description="products and their routings")
    arrivals: Arrivals = Field(description="how orders arrive: poisson, renewal, orders, closed")
    costs: Costs = Field(default_factory=Costs, description="cost rates for profit")
    horizon: float | None = Field(None, gt=0, description="default simulated time")
    warmup: float = Field(0.0, ge=0, description="default warm-up deleted from statistics")

    @model_validator(mode="after")
    def _references(self) -> LineSpec:
        problems: list[str] = []
        names = [s.name for s in self.stations]
        for dup in sorted({n for n in names if names.count(n) > 1}):
            problems.append(f"stations: name {dup!r} is used twice; station names must be unique")
        pnames = [p.name for p in self.products]
        for dup in sorted({n for n in pnames if pnames.count(n) > 1}):
            problems.append(f"products: name {dup!r} is used twice; product names must be unique")
        known = set(names)
        for i, p in enumerate(self.products):
            for j, step in enumerate(p.routing):
                if step.station not in known:
                    problems.append(
                        f"products[{i}].routing[{j}].station: unknown station {step.station!r};"
                        f" known stations: {', '.join(names)}"
                    )
        mix = getattr(self.arrivals, "mix", None)
        if mix:
            for k, w in mix.items():
                if k not in pnames:
                    problems.append(
                        f"arrivals.mix: unknown product {k!r}; known products: {', '.join(pnames)}"
                    )
                if w < 0:
                    problems.append(f"arrivals.mix.{k}: must be >= 0, got {w}")
            if sum(mix.values()) <= 0:
                problems.append("arrivals.mix: weights must sum to > 0")
        if isinstance(self.arrivals, OrderList):
            for i, o in enumerate(self.arrivals.orders):
                if o.product not in pnames:
                    problems.append(
                        f"arrivals.orders[{i}].product: unknown product {o.product!r};"
                        f" known products: {', '.join(pnames)}"
                    )
        if self.horizon is not None and self.warmup >= self.horizon:
            problems.append(
                f"warmup: must be < horizon ({self.horizon:g}), got {self.warmup:g}; the warm-up"
                " would delete every statistic. Shorten the warm-up or lengthen the horizon"
            )
        if problems:
            raise SpecError(problems)
        return self

    # ---- derived quantities -------------------------------------------------------------
    def station_index(self, name: str) -> int:
        return [s.name for s in self.stations].index(name)

    def product_shares(self) -> list[float]:
        """Share of each product in the arrival stream (for open and closed lines)."""
        mix = getattr(self.arrivals, "mix", None)
        if isinstance(self.arrivals, OrderList):
            counts = {p.name: 0.0 for p in self.products}
            for o in self.arrivals.orders:
                counts[o.product] += o.quantity
            tot = sum(counts.values())
            return [counts[p.name] / tot for p in self.products]
        if not mix:
            return [1.0 / len(self.products)] * len(self.products)
        tot = sum(mix.values())
        return [mix.get(p.name, 0.0) / tot for p in self.products]

    def arrival_rate(self) -> float | None:
        """Orders per time unit for open lines; ``None`` for order lists and closed loops."""
        if isinstance(self.arrivals, PoissonArrivals):
            return self.arrivals.rate
        if isinstance(self.arrivals, RenewalArrivals):
            return 1.0 / self.arrivals.interarrival_time.mean
        return None

    def station_loads(self) -> list[float]:
        """Expected work arriving per time unit per machine at each station, per unit of the
        arrival rate (multiply by the rate to get utilization), accounting for availability."""
        shares = self.product_shares()
        loads = [0.0] * len(self.stations)
        for share, prod in zip(shares, self.products, strict=True):
            for step in prod.routing:
                loads[self.station_index(step.station)] += share * step.processing_time.mean
        out = []
        for st, load in zip(self.stations, loads, strict=True):
            avail = st.failures.availability if st.failures else 1.0
            out.append(load / (st.machines * avail))
        return out

    def utilizations(self) -> list[float] | None:
        rate = self.arrival_rate()
        if rate is None:
            return None
        return [rate * x for x in self.station_loads()]

    def bottleneck_rate(self) -> float:
        """The line's capacity in orders per time unit (the bottleneck's), r_b."""
        loads = self.station_loads()
        return 1.0 / max(loads) if max(loads) > 0 else math.inf

    def raw_process_time(self) -> float:
        """T0: mean total processing time of an order, weighted by the product mix."""
        return sum(s * p.work for s, p in zip(self.product_shares(), self.products, strict=True))

    def warnings(self) -> list[str]:
        """Problems that do not stop a run but deserve a look (a line loaded close to 1)."""
        utils = self.utilizations() or []
        rate = self.arrival_rate() or 0.0
        out = []
        for i, (st, u) in enumerate(zip(self.stations, utils, strict=False)):
            if 0.95 <= u < 1.0:
                out.append(
                    f"stations[{i}] ({st.name}): utilization {u:.3f} is close to 1; queues will"
                    " be long and statistics slow to settle"
                )
            elif st.setups is not None and u < 0.95:
                worst = u + rate * st.setups.default.mean / st.machines
                if worst >= 0.95:
                    out.append(
                        f"stations[{i}] ({st.name}): utilization {u:.3f} before setups, {worst:.3f}"
                        " if every job needs one; the dispatching rule decides whether this"
                        " station keeps up (group families, e.g. --policy SAME)"
                    )
        return out

    def spec_hash(self) -> str:
        """Content hash of the normalized spec: policies record it to detect a changed line."""
        blob = json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _check_stability(spec: LineSpec) -> None:
    utils = spec.utilizations()
    if utils is None:
        return
    problems = []
    for i, (st, u) in enumerate(zip(spec.stations, utils, strict=True)):
        if u >= 1.0 and st.buffer_capacity is None:
            problems.append(
                f"stations[{i}] ({st.name}): utilization {u:.3f} >= 1 with an unbounded buffer;"
                f" the queue grows without limit. Add machines (now {st.machines}), lower"
                " arrivals.rate, or make the line closed (arrivals.kind: closed)"
            )
    if problems:
        raise SpecError(problems)


def _fmt_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in DIST_NAMES or part in ("poisson", "renewal", "orders", "closed"):
            continue  # the discriminator tag pydantic puts into the path
        elif str(part).startswith("function-"):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _fmt_error(err: Any) -> str:
    loc = _fmt_loc(tuple(err["loc"]))
    typ = err["type"]
    ctx = err.get("ctx") or {}
    val = err.get("input")
    if typ == "extra_forbidden":
        return f"{loc}: unknown key (value {val!r}); check the spelling against the spec reference"
    if typ == "missing":
        return f"{loc}: required field is missing"
    if typ in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        op = {
            "greater_than_equal": ">=",
            "greater_than": ">",
            "less_than_equal": "<=",
            "less_than": "<",
        }[typ]
        bound = next(iter(ctx.values()))
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)
        return f"{loc}: must be {op} {bound}, got {val!r}"
    if typ == "union_tag_invalid":
        return (
            f"{loc}: unknown {str(ctx.get('discriminator', 'kind')).strip(chr(39))}"
            f" {ctx.get('tag')!r};"
            f" choose one of {ctx.get('expected_tags')}"
        )
    if typ == "union_tag_not_found":
        return f"{loc}: needs {ctx.get('discriminator')} (e.g. dist: exponential) or a number"
    if typ == "finite_number":
        return f"{loc}: must be a finite number, got {val!r}"
    if typ == "too_short":
        return f"{loc}: must not be empty"
    if typ == "value_error" and isinstance(ctx.get("error"), SpecError):
        return str(ctx["error"])
    msg = err["msg"].removeprefix("Value error, ")
    return f"{loc}: {msg}, got {val!r}"


def parse_spec(data: dict[str, Any], source: str | None = None) -> LineSpec:
    """Validate a spec given as plain data; raise :class:`SpecError` listing every problem."""
    if not isinstance(data, dict):
        raise SpecError(
            f"(top level): expected a mapping of spec fields, got {type(data).__name__}", source
        )
    try:
        spec = LineSpec.model_validate(data)
    except ValidationError as exc:
        problems: list[str] = []
        for err in exc.errors():
            inner = (err.get("ctx") or {}).get("error")
            if isinstance(inner, SpecError):
                problems.extend(inner.problems)
            else:
                problems.append(_fmt_error(err))
        raise SpecError(problems, source) from None
    _check_stability(spec)
    return spec


def bundled_lines() -> dict[str, Path]:
    """Names and paths of the example lines shipped with taktline."""
    root = resources.files("taktline.envs.lines")
    out = {}
    for entry in root.iterdir():
        if entry.name.endswith(".yaml"):
            out[entry.name.removesuffix(".yaml")] = Path(str(entry))
    return dict(sorted(out.items()))


def load_spec(ref: str | Path) -> LineSpec:
    """Load a spec from a bundled line name or a YAML/JSON file path.

    Raises:
        SpecError: for a missing, unreadable, binary, oversize or malformed file (YAML alias
            bombs included, see :mod:`taktline.envs.files`) and for every problem of the spec.
    """
    lines = bundled_lines()
    path = lines.get(str(ref)) or Path(ref)
    if not path.exists():
        raise SpecError(
            f"no line called {str(ref)!r}: not a file and not a bundled line"
            f" (bundled: {', '.join(lines)})"
        )
    source = str(path) if str(ref) not in lines else str(ref)
    data = load_data_file(path, "line spec (YAML or JSON)")
    return parse_spec(data, source)
