"""The line-spec reference, generated from the pydantic schema (README embeds it; a test keeps
the two in sync)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from taktline.envs import distributions as d
from taktline.envs import spec as s

_SECTIONS: list[tuple[str, type[BaseModel]]] = [
    ("LineSpec (top level)", s.LineSpec),
    ("stations[]", s.Station),
    ("stations[].failures", s.Failures),
    ("stations[].setups", s.Setups),
    ("stations[].power", s.Power),
    ("products[]", s.Product),
    ("products[].routing[]", s.Step),
    ("arrivals (kind: poisson)", s.PoissonArrivals),
    ("arrivals (kind: renewal)", s.RenewalArrivals),
    ("arrivals (kind: orders)", s.OrderList),
    ("arrivals.orders[]", s.Order),
    ("arrivals (kind: closed)", s.ClosedLoop),
    ("costs", s.Costs),
]

_DISTS: list[type[BaseModel]] = [
    d.Deterministic,
    d.Exponential,
    d.Uniform,
    d.Triangular,
    d.TruncatedNormal,
    d.Lognormal,
    d.Gamma,
    d.Weibull,
    d.Empirical,
]


def _type_name(info: Any) -> str:
    import typing

    ann = info.annotation
    if typing.get_origin(ann) is typing.Literal:
        return " or ".join(f"`{a}`" for a in typing.get_args(ann))
    text = str(ann) if typing.get_args(ann) else getattr(ann, "__name__", str(ann))
    text = text.replace("typing.", "").replace("taktline.envs.spec.", "")
    if "Deterministic" in text:
        return "distribution"
    if "PoissonArrivals" in text:
        return "arrivals"
    for mod in ("taktline.envs.distributions.",):
        text = text.replace(mod, "")
    return text.replace("NoneType", "null").replace(" | ", " or ").replace("|", " or ")


def _default(info: Any) -> str:
    if info.is_required():
        return "required"
    if info.default_factory is not None:
        return "(see below)"
    return "`null`" if info.default is None else f"`{info.default!r}`"


def _constraints(info: Any) -> str:
    parts = []
    for m in info.metadata:
        for attr, op in (
            ("ge", ">="),
            ("gt", ">"),
            ("le", "<="),
            ("lt", "<"),
            ("min_length", "min length"),
        ):
            v = getattr(m, attr, None)
            if v is not None:
                parts.append(f"{op} {v}")
    return ", ".join(parts)


def spec_reference_markdown() -> str:
    """Markdown tables of every spec field: name, type, default, constraint, meaning."""
    out = []
    for title, model in _SECTIONS:
        out.append(f"#### `{title}`\n")
        out.append("| field | type | default | constraint | meaning |")
        out.append("|---|---|---|---|---|")
        for name, info in model.model_fields.items():
            key = info.alias or name
            if key == "kind":
                continue
            desc = (info.description or "").replace("|", "\\|")
            out.append(
                f"| `{key}` | {_type_name(info)} | {_default(info)} | {_constraints(info)} |"
                f" {desc} |"
            )
        out.append("")
    out.append("#### distributions (`dist:` tag; a bare number means deterministic)\n")
    out.append("| dist | parameters |")
    out.append("|---|---|")
    for model in _DISTS:
        fields = model.model_fields
        tag = fields["dist"].default
        params = ", ".join(f"`{info.alias or n}`" for n, info in fields.items() if n != "dist")
        out.append(f"| `{tag}` | {params} |")
    return "\n".join(out) + "\n"


def write_into(path: str) -> None:
    """Replace the reference between the README's markers."""
    from pathlib import Path

    start, end = "<!-- spec-reference:start -->", "<!-- spec-reference:end -->"
    p = Path(path)
    text = p.read_text()
    head, rest = text.split(start)
    _, tail = rest.split(end)
    p.write_text(f"{head}{start}\n{spec_reference_markdown()}{end}{tail}")


if __name__ == "__main__":
    import sys

    if len(sys.argv) == 3 and sys.argv[1] == "--write":
        write_into(sys.argv[2])
    else:
        print(spec_reference_markdown())
