"""`taktline demo` runs the whole journey (tiny budget): simulate, train, evaluate, register,
serve, decide — and leaves no server running."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_runs_end_to_end_and_stops_its_server(tmp_path: Path) -> None:
    exe = shutil.which("taktline") or str(Path(sys.executable).parent / "taktline")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TAKTLINE_"))}
    out = subprocess.run(
        [
            exe,
            "demo",
            "--replications",
            "2",
            "--timesteps",
            "2048",
            "--minutes",
            "2",
            "--episodes",
            "2",
        ],
        cwd=tmp_path,
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    for step in ("1/5", "2/5", "3/5", "4/5", "5/5", "summary"):
        assert step in text
    assert '"served_by": "policy:bodyshop@1"' in text
    assert '"fallback": false' in text
    assert (tmp_path / "mlflow.db").is_file()
    assert (tmp_path / "out" / "bodyshop_gantt.png").stat().st_size > 5000
    assert "stopped again" in text
    log = (tmp_path / "out" / "server.log").read_text()
    assert "Traceback" not in log
