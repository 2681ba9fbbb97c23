"""The instances that ship with taktline: ft06, ft10, ft20, la01-la40 (data files) and
ta01-ta80 (regenerated from Taillard's seeds), each with its optimum or best known bounds.

>>> load_bundled("ft06").optimum
55
>>> [row.name for row in bundled_catalog()][:3]
['ft06', 'ft10', 'ft20']
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from taktline.envs.jobshop.instance import JobShopInstance
from taktline.envs.jobshop.io import load_instance, parse_jssp
from taktline.envs.jobshop.taillard import TAILLARD_NAMES, TAILLARD_TABLE, taillard_instance
from taktline.errors import SpecError

_DATA = "taktline.envs.jobshop.data"


@dataclass(frozen=True)
class CatalogEntry:
    """One bundled instance: its size and bounds (without building it)."""

    name: str
    n_jobs: int
    n_machines: int
    optimum: int | None
    lower_bound: int | None
    upper_bound: int | None
    source: str


@cache
def _bounds() -> dict[str, dict[str, Any]]:
    data: dict[str, dict[str, Any]] = json.loads(
        resources.files(_DATA).joinpath("bounds.json").read_text()
    )
    return data


def _file_names() -> list[str]:
    return list(_bounds())


def bundled_names() -> list[str]:
    """Every bundled instance name, data files first, then ta01..ta80."""
    return _file_names() + list(TAILLARD_NAMES)


def bundled_catalog() -> list[CatalogEntry]:
    """Sizes and bounds of every bundled instance."""
    rows = []
    for name, b in _bounds().items():
        header = resources.files(_DATA).joinpath(f"{name}.txt").read_text().split(maxsplit=2)
        rows.append(
            CatalogEntry(
                name,
                int(header[0]),
                int(header[1]),
                b["optimum"],
                b["lower_bound"],
                b["upper_bound"],
                b["reference"],
            )
        )
    for name, (n, m, _, _, lb, ub) in zip(TAILLARD_NAMES, TAILLARD_TABLE, strict=True):
        rows.append(
            CatalogEntry(name, n, m, lb if lb == ub else None, lb, ub, "Taillard 1993 (generated)")
        )
    return rows


@cache
def load_bundled(name: str) -> JobShopInstance:
    """A bundled instance by name (``ft06``, ``la17``, ``ta42``, case-insensitive)."""
    key = name.lower()
    if key in TAILLARD_NAMES:
        return taillard_instance(key)
    bounds = _bounds().get(key)
    if bounds is None:
        raise SpecError(
            f"unknown bundled instance {name!r}; choose ft06, ft10, ft20, la01..la40 or "
            "ta01..ta80 (`taktline instances` lists them), or give a file path"
        )
    text = resources.files(_DATA).joinpath(f"{key}.txt").read_text()
    inst = parse_jssp(text, name=key)
    return inst.with_bounds(bounds["optimum"], bounds["lower_bound"], bounds["upper_bound"])


def resolve_instance(name_or_path: str) -> JobShopInstance:
    """A bundled instance by name, or an instance file (see :func:`load_instance`)."""
    if name_or_path.lower() in bundled_names():
        return load_bundled(name_or_path)
    path = Path(name_or_path)
    if path.exists():
        return load_instance(path)
    raise SpecError(
        f"{name_or_path!r} is neither a bundled instance (ft06, la01..la40, ta01..ta80; see "
        "`taktline instances`) nor an existing file"
    )
