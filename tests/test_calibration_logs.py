"""Malformed event logs: each gets one clear error naming the column, or a counted repair."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from taktline.envs.calibration.infer import fit_line
from taktline.envs.calibration.logs import (
    ColumnMapping,
    LogError,
    canonical,
    parse_mapping,
    read_log,
)


def _good() -> pd.DataFrame:
    rows = [
        (0.0, "arrival", "J-0", None, None, "a"),
        (0.0, "release", "J-0", "s1", None, "a"),
        (0.0, "start", "J-0", "s1", "s1.M1", "a"),
        (1.0, "finish", "J-0", "s1", "s1.M1", "a"),
        (1.0, "start", "J-0", "s2", "s2.M1", "a"),
        (2.5, "finish", "J-0", "s2", "s2.M1", "a"),
        (2.5, "departure", "J-0", None, None, "a"),
    ]
    return pd.DataFrame(rows, columns=["time", "event", "job", "station", "machine", "product"])


def test_missing_column_is_an_error_naming_it() -> None:
    with pytest.raises(LogError, match=r"missing column machine \(column 'machine'\)"):
        canonical(_good().drop(columns="machine"), ColumnMapping())


def test_unparsable_time_is_an_error_naming_value_and_row() -> None:
    raw = _good().astype({"time": object})
    raw.loc[3, "time"] = "yesterday"
    with pytest.raises(LogError, match=r"column 'time': cannot read 'yesterday' \(row 3\)"):
        canonical(raw, ColumnMapping())


def test_unknown_event_is_an_error_with_the_mapping_fix() -> None:
    raw = _good()
    raw.loc[2, "event"] = "BEGIN"
    with pytest.raises(LogError, match=r"unknown event 'begin'.*map names with events"):
        canonical(raw, ColumnMapping())


def test_empty_log_is_an_error() -> None:
    with pytest.raises(LogError, match="the log has no rows"):
        canonical(_good().iloc[:0], ColumnMapping())


def test_start_without_machine_is_an_error_naming_the_column() -> None:
    raw = _good()
    raw.loc[2, "machine"] = None
    with pytest.raises(LogError, match=r"column 'machine': empty in 1 rows.*first at row 2"):
        canonical(raw, ColumnMapping())


def test_rows_out_of_time_order_are_sorted_and_counted() -> None:
    raw = _good().iloc[[0, 1, 2, 3, 5, 4, 6]]
    log = canonical(raw, ColumnMapping())
    assert log.repairs == {"rows out of time order (sorted by time)": 1}
    assert log.frame["time"].is_monotonic_increasing


def test_exact_duplicate_rows_are_dropped_and_counted() -> None:
    raw = pd.concat([_good(), _good().iloc[[3]]]).sort_values("time", kind="stable")
    log = canonical(raw, ColumnMapping())
    assert log.repairs == {"exact duplicate rows (dropped)": 1}
    assert len(log.frame) == 7


def test_finish_without_its_start_is_dropped_and_counted() -> None:
    raw = _good().drop(index=4)  # the start at s2
    log = canonical(raw, ColumnMapping())
    cal = fit_line(log)
    assert cal.repairs["finish without its start (dropped)"] == 1
    assert [s["name"] for s in cal.spec["stations"]] == ["s1"]


def test_repair_without_its_failure_is_dropped_and_counted() -> None:
    raw = pd.concat(
        [
            _good(),
            pd.DataFrame([(2.0, "repair", None, "s1", "s1.M1", None)], columns=_good().columns),
        ]
    ).sort_values("time", kind="stable")
    cal = fit_line(canonical(raw, ColumnMapping()))
    assert cal.repairs == {"repair without its failure (dropped)": 1}
    assert "failures" not in cal.spec["stations"][0]


def test_bad_mapping_and_unknown_file_type_are_errors(tmp_path: Path) -> None:
    with pytest.raises(LogError, match=r"--map: expected key=column pairs.*got 'time'"):
        parse_mapping("time")
    with pytest.raises(LogError, match="--map colour: Extra inputs"):
        parse_mapping("colour=red")
    bad = tmp_path / "log.txt"
    bad.write_text("x")
    with pytest.raises(LogError, match=r"unknown file type '.txt'"):
        read_log(bad)


def test_mes_table_with_datetimes_and_renamed_columns_reads_as_minutes() -> None:
    raw = _good()
    raw["time"] = pd.Timestamp("2024-03-01T06:00:00+01:00") + pd.to_timedelta(raw["time"], "min")
    raw = raw.rename(columns={"time": "ts", "job": "order", "event": "type"})
    raw["type"] = raw["type"].str.upper()
    mapping = parse_mapping("time=ts,job=order,event=type")
    log = canonical(raw, mapping, "min")
    assert log.frame["time"].tolist() == [0.0, 0.0, 0.0, 1.0, 1.0, 2.5, 2.5]
    assert log.time_origin == "2024-03-01T06:00:00+01:00"


def _two_jobs() -> pd.DataFrame:
    """J-0 and J-1 through s1 then s2, one after the other (a valid log)."""
    second = _good()
    second["job"] = "J-1"
    second["time"] = second["time"] + 1.5
    second.loc[second["event"] == "arrival", "time"] = 0.0
    raw = pd.concat([_good(), second]).sort_values("time", kind="stable")
    return raw.reset_index(drop=True)


def test_a_valid_log_has_no_overlap_warning() -> None:
    log = canonical(_two_jobs(), ColumnMapping())
    fit_line(log)
    assert not log.flags and not log.repairs


def test_two_jobs_in_process_on_one_machine_are_counted_and_reported() -> None:
    raw = _two_jobs()
    # J-1 starts on s1.M1 at 0.5, while J-0 is in process there until 1.0
    raw.loc[
        (raw["job"] == "J-1") & (raw["event"] == "start") & (raw["station"] == "s1"), "time"
    ] = 0.5
    log = canonical(raw.sort_values("time", kind="stable"), ColumnMapping())
    cal = fit_line(log)
    key = next(k for k in log.flags if "two jobs in process at once" in k)
    assert log.flags[key] == 1
    assert f"{key}: 1" in log.warnings
    # both operations are kept (and paired), not dropped as broken pairs
    assert cal.fits["processing/s1/a"].n == 2
    assert not cal.repairs


def test_start_before_the_jobs_previous_finish_is_counted_and_reported() -> None:
    raw = _good()
    raw.loc[4, "time"] = 0.8  # J-0 starts at s2 before it finished at s1 (1.0)
    log = canonical(raw.sort_values("time", kind="stable"), ColumnMapping())
    fit_line(log)
    key = next(k for k in log.flags if "job's previous operation" in k)
    assert log.flags[key] == 1
    assert any(w.startswith(key) for w in log.warnings)


def test_mapped_due_dates_become_an_order_list_with_due_dates() -> None:
    raw = _two_jobs()
    raw["due"] = raw["job"].map({"J-0": 10.0, "J-1": None})
    log = canonical(raw, parse_mapping("due_date=due"))
    orders = fit_line(log).spec["arrivals"]
    assert orders["kind"] == "orders"
    assert orders["orders"] == [
        {"product": "a", "release_time": 0.0, "due_date": 10.0},
        {"product": "a", "release_time": 0.0},
    ]


def test_due_dates_as_datetimes_share_the_time_columns_origin() -> None:
    raw = _two_jobs()
    t0 = pd.Timestamp("2024-03-01T06:00:00+01:00")
    raw["time"] = t0 + pd.to_timedelta(raw["time"], "min")
    raw["due"] = raw["job"].map({"J-0": "2024-03-01T07:30:00+01:00", "J-1": "2024-03-01T04:00Z"})
    log = canonical(raw, parse_mapping("due_date=due"), "min")
    cal = fit_line(log)
    dues = [o["due_date"] for o in cal.spec["arrivals"]["orders"]]
    assert dues == [90.0, 0.0]  # J-1 was due before the log began: clipped, with a warning
    assert "due dates before the log's start, set to 0: 1" in cal.warnings


def test_unreadable_due_date_is_an_error_naming_value_and_row() -> None:
    raw = _good()
    raw["due"] = [None, None, "soon", None, None, None, None]
    with pytest.raises(LogError, match=r"column 'due': cannot read 'soon' \(row 2\) as a due date"):
        canonical(raw, parse_mapping("due_date=due"))
