"""Reading plant event logs into one canonical table, with every defect an error or a repair.

Three sources become the same table (columns ``time`` in the spec's time unit from the log's
start, ``event``, ``job``, ``product``, ``station``, ``machine``; sorted by time):

* taktline's own event log (``taktline simulate LINE --events ev.csv|.parquet``);
* an MES-style table (CSV or Parquet) whose columns a :class:`ColumnMapping` names (on the
  command line ``--map time=ts,job=order_id,...`` or in a small YAML file), with timestamps as
  numbers or as datetimes (tz-aware; naive ones are read as UTC, with a warning);
* process-mining logs via pm4py (optional extra ``calibration``): XES (``case:concept:name`` the
  job, ``concept:name`` the station, ``lifecycle:transition`` the event, ``org:resource`` the
  machine, ``case:product`` the product) and OCEL 2.0 (events of the object type ``job``).

Defects are never dropped silently: a log that cannot be read raises :class:`LogError` naming
the column, the value and the fix; one that can be read with a repair (rows out of time order,
exact duplicate rows, a finish without its start...) is repaired and the repair counted in
:attr:`EventLog.repairs`, which the fidelity report prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from taktline.errors import SpecError

EVENTS = ("arrival", "release", "setup", "start", "finish", "failure", "repair", "departure")
"""The event types of the canonical log (those the twin emits)."""
COLUMNS = ("time", "event", "job", "product", "station", "machine")
"""The columns of the canonical log."""
TIME_FACTOR_S = {"s": 1.0, "min": 60.0, "h": 3600.0}
"""Seconds per time unit (datetimes are converted into the spec's unit)."""
XES_MAPPING = {
    "time": "time:timestamp",
    "event": "lifecycle:transition",
    "job": "case:concept:name",
    "product": "case:product",
    "station": "concept:name",
    "machine": "org:resource",
}
"""Which XES attribute carries which canonical column."""
XES_EVENTS = {"complete": "finish"}
"""XES lifecycle transitions that differ from the canonical event names."""
NO_JOB = "-"
"""The case id of an XES event that belongs to no job (a breakdown of an idle machine)."""


class LogError(SpecError):
    """An event log that cannot be read as given (the message names the column and the fix)."""


class ColumnMapping(BaseModel):
    """Which column of an MES table holds which field, and how its event names read.

    Attributes are the canonical column names; each value is the table's column. ``events``
    maps the table's event names to the canonical ones (``{"BEGIN": "start"}``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    time: str = Field("time", description="timestamp: a number or a datetime")
    event: str = Field("event", description="event type")
    job: str = Field("job", description="job / order id")
    product: str | None = Field("product", description="product (optional column)")
    station: str = Field("station", description="station / work centre")
    machine: str = Field("machine", description="machine / resource")
    due_date: str | None = Field(
        None, description="the order's due date (optional; a number or a datetime like time)"
    )
    events: dict[str, str] = Field(default_factory=dict, description="table name -> event")


@dataclass
class EventLog:
    """A plant event log in canonical form.

    Attributes:
        frame: the canonical table (see the module docstring), sorted by time.
        source: where it was read from.
        repairs: what was repaired, each with its count (``{"rows out of time order": 3}``).
        warnings: what the report should say about the data (naive datetimes...).
        flags: defects kept in the data, each with its count (impossible overlaps...).
        time_origin: the datetime that ``time == 0`` stands for, when the log had datetimes.
    """

    frame: Any
    source: str = "log"
    repairs: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    flags: dict[str, int] = field(default_factory=dict)
    time_origin: str | None = None

    def repair(self, what: str, count: int) -> None:
        """Count a repair (nothing when ``count`` is 0)."""
        if count:
            self.repairs[what] = self.repairs.get(what, 0) + int(count)

    def flag(self, what: str, count: int) -> None:
        """Count a defect kept in the data: a warning ``what: count`` (nothing when 0)."""
        if count:
            self.flags[what] = self.flags.get(what, 0) + int(count)
            self.warnings.append(f"{what}: {int(count)}")


def parse_mapping(text: str | None) -> ColumnMapping | None:
    """A :class:`ColumnMapping` from ``key=column,...`` or from a YAML file's path."""
    if text is None:
        return None
    import yaml

    path = Path(text)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise LogError(f"--map: no such file {text!r}; give a YAML file or key=column pairs")
        data = yaml.safe_load(path.read_text()) or {}
    else:
        data = {}
        for part in text.split(","):
            key, sep, value = part.partition("=")
            if not sep or not key.strip() or not value.strip():
                raise LogError(
                    f"--map: expected key=column pairs separated by commas, got {part!r};"
                    " e.g. --map time=ts,job=order_id,event=type"
                )
            data[key.strip()] = value.strip()
    try:
        return ColumnMapping.model_validate(data)
    except Exception as exc:
        err = exc.errors()[0] if hasattr(exc, "errors") else {"loc": (), "msg": str(exc)}
        where = ".".join(str(x) for x in err["loc"]) or "mapping"
        fields = ", ".join(ColumnMapping.model_fields)
        raise LogError(f"--map {where}: {err['msg']}; the keys are {fields}") from None


def read_log(path: Path, mapping: ColumnMapping | None = None, time_unit: str = "min") -> EventLog:
    """Read an event log (.csv, .parquet, .xes, .xes.gz, .jsonocel/.xmlocel/.sqlite for OCEL).

    Raises:
        LogError: when the file is missing, of an unknown type, or cannot be made canonical.
    """
    import pandas as pd

    if not path.is_file():
        raise LogError(f"EVENTS: no such file {str(path)!r}; give a CSV, Parquet, XES or OCEL log")
    name = path.name.lower()
    if name.endswith(".csv"):
        raw = pd.read_csv(path)
    elif name.endswith(".parquet"):
        raw = pd.read_parquet(path)
    elif name.endswith((".xes", ".xes.gz")):
        raw, mapping = _read_xes(path), ColumnMapping(**XES_MAPPING, events=XES_EVENTS)
    elif name.endswith((".jsonocel", ".xmlocel", ".sqlite", ".json", ".xml")):
        raw, mapping = _read_ocel(path), ColumnMapping(events=XES_EVENTS)
    else:
        raise LogError(
            f"EVENTS: unknown file type {path.suffix!r}; use .csv, .parquet, .xes or OCEL 2.0"
        )
    return canonical(raw, mapping or ColumnMapping(), time_unit, source=str(path))


def canonical(
    raw: Any, mapping: ColumnMapping, time_unit: str = "min", source: str = "log"
) -> EventLog:
    """The canonical :class:`EventLog` of a raw table read with ``mapping``.

    Raises:
        LogError: for a missing column, an unparsable time, an unknown event, a job missing
            where the event needs one, or an empty log.
    """
    import pandas as pd

    if time_unit not in TIME_FACTOR_S:
        raise LogError(f"--time-unit: must be one of s, min, h, got {time_unit!r}")
    log = EventLog(frame=None, source=source)
    if len(raw) == 0:
        raise LogError(f"{source}: the log has no rows; give a log with events")
    cols = {k: getattr(mapping, k) for k in COLUMNS}
    missing = [f"{k} (column {v!r})" for k, v in cols.items() if v and v not in raw.columns]
    if mapping.product and mapping.product not in raw.columns:
        missing = [m for m in missing if not m.startswith("product")]
        cols["product"] = None
    if missing:
        raise LogError(
            f"{source}: missing column {', '.join(missing)}; the table has"
            f" {', '.join(map(str, raw.columns))}; map them with --map time=...,job=..."
        )
    frame = pd.DataFrame(
        {k: (raw[v].to_numpy() if v else None) for k, v in cols.items() if k != "time"}
    )
    frame.insert(0, "time", _times(raw[cols["time"]], mapping.time, time_unit, log))
    ev = frame["event"].astype(str).str.strip()
    if mapping.events:
        ev = ev.replace(mapping.events)
    ev = ev.str.lower()
    bad = ~ev.isin(EVENTS)
    if bad.any():
        first = ev[bad].iloc[0]
        raise LogError(
            f"{source}: column {mapping.event!r}: unknown event {first!r} in {int(bad.sum())}"
            f" rows; expected {', '.join(EVENTS)} (map names with events: {{{first}: start}})"
        )
    frame["event"] = ev
    if mapping.due_date:
        if mapping.due_date not in raw.columns:
            raise LogError(
                f"{source}: missing column due_date (column {mapping.due_date!r}); the table has"
                f" {', '.join(map(str, raw.columns))}; map it with --map due_date=..."
            )
        frame["due_date"] = _due_dates(raw[mapping.due_date], mapping.due_date, time_unit, log)
    for col in ("job", "product", "station", "machine"):
        s = frame[col]
        nulls = s.isna() | s.astype(str).isin(["", "nan", "None", NO_JOB])
        frame[col] = s.astype(str).where(~nulls, None)
    _check_required(frame, mapping, source)
    order_breaks = int((frame["time"].diff() < 0).sum())
    if order_breaks:
        frame = frame.sort_values("time", kind="stable")
        log.repair("rows out of time order (sorted by time)", order_breaks)
    dups = frame.duplicated()
    log.repair("exact duplicate rows (dropped)", int(dups.sum()))
    log.frame = frame[~dups].reset_index(drop=True)
    return log


def _check_required(frame: Any, mapping: ColumnMapping, source: str) -> None:
    """The fields each event needs (a start needs its job, station and machine...)."""
    needs = {
        "job": ("arrival", "release", "setup", "start", "finish", "departure"),
        "station": ("release", "setup", "start", "finish", "failure", "repair"),
        "machine": ("setup", "start", "finish", "failure", "repair"),
    }
    for col, events in needs.items():
        bad = frame["event"].isin(events) & frame[col].isna()
        if bad.any():
            i = int(bad.to_numpy().nonzero()[0][0])
            raise LogError(
                f"{source}: column {getattr(mapping, col)!r}: empty in {int(bad.sum())} rows of"
                f" events {', '.join(events)} (first at row {i}); fill it or drop those rows"
            )


def _times(col: Any, name: str, time_unit: str, log: EventLog) -> Any:
    """Timestamps as floats in ``time_unit`` (numbers as they are; datetimes from the first)."""
    import numpy as np
    import pandas as pd

    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        values = col.to_numpy(dtype=float)
        bad = ~np.isfinite(values)
        if bad.any():
            i = int(bad.nonzero()[0][0])
            raise LogError(
                f"{log.source}: column {name!r}: {int(bad.sum())} missing or infinite times"
                f" (first at row {i}); every event needs its time"
            )
        return values
    if isinstance(col.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(col):
        stamps = col
    else:
        numeric = pd.to_numeric(col, errors="coerce")
        if numeric.notna().all():
            return _times(numeric, name, time_unit, log)
        if numeric.notna().mean() > 0.5:  # a column of numbers with some that are not
            bad = numeric.isna().to_numpy()
            i = int(bad.nonzero()[0][0])
            raise LogError(
                f"{log.source}: column {name!r}: cannot read {col.iloc[i]!r} (row {i}) as a time;"
                f" {int(bad.sum())} such rows; give numbers or ISO 8601 datetimes"
            )
        try:
            stamps = pd.to_datetime(col, errors="coerce", utc=False, format="ISO8601")
        except (ValueError, TypeError):
            stamps = pd.Series(pd.NaT, index=col.index)
        if not isinstance(stamps.dtype, pd.DatetimeTZDtype) and stamps.isna().any():
            # mixed offsets come back as objects: read them with utc=True
            stamps = pd.to_datetime(col, errors="coerce", utc=True, format="ISO8601")
        bad = stamps.isna()
        if bad.any():
            i = int(bad.to_numpy().nonzero()[0][0])
            raise LogError(
                f"{log.source}: column {name!r}: cannot read {col.iloc[i]!r} (row {i}) as a time;"
                f" {int(bad.sum())} such rows; give numbers or ISO 8601 datetimes"
                " (2024-03-01T06:00:00+01:00)"
            )
    if not isinstance(stamps.dtype, pd.DatetimeTZDtype):
        log.warnings.append(f"column {name!r}: datetimes without a time zone, read as UTC")
        stamps = stamps.dt.tz_localize("UTC")
    origin = stamps.min()
    log.time_origin = origin.isoformat()
    seconds = (stamps - origin).dt.total_seconds().to_numpy(dtype=float)
    return seconds / TIME_FACTOR_S[time_unit]


def _due_dates(col: Any, name: str, time_unit: str, log: EventLog) -> Any:
    """Due dates in ``time_unit`` on the time column's clock (NaN where a row has none).

    Numbers when the time column holds numbers; datetimes (read like the time column, naive
    ones as UTC) from the same origin when it holds datetimes.
    """
    import numpy as np
    import pandas as pd

    out = np.full(len(col), np.nan)
    text = col.astype(str).str.strip()
    present = (col.notna() & ~text.isin(["", "nan", "None", "NaT"])).to_numpy()
    if not present.any():
        return out
    vals = col[present]
    if log.time_origin is None:
        values = pd.to_numeric(vals, errors="coerce")
        hint = "the time column holds numbers: give due dates as numbers in the same unit"
    else:
        if isinstance(vals.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(vals):
            stamps = (
                vals if isinstance(vals.dtype, pd.DatetimeTZDtype) else vals.dt.tz_localize("UTC")
            )
        else:
            stamps = pd.to_datetime(vals, errors="coerce", utc=True, format="ISO8601")
        origin = pd.Timestamp(log.time_origin)
        values = (stamps - origin).dt.total_seconds() / TIME_FACTOR_S[time_unit]
        hint = "give ISO 8601 datetimes like the time column (2024-03-01T14:00:00+01:00)"
    bad = values.isna().to_numpy()
    if bad.any():
        i = int(present.nonzero()[0][bad.nonzero()[0][0]])
        raise LogError(
            f"{log.source}: column {name!r}: cannot read {col.iloc[i]!r} (row {i}) as a due"
            f" date; {int(bad.sum())} such rows; {hint}, or leave it empty"
        )
    out[present] = values.to_numpy(dtype=float)
    return out


def _read_xes(path: Path) -> Any:
    pm4py = _pm4py()
    frame = pm4py.read_xes(str(path))
    return frame


def _read_ocel(path: Path) -> Any:
    """The events of an OCEL 2.0 log that relate to objects of type ``job``, flattened."""
    import pandas as pd

    pm4py = _pm4py()
    ocel = pm4py.read_ocel2(str(path))
    rel = ocel.relations
    jobs = rel[rel[ocel.object_type_column] == "job"][[ocel.event_id_column, ocel.object_id_column]]
    ev = ocel.events.merge(jobs, on=ocel.event_id_column, how="left")
    attrs = [c for c in ("station", "machine", "product", "lifecycle") if c in ev.columns]
    out = pd.DataFrame(
        {
            "time": ev[ocel.event_timestamp],
            "event": ev["lifecycle"] if "lifecycle" in attrs else ev[ocel.event_activity],
            "job": ev[ocel.object_id_column],
        }
    )
    for c in ("station", "machine", "product"):
        out[c] = ev[c] if c in attrs else None
    return out


def _pm4py() -> Any:
    try:
        import pm4py
    except ImportError:  # pragma: no cover - the extra is installed in dev
        raise LogError(
            "EVENTS: reading XES or OCEL needs pm4py; pip install 'taktline[calibration]'"
        ) from None
    return pm4py


def write_xes(log: EventLog, path: Path, origin: str = "2024-01-01T00:00:00+00:00") -> None:
    """Write a canonical log as XES (the mapping :data:`XES_MAPPING` reads back)."""
    import pandas as pd

    pm4py = _pm4py()
    f = log.frame
    unit = 60.0  # minutes; the caller's spec decides the unit when reading back
    stamps = pd.Timestamp(origin) + pd.to_timedelta(f["time"].to_numpy() * unit, unit="s")
    out = pd.DataFrame(
        {
            "case:concept:name": f["job"].fillna(NO_JOB).to_numpy(),
            "concept:name": f["station"].fillna(f["event"]).to_numpy(),
            "lifecycle:transition": f["event"].replace({"finish": "complete"}).to_numpy(),
            "org:resource": f["machine"].fillna(NO_JOB).to_numpy(),
            "case:product": f["product"].fillna(NO_JOB).to_numpy(),
            "time:timestamp": stamps,
        }
    )
    pm4py.write_xes(out, str(path), case_id_key="case:concept:name")
