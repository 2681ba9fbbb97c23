"""The one JSON writer behind every command's ``--json``: always valid JSON.

``json.dumps`` writes ``NaN`` and ``Infinity`` by default, which no strict JSON parser accepts
(a confidence interval from one replication is infinite). Here every non-finite float becomes
``null``, numpy scalars and arrays become plain numbers and lists, paths become strings.

>>> print(to_json({"mean": 2.0, "ci95": float("inf"), "n": 1}, indent=None))
{"mean": 2.0, "ci95": null, "n": 1}
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import PurePath
from typing import Any

import typer


def finite(value: Any) -> Any:
    """``value`` with every non-finite float (in any dict, list or tuple) replaced by ``None``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def _default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return finite(obj.tolist())
    if isinstance(obj, PurePath):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return finite(dataclasses.asdict(obj))
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def to_json(data: Any, indent: int | None = 2) -> str:
    """Strict JSON text of ``data`` (``allow_nan=False``: a missed non-finite is a bug, loudly)."""
    return json.dumps(finite(data), indent=indent, allow_nan=False, default=_default)


def echo_json(data: Any) -> None:
    """Print ``data`` as strict JSON on stdout (what ``--json`` prints)."""
    typer.echo(to_json(data))
