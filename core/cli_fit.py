"""``taktline fit``: a line spec fitted from a plant event log, with its fidelity report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from taktline.jsonout import echo_json

console = Console()
err_console = Console(stderr=True)  # notes: keeps --json stdout clean


def fit(
    events: Annotated[Path, typer.Argument(help="event log: .csv, .parquet, .xes, OCEL 2.0")],
    out: Annotated[Path, typer.Option("--out", help="where to write the fitted spec (YAML)")],
    report: Annotated[
        Path | None, typer.Option("--report", help="write the fidelity report (HTML)")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    mapping: Annotated[
        str | None,
        typer.Option("--map", help="MES columns: time=ts,job=order,... or a YAML file"),
    ] = None,
    time_unit: Annotated[str, typer.Option("--time-unit", help="s, min or h")] = "min",
    buffer: Annotated[
        list[str] | None, typer.Option("--buffer", help="override a capacity: STATION=N|inf")
    ] = None,
    arrivals: Annotated[str, typer.Option("--arrivals", help="auto, renewal or orders")] = "auto",
    warmup: Annotated[float, typer.Option("--warmup", help="time deleted from KPIs")] = 0.0,
    replications: Annotated[int, typer.Option("--replications", help="simulated runs")] = 10,
    policy: Annotated[str, typer.Option("--policy", help="rule the plant dispatches by")] = "FIFO",
    name: Annotated[str | None, typer.Option("--name", help="the fitted line's name")] = None,
) -> None:
    """Fit a line spec from an event log; report fits and observed vs simulated KPIs."""
    import yaml

    from taktline.agents.rules import get_rule
    from taktline.envs.calibration.infer import fit_line
    from taktline.envs.calibration.logs import LogError, parse_mapping, read_log
    from taktline.envs.calibration.report import (
        compare,
        observed_kpis,
        report_data,
        write_html,
    )
    from taktline.envs.spec import LineSpec
    from taktline.envs.twin import replicate
    from taktline.errors import PolicyError, check_number

    check_number("--warmup", warmup, minimum=0, hint="give the time to delete, e.g. --warmup 60")
    check_number("--replications", replications, minimum=2, hint="a CI needs >= 2 runs")
    if arrivals not in ("auto", "renewal", "orders"):
        raise LogError(f"--arrivals: must be auto, renewal or orders, got {arrivals!r}")
    if out.suffix not in (".yaml", ".yml"):
        raise LogError(f"--out: must end in .yaml, got {str(out)!r}; e.g. --out line.yaml")
    caps: dict[str, int | None] = {}
    for item in buffer or []:
        st, sep, val = item.partition("=")
        ok = sep and (val in ("inf", "none") or val.isdigit())
        if not ok:
            raise LogError(f"--buffer: expected STATION=N or STATION=inf, got {item!r}")
        caps[st] = None if val in ("inf", "none") else int(val)
    try:
        rule = get_rule(policy)
    except PolicyError as exc:
        raise PolicyError(f"--policy: {exc}") from None
    log = read_log(events, parse_mapping(mapping), time_unit)
    cal = fit_line(
        log,
        name=name or events.stem.split(".")[0],
        time_unit=time_unit,
        buffers=caps,
        arrivals=arrivals,  # type: ignore[arg-type]
        warmup=warmup,
    )
    spec = LineSpec.model_validate(cal.spec)
    out.write_text(yaml.safe_dump(cal.spec, sort_keys=False))
    err_console.print(f"fitted spec written to {out}")
    runs = replicate(spec, rule, replications, until=spec.horizon, warmup=warmup)
    data = report_data(log, cal, compare(observed_kpis(log, cal, warmup), runs), replications)
    if report is not None:
        write_html(report, data, cal)
        err_console.print(f"fidelity report written to {report}")
    if json_out:
        echo_json(data)
        return
    for k, r in data["kpis"].items():
        if "." not in k:
            console.print(
                f"{k}: observed {r['observed']:.4g}, simulated {r['simulated']:.4g}"
                f" ± {r['ci95']:.2g} ({r['verdict']})"
            )
    for k, v in data["repairs"].items():
        console.print(f"repair: {k}: {v}")
    for w in data["warnings"]:
        console.print(f"warning: {w}")


def register(app: typer.Typer) -> None:
    app.command("fit")(fit)
