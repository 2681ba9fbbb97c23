"""Gantt charts of schedules (matplotlib, Agg backend; PNG, SVG or PDF by file suffix).

Machines are rows; bars are coloured by ``family`` when the bars name one (a line twin's, see
:func:`taktline.envs.eventlog.gantt_bars`), by job otherwise; setups are hatched bars in the
colour they prepare, breakdowns (``down``) are grey cross-hatched bars. The legend keys the
families and the states (processing, setup, down), never the jobs: a line runs hundreds of them
(job numbers are written on the bars wide enough to hold them). Any list of objects (or
mappings) with ``machine``, ``job``, ``start``, ``end``, ``kind`` (and optionally ``family``)
fields can be drawn, so the line twin passes its own records.

>>> import tempfile, pathlib
>>> bars = [GanttBar("M1", 0, 0, 3), GanttBar("M1", None, 3, 5, "down"),
...         GanttBar("M2", 1, 1, 2, "setup"), GanttBar("M2", 1, 2, 6)]
>>> out = plot_gantt(bars, pathlib.Path(tempfile.mkdtemp()) / "g.svg", title="demo")
>>> out.suffix, out.stat().st_size > 0
('.svg', True)
"""

from __future__ import annotations

import colorsys
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from taktline.envs.jobshop.schedule import ScheduledOperation
from taktline.errors import SpecError

BarKind = Literal["process", "setup", "down"]
_KINDS = ("process", "setup", "down")


@dataclass(frozen=True)
class GanttBar:
    """One bar: ``machine`` (row label) is busy from ``start`` to ``end``."""

    machine: str
    job: int | None
    start: float
    end: float
    kind: BarKind = "process"
    family: str | None = None


def bars_from_schedule(schedule: Iterable[ScheduledOperation]) -> list[GanttBar]:
    """Gantt bars of a job-shop schedule (rows ``M0``, ``M1``, ...)."""
    return [GanttBar(f"M{s.machine}", s.job, s.start, s.end) for s in schedule]


def job_colour(job: int) -> tuple[float, float, float]:
    """A stable colour per job: ``tab20`` for the first 20, then golden-ratio hues."""
    if job < 20:
        import matplotlib

        rgba = matplotlib.colormaps["tab20"](job)
        return (rgba[0], rgba[1], rgba[2])
    hue = (job * 0.618033988749895) % 1.0
    return colorsys.hsv_to_rgb(hue, 0.55, 0.9)


def _natural(label: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", label)]


def _as_bar(item: Any, index: int) -> GanttBar:
    def get(key: str, default: Any = None) -> Any:
        if isinstance(item, Mapping):
            return item.get(key, default)
        return getattr(item, key, default)

    kind = get("kind", "process") or "process"
    if kind not in _KINDS:
        raise SpecError(f"bars[{index}].kind: expected one of {', '.join(_KINDS)}, got {kind!r}")
    try:
        start, end = float(get("start")), float(get("end"))
    except (TypeError, ValueError):
        raise SpecError(f"bars[{index}]: start and end must be numbers") from None
    if end < start:
        raise SpecError(f"bars[{index}]: ends ({end}) before it starts ({start})")
    job = get("job")
    family = get("family")
    return GanttBar(
        str(get("machine")),
        None if job is None or int(job) < 0 else int(job),
        start,
        end,
        kind,  # type: ignore[arg-type]
        None if family is None else str(family),
    )


def legend_labels(bars: Sequence[Any]) -> list[str]:
    """The legend :func:`plot_gantt` draws for ``bars``: families and states, never jobs.

    >>> legend_labels([GanttBar("M1", 0, 0, 3, family="suv"), GanttBar("M1", None, 3, 5, "down")])
    ['family suv', 'down']
    >>> legend_labels([GanttBar("M1", 7, 0, 3), GanttBar("M2", 8, 0, 1, "setup")])
    ['processing (job)', 'setup']
    """
    return _legend([_as_bar(b, i) for i, b in enumerate(bars)])


def _legend(items: Sequence[GanttBar]) -> list[str]:
    # a line runs hundreds of jobs: a legend of them would neither fit nor help
    families = sorted({b.family for b in items if b.family is not None})
    labels = [f"family {f}" for f in families]
    if not families and any(b.kind == "process" for b in items):
        labels.append("processing (job)")
    labels += [k for k in ("setup", "down") if any(b.kind == k for b in items)]
    return labels


def plot_gantt(
    bars: Sequence[Any],
    path: str | Path,
    title: str | None = None,
    machine_order: Sequence[str] | None = None,
    time_unit: str = "",
) -> Path:
    """Draw ``bars`` and save the chart.

    Args:
        bars: :class:`GanttBar`-like objects or mappings (``machine``, ``job``, ``start``,
            ``end``, ``kind`` in ``process``/``setup``/``down``).
        path: Output file; the suffix picks the format (``.png``, ``.svg``, ``.pdf``).
        title: Chart title (the makespan is appended).
        machine_order: Row order top to bottom (default: natural sort of the labels).
        time_unit: Label of the time axis unit, e.g. ``"s"``.

    Returns:
        The written path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    items = [_as_bar(b, i) for i, b in enumerate(bars)]
    rows = (
        list(machine_order) if machine_order else sorted({b.machine for b in items}, key=_natural)
    )
    row_of = {label: i for i, label in enumerate(rows)}
    jobs = sorted({b.job for b in items if b.job is not None})
    families = sorted({b.family for b in items if b.family is not None})
    family_index = {f: i for i, f in enumerate(families)}

    def colour_of(b: GanttBar) -> tuple[float, float, float]:
        if b.family is not None:
            return job_colour(family_index[b.family])
        return job_colour(b.job) if b.job is not None else (0.6, 0.6, 0.6)

    makespan = max((b.end for b in items), default=0.0)

    fig, ax = plt.subplots(
        figsize=(max(8.0, min(24.0, 0.6 * len(jobs) + 8)), 0.45 * len(rows) + 1.6)
    )
    for b in items:
        y = row_of.get(b.machine)
        if y is None:
            raise SpecError(f"bar on machine {b.machine!r} is not in machine_order {rows}")
        colour = colour_of(b)
        if b.kind == "process":
            style: dict[str, Any] = {"color": colour, "edgecolor": "black", "linewidth": 0.4}
        elif b.kind == "setup":
            style = {"color": "white", "edgecolor": colour, "hatch": "////", "linewidth": 0.8}
        else:
            style = {"color": (0.85, 0.85, 0.85), "edgecolor": (0.3, 0.3, 0.3), "hatch": "xx"}
        ax.barh(y, b.end - b.start, left=b.start, height=0.8, **style)
        wide = makespan > 0 and (b.end - b.start) / makespan > 0.025
        if b.kind == "process" and b.job is not None and wide:
            ax.text((b.start + b.end) / 2, y, str(b.job), ha="center", va="center", fontsize=7)
    ax.set_yticks(range(len(rows)), rows)
    ax.invert_yaxis()
    ax.set_xlim(0, makespan * 1.01 if makespan else 1)
    ax.set_xlabel(f"time ({time_unit})" if time_unit else "time")
    ax.set_title(f"{title + ' - ' if title else ''}makespan {makespan:g}")
    handles = []
    for label in _legend(items):
        if label.startswith("family "):
            colour = job_colour(family_index[label[7:]])
            handles.append(Patch(facecolor=colour, edgecolor="black", label=label))
        elif label == "setup":
            handles.append(Patch(facecolor="white", edgecolor="black", hatch="////", label=label))
        elif label == "down":
            handles.append(Patch(facecolor=(0.85,) * 3, edgecolor="black", hatch="xx", label=label))
        else:
            handles.append(Patch(facecolor=job_colour(0), edgecolor="black", label=label))
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
