"""The training commands: evaluate, train and promote errors (``taktline.cli_train``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import typer
from typer.testing import CliRunner

from taktline.cli_train import register

app = typer.Typer()
register(app)
runner = CliRunner()


def test_evaluate_compares_rules_on_common_seeds_as_json() -> None:
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--policy",
            "MWKR",
            "--policy",
            "SPT",
            "--env",
            "taktline/JobShop-v0",
            "--instances",
            "ft06,la01",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["cases"] == ["ft06", "la01"] and data["metric"] == "makespan"
    assert data["values"]["MWKR"][0] == 58.0 and data["paired"][0]["reference"] == "MWKR"


def test_evaluate_prints_a_table_for_people() -> None:
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--policy",
            "FIFO",
            "--policy",
            "SAME",
            "--env",
            "taktline/LineDispatch-v0",
            "--env-kwargs",
            '{"line": "bodyshop", "horizon": 200}',
            "--episodes",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "profit (higher is better), 3 paired cases" in result.output


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "taktline.cli_train", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_bad_input_is_one_clear_line_and_exit_code_2(tmp_path: Path) -> None:
    out = _cli("train", "bodyshop_dispatch", "--set", "budget.total_timestep=5", cwd=tmp_path)
    assert out.returncode == 2
    assert "did you mean budget.total_timesteps?" in out.stderr
    out = _cli("evaluate", "--policy", "NOPE", "--env", "taktline/JobShop-v0", cwd=tmp_path)
    assert out.returncode == 2 and "no such bundle directory, MLflow URI or rule" in out.stderr
    out = _cli("train", "bodyshop_dispatch", "--backend", "spark", cwd=tmp_path)
    assert out.returncode == 2 and "unknown 'spark'; choose one of sb3, rllib" in out.stderr


def test_address_without_the_rllib_backend_is_a_clear_error() -> None:
    result = runner.invoke(app, ["train", "bodyshop_dispatch", "--address", "127.0.0.1:6379"])
    assert result.exit_code != 0
    message = str(result.exception) if result.exception else result.output
    assert "--address" in message and "--backend rllib" in message


def test_a_bad_env_kwarg_is_one_error_line_before_any_worker_starts(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        "name: bad\n"
        "env: {id: taktline/LineDispatch-v0, kwargs: {line: serial5, max_queu: 4}}\n"
        "n_envs: 2\nvec_env: subproc\nprogress: false\n"
    )
    cases = [
        (["train", str(config)], ["env.kwargs.max_queu", "(got 4)", "env.kwargs.max_queue?"]),
        (
            ["train", "bodyshop_dispatch", "--set", "env.kwargs.line=nosuchline"],
            ["env.kwargs", "nosuchline", "bundled: bodyshop"],
        ),
    ]
    for args, expected in cases:
        out = _cli(*args, cwd=tmp_path)
        assert out.returncode == 2, out.stderr[-2000:]
        assert "Traceback" not in out.stdout + out.stderr
        lines = [line for line in out.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr[-2000:]
        for text in expected:
            assert text in lines[0]
        assert not (tmp_path / "mlflow.db").exists()  # failed before any run was started
