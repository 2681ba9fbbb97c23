"""Pictures of the envs: the line (buffer levels, machine states) and the Gantt chart so far.

``*_ansi`` return text; ``*_rgb`` return an ``(H, W, 3)`` uint8 array drawn with matplotlib's
Agg canvas (no pyplot, so no global figure state and no display needed). Line pictures are
drawn from a :class:`~taktline.envs.snapshot.LineSnapshot`, so a served snapshot is drawn the same
way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from taktline.envs.snapshot import LineSnapshot, MachineState, as_line_snapshot

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from taktline.envs.jobshop.schedule import ScheduledOperation

STATE_COLORS = {
    MachineState.IDLE: "#d9d9d9",
    MachineState.SETUP: "#f0b429",
    MachineState.BUSY: "#2e8540",
    MachineState.BLOCKED: "#8e44ad",
    MachineState.DOWN: "#c0392b",
}
_STATE_CHAR = {
    MachineState.IDLE: ".",
    MachineState.SETUP: "s",
    MachineState.BUSY: "#",
    MachineState.BLOCKED: "b",
    MachineState.DOWN: "X",
}


def _to_rgb(fig: Figure) -> np.ndarray:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[:, :, :3].copy()


def render_line_ansi(snapshot: LineSnapshot | Mapping[str, Any]) -> str:
    """The line as text: per station its queue and one character per machine state.

    >>> from taktline.envs.twin import Twin
    >>> from taktline.envs.spec import load_spec
    >>> twin = Twin(load_spec("serial5"), seed=1)
    >>> _ = twin.run_until_decision()
    >>> print(render_line_ansi(twin.snapshot()).splitlines()[1])
      cut          queue   2/inf machines [.]
    """
    snap = as_line_snapshot(snapshot)
    head = f"{snap.line}  t={snap.time:.2f}  wip={snap.wip}  pool={len(snap.pool)}"
    d = snap.decision
    if d is not None and d.kind == "dispatch":
        head += f"  decide: {d.machine}"
    elif d is not None:
        head += "  decide: release"
    rows = [head]
    for s in snap.stations:
        cap = s.buffer_capacity
        q = f"{len(s.queue):3d}/{'inf' if cap is None else cap}"
        marks = "".join(_STATE_CHAR[m.state] for m in s.machines)
        rows.append(f"  {s.name:<12} queue {q:<7} machines [{marks}]")
    return "\n".join(rows)


def render_line_rgb(snapshot: LineSnapshot | Mapping[str, Any]) -> np.ndarray:
    """The line as an image: one column per station, queue bar over machine boxes."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    snap = as_line_snapshot(snapshot)
    stations = snap.stations
    n = len(stations)
    fig = Figure(figsize=(max(4.0, 1.3 * n), 3.2), dpi=80)
    ax = fig.add_axes((0.02, 0.02, 0.96, 0.86))
    ax.set_xlim(0, n)
    ax.set_ylim(0, 10)
    ax.axis("off")
    fig.suptitle(
        f"{snap.line}  t={snap.time:.1f}  WIP {snap.wip}  pool {len(snap.pool)}", fontsize=9
    )
    for i, s in enumerate(stations):
        cap = s.buffer_capacity or max(len(s.queue), 4)
        level = min(len(s.queue) / cap, 1.0)
        ax.add_patch(Rectangle((i + 0.3, 5.0), 0.4, 4.0, fill=False, lw=1))
        ax.add_patch(Rectangle((i + 0.3, 5.0), 0.4, 4.0 * level, color="#3b6ea5"))
        k = len(s.machines)
        for j, m in enumerate(s.machines):
            h = 3.6 / max(k, 1)
            ax.add_patch(
                Rectangle((i + 0.15, 0.5 + j * h), 0.7, 0.9 * h, color=STATE_COLORS[m.state])
            )
        ax.text(i + 0.5, 4.4, s.name[:10], ha="center", fontsize=7)
    return _to_rgb(fig)


def render_gantt_ansi(
    schedule: Sequence[ScheduledOperation], n_machines: int, title: str, width: int = 72
) -> str:
    """The schedule so far as text, one row per machine (job numbers mod 36 as characters).

    >>> from taktline.envs.jobshop.schedule import ScheduledOperation as Op
    >>> print(render_gantt_ansi([Op(0, 0, 0, 0, 2), Op(1, 0, 1, 0, 4)], 2, "t", width=8))
    t  makespan 4
      M0  |0000    |
      M1  |11111111|
    """
    makespan = max((op.end for op in schedule), default=0)
    rows = [f"{title}  makespan {makespan}"]
    scale = width / max(makespan, 1)
    lines = [[" "] * width for _ in range(n_machines)]
    for op in schedule:
        a, b = int(op.start * scale), max(int(op.end * scale), int(op.start * scale) + 1)
        ch = "0123456789abcdefghijklmnopqrstuvwxyz"[op.job % 36]
        for x in range(a, min(b, width)):
            lines[op.machine][x] = ch
    for m, row in enumerate(lines):
        rows.append(f"  M{m:<3}|{''.join(row)}|")
    return "\n".join(rows)


def render_gantt_rgb(
    schedule: Sequence[ScheduledOperation], n_machines: int, title: str
) -> np.ndarray:
    """The schedule so far as a Gantt chart image (one row per machine, colour per job)."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.0, 1.0 + 0.25 * n_machines), dpi=80)
    ax = fig.add_subplot(1, 1, 1)
    cmap = colormaps["tab20"]
    makespan = max((op.end for op in schedule), default=0)
    for op in schedule:
        ax.barh(
            op.machine,
            op.end - op.start,
            left=op.start,
            height=0.8,
            color=cmap(op.job % 20),
            edgecolor="black",
            linewidth=0.3,
        )
    ax.set_ylim(-0.6, n_machines - 0.4)
    ax.set_xlim(0, max(makespan, 1))
    ax.invert_yaxis()
    ax.set_xlabel("time")
    ax.set_ylabel("machine")
    ax.set_title(f"{title}: makespan {makespan}", fontsize=9)
    fig.tight_layout()
    return _to_rgb(fig)
