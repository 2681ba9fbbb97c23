"""Terminal tables that fit: compact numbers (``40.7k``, ``±1.2k``) and columns that fold.

A number in a table is read, not parsed (``--json`` is for machines): three significant digits
and an SI suffix say as much as ``4.172e+04`` in a third of the width, so a table of KPIs under
four rules fits 80 columns. A wider terminal gets a wider table (rich measures it); a cell that
still does not fit wraps onto a second line rather than ending in ``…``.
"""

from __future__ import annotations

import math
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

_SUFFIXES = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def compact(value: float, digits: int = 3) -> str:
    """``value`` in at most ``digits`` significant digits, with k/M/G/T from a thousand up.

    >>> compact(40712.3), compact(-1258.0), compact(0.41131), compact(432), compact(0)
    ('40.7k', '-1.26k', '0.411', '432', '0')
    >>> compact(0.0001234), compact(float("nan")), compact(999.7)
    ('0.000123', 'nan', '1k')
    """
    if not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if value == 0:
        return "0"
    size = abs(value)
    for scale, suffix in _SUFFIXES:
        # round first, so 999.7 becomes 1k rather than 1e+03
        if float(f"{size:.{digits}g}") >= scale:
            return f"{float(f'{value / scale:.{digits}g}'):g}{suffix}"
    text = f"{float(f'{value:.{digits}g}'):.{digits + 3}f}".rstrip("0").rstrip(".")
    return text if size >= 1e-4 else f"{value:.{digits}g}"


def estimate_cell(mean: float, half_width: float | None) -> str:
    """A mean and its 95% CI half-width as ``40.7k ±1.2k`` (the mean alone when unknown).

    >>> estimate_cell(41720.5, 17001.2), estimate_cell(0.0, 0.0), estimate_cell(3.5, None)
    ('41.7k ±17k', '0 ±0', '3.5')
    """
    if half_width is None or not math.isfinite(half_width):
        return compact(mean)
    return f"{compact(mean)} ±{compact(half_width, 2)}"


def fitting_table(title: str | None = None, **kwargs: Any) -> Table:
    """A rich table drawn light (no heavy box, no padding between rows) for narrow terminals."""
    kwargs.setdefault("box", box.SIMPLE_HEAD)
    kwargs.setdefault("pad_edge", False)
    return Table(title=title, **kwargs)


def terminal_console() -> Console:
    """A console measured now: the terminal's width (``COLUMNS`` when set), 80 when piped.

    A module-level ``Console()`` fixes its width when the CLI is imported; tables printed
    through this one follow the terminal they are printed on.
    """
    return Console()
