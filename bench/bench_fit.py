"""Time and peak memory of `taktline fit` on a 1-million-event log (bodyshop, FIFO).

Prints the events, the wall time of reading + fitting (the CLI's work before its simulation
check) and the peak resident memory of the process. Run: .venv/bin/python bench/bench_fit.py
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

from taktline.agents.rules import get_rule
from taktline.envs.calibration.infer import fit_line
from taktline.envs.calibration.logs import read_log
from taktline.envs.eventlog import export_events
from taktline.envs.spec import load_spec
from taktline.envs.twin import Twin


def main(target: int = 1_000_000) -> None:
    spec = load_spec("bodyshop")
    twin = Twin(spec, 1, get_rule("FIFO"), log_events=True)
    twin.run(target / 6.5)  # bodyshop logs about 6.5 events per minute
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.parquet"
        export_events(twin, path)
        del twin
        t0 = time.perf_counter()
        log = read_log(path, None, "min")
        cal = fit_line(log, name="bench")
        wall = time.perf_counter() - t0
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"events {len(log.frame)}  read+fit {wall:.1f} s  peak RSS {peak_mib:.0f} MiB"
        f"  fits {len(cal.fits)}"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
