"""`taktline demo` runs the whole journey (tiny budget): simulate, train, judge, serve, decide —
serves only what won, says why, and leaves no server running."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_serves_what_its_verdict_says_and_stops_its_server(tmp_path: Path) -> None:
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
            "--showcase-episodes",
            "3",
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
    assert "lookahead vs best rule" in text  # the portfolio's verdict is shown, win or loss
    assert "3/5 (showcase)" in text and "showcase cut_weld" in text
    assert (tmp_path / "out" / "portfolio.png").stat().st_size > 5000
    assert '"fallback": false' in text
    # honesty: what is served matches the held-out verdict, and the summary says why
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    verdict = summary["verdict"]
    assert verdict["baseline"] in {"FIFO", "SPT", "EDD", "ATC", "SAME"} and verdict["n"] == 2
    assert summary["served_by"] == answer_served_by(text)
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri, uri)
    aliases = dict(client.get_registered_model("demo-bodyshop").aliases)
    if verdict["won"]:
        assert summary["served"] == "models:/demo-bodyshop@production"
        assert summary["served_by"] == f"policy:bodyshop@{summary['model_version']}"
        assert aliases["production"] == summary["model_version"]
        mlflow.set_tracking_uri(uri)
        local = Path(mlflow.artifacts.download_artifacts("models:/demo-bodyshop@production"))
        bundle = json.loads(next(local.rglob("bundle.json")).read_text())
        assert bundle["lineage"]["num_timesteps"] > 0
        assert bundle["lineage"]["verdict"]["won"] is True
        assert "beats the best rule" in summary["why"]
    elif summary["portfolio"]["winner"].startswith("LOOKAHEAD"):
        # the lookahead is served only when it beat the best rule of its own verdict
        look = next(r for r in summary["portfolio"]["rows"] if r["kind"] == "lookahead")
        assert look["verdict"] == "better" and look["diff_ci_low"] > 0
        assert summary["served"] == f"rule:{look['policy']}"
        assert "beats the best rule" in summary["why"]
    else:
        assert summary["served"] == f"rule:{verdict['baseline']}"
        # the rule is served as the policy: serving names it as its version (policy:NAME@rule:X)
        assert summary["served_by"].endswith(f"rule:{verdict['baseline']}")
        assert "production" not in aliases and "candidate" not in aliases
        assert "does not beat the best rule" in summary["why"]
        assert f"Δ {verdict['delta']:+,.1f}" in summary["why"]
    assert summary["why"].replace(" ", "")[:40] in text.replace(" ", "").replace("\n", "")
    # the shipped showcase policy is registered only if it beat the best rule on these seeds
    show = summary["showcase"]
    row = next(r for r in show["rows"] if r["kind"] not in ("rule", "lookahead"))
    assert row["n"] == 3 and (tmp_path / "out" / "showcase.png").stat().st_size > 5000
    names = {m.name for m in client.search_registered_models()}
    if row["verdict"] == "better":
        assert row["diff_ci_low"] > 0
        showcase = client.get_registered_model("showcase-cut_weld")
        assert dict(showcase.aliases)["candidate"] == show["registered_version"]
    else:
        assert show["registered_version"] is None and "showcase-cut_weld" not in names
    assert (tmp_path / "mlflow.db").is_file()
    assert (tmp_path / "out" / "bodyshop_gantt.png").stat().st_size > 5000
    assert "stopped again" in text
    log = (tmp_path / "out" / "server.log").read_text()
    assert "Traceback" not in log


def answer_served_by(text: str) -> str:
    """The ``served_by`` of the decision the demo printed."""
    key = '"served_by": "'
    start = text.index(key) + len(key)
    return text[start : text.index('"', start)]
