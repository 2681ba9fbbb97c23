"""The training progress bar: steps, elapsed and remaining time, the latest evaluation KPI."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class TrainProgress:
    """A rich progress bar over environment steps (a no-op when ``enabled`` is False).

    Args:
        total: Steps of the budget.
        start: Steps already done (a resumed run).
        console: Where to draw (stderr by default).
        enabled: Draw at all.
    """

    def __init__(self, total: int, start: int, console: Console, enabled: bool = True) -> None:
        self._progress: Progress | None = None
        if not enabled:
            return
        self._progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("steps"),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[kpi]}"),
            console=console,
            transient=False,
        )
        self._task = self._progress.add_task("train", total=total, completed=start, kpi="")
        self._progress.start()

    def update(self, steps: int) -> None:
        """Steps done so far."""
        if self._progress is not None:
            self._progress.update(self._task, completed=steps)

    def kpi(self, text: str) -> None:
        """The latest evaluation result, shown at the end of the bar."""
        if self._progress is not None:
            self._progress.update(self._task, kpi=text)

    def close(self) -> None:
        """Stop drawing (idempotent)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
