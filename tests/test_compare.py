"""``taktline compare``: the portfolio on the same held-out seeds, against the best rule."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from taktline.cli import app
from tests.ray_support import Cluster
from tests.test_lookahead import CHANGEOVER_LINE


@pytest.fixture(scope="module")
def line_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A line the suite does not bundle, given as a spec file (no code knows it)."""
    spec = {**CHANGEOVER_LINE, "name": "not-bundled", "horizon": 160.0, "warmup": 20.0}
    path = tmp_path_factory.mktemp("lines") / "not_bundled.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_compare_takes_any_spec_file_and_pairs_every_policy_with_the_best_rule(
    line_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the embedded MLflow store lands here
    chart = tmp_path / "verdict.png"
    out = CliRunner().invoke(
        app,
        [
            "compare",
            str(line_file),
            "--rules",
            "FIFO,SPT,SAME",
            "--lookahead",
            "LOOKAHEAD(base=FIFO,horizon=15,k=3)",
            "-p",
            "ATC(k=0.5)",
            "--episodes",
            "3",
            "--seed",
            "40",
            "--chart",
            str(chart),
            "--json",
        ],
    )
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    rows = {r["policy"]: r for r in data["rows"]}
    assert set(rows) == {
        "FIFO",
        "SPT",
        "SAME",
        "LOOKAHEAD(base=FIFO,horizon=15.0,k=3)",
        "ATC(k=0.5)",
    }
    assert data["seeds"] == [40, 41, 42]
    values = data["values"]
    # the reference is the best rule on these very seeds, paired against itself it is 0
    best = max(("FIFO", "SPT", "SAME"), key=lambda r: np.mean(values[r]))
    assert data["reference"] == best and rows[best]["verdict"] == "reference"
    for name, row in rows.items():
        diff = np.asarray(values[name]) - np.asarray(values[best])
        assert row["diff_mean"] == pytest.approx(diff.mean())
        assert row["decisions"] > 0 and 0 < row["latency_p50_ms"] <= row["latency_p99_ms"]
    assert rows["LOOKAHEAD(base=FIFO,horizon=15.0,k=3)"]["kind"] == "lookahead"
    assert rows["ATC(k=0.5)"]["kind"] == "tuned rule"
    assert data["winner"] in rows
    assert chart.stat().st_size > 10_000  # a PNG with bars, not an empty canvas
    # logged to the embedded MLflow store: the comparison and the chart
    import mlflow

    run = mlflow.get_run(data["mlflow_run_id"])
    assert run.data.tags["taktline.reference"] == best
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "compare")}
    assert {"compare/comparison.json", "compare/verdict.png"} <= artifacts


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--episodes", "1"], "--episodes: must be >= 2"),
        (["--minutes", "0"], "--minutes: must be a positive number"),
        (["--rules", ","], "--rules: no rule named"),
        (["--rules", "FASTEST"], "FASTEST"),
        (["-p", "LOOKAHEAD(k=0)"], "LOOKAHEAD k"),
        (["--chart", "verdict.txt"], "--chart"),
    ],
)
def test_bad_input_is_one_clear_error(args: list[str], named: str, line_file: Path) -> None:
    out = CliRunner().invoke(app, ["compare", str(line_file), "--no-mlflow", *args])
    assert out.exit_code == 2, out.output
    assert named in out.output and "Traceback" not in out.output


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_rounds_on_ray_give_the_same_values_as_in_process(
    line_file: Path, ray_cluster: Cluster, tmp_path: Path
) -> None:
    """``--workers 2`` plays the rounds as Ray tasks on the cluster of RAY_ADDRESS; every
    episode is seeded, so the table is the one played in this process, value for value."""
    from taktline.training.compare import compare

    args = ["--rules", "FIFO,SAME", "--lookahead", "LOOKAHEAD(base=FIFO,horizon=10,k=2)"]
    args += ["--episodes", "3", "--seed", "7", "--no-mlflow", "--json"]
    on_ray = ray_cluster.run_cli(["compare", str(line_file), *args, "--workers", "2"], tmp_path)
    here = compare(
        str(line_file),
        rules=["FIFO", "SAME"],
        lookahead="LOOKAHEAD(base=FIFO,horizon=10,k=2)",
        episodes=3,
        seed=7,
    )
    assert on_ray["values"] == here.evaluation.values
