"""Evaluation: common random numbers, paired statistics, gaps, MLflow logging."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from taktline.agents.policies import RulePolicy, load_policy
from taktline.training.evaluate import (
    evaluate,
    evaluate_instances,
    mean_ci,
    paired_test,
    render_table,
)


class Renamed(RulePolicy):
    """The same rule under another name (to compare a policy with itself)."""

    def __init__(self, rule: str, name: str) -> None:
        super().__init__(rule)
        self.name = name


LINE = {"line": "bodyshop", "horizon": 240.0, "max_queue": 8}


def test_common_random_numbers_make_identical_policies_tie_exactly() -> None:
    ev = evaluate(
        [RulePolicy("FIFO"), Renamed("FIFO", "FIFO again")],
        "taktline/LineDispatch-v0",
        LINE,
        episodes=4,
        seed=7,
    )
    assert ev.values["FIFO"] == ev.values["FIFO again"]
    assert len(set(ev.values["FIFO"])) == 4  # different seeds, different episodes
    (row,) = ev.paired()
    assert row["diff_mean"] == 0.0 and row["p_ttest"] == 1.0 and row["p_wilcoxon"] == 1.0
    assert row["verdict"] == "no significant difference"
    again = evaluate([RulePolicy("FIFO")], "taktline/LineDispatch-v0", LINE, episodes=4, seed=7)
    assert again.values["FIFO"] == ev.values["FIFO"]  # reproducible


def test_paired_comparison_finds_a_real_difference_on_job_shops() -> None:
    kw = {"instance": {"generator": "taillard_like", "n_jobs": 8, "n_machines": 8}}
    ev = evaluate([load_policy("MWKR"), load_policy("SPT")], "taktline/JobShop-v0", kw, episodes=12)
    (row,) = ev.paired("MWKR")
    # SPT makes much longer schedules than MWKR on Taillard-like shops
    assert row["diff_mean"] > 0 and row["diff_ci_low"] > 0 and row["p_ttest"] < 0.01
    assert row["verdict"] == "worse" and ev.best() == "MWKR"


def test_job_shop_instances_report_the_gap_to_the_reference() -> None:
    ev = evaluate_instances([load_policy("cpsat:5"), load_policy("SPT")], ["ft06", "la01"])
    assert ev.gaps("CPSAT(5s)") == [0.0, 0.0]  # both solve to optimality in seconds
    spt = ev.gaps("SPT")
    assert spt is not None and min(spt) > 0
    rows = {r["policy"]: r for r in ev.summary()}
    assert rows["SPT"]["gap_mean"] == pytest.approx(np.mean(spt))
    from rich.console import Console

    console = Console(width=120, record=True)
    console.print(render_table(ev))
    text = console.export_text()
    assert "CPSAT(5s)" in text and "0.0%" in text


def test_confidence_interval_and_paired_test_agree_with_textbook_values() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0])
    lo, hi = mean_ci(x)
    # mean 2.5, s = 1.291, t(0.975, 3) = 3.182 -> half-width 2.054
    assert lo == pytest.approx(2.5 - 2.0540, abs=1e-3) and hi == pytest.approx(4.5540, abs=1e-3)
    better = paired_test(np.array([1.0, 1.2, 0.9, 1.1, 1.0]), higher_is_better=True)
    assert better["verdict"] == "better" and better["p_ttest"] < 0.001
    worse = paired_test(np.array([1.0, 1.2, 0.9, 1.1, 1.0]), higher_is_better=False)
    assert worse["verdict"] == "worse"


def test_evaluation_is_logged_when_a_run_is_active(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    from taktline.training import tracking

    tracking.configure()
    exp = tracking.ensure_experiment("eval-test")
    with mlflow.start_run(experiment_id=exp) as run:
        evaluate(
            [load_policy("SPT"), load_policy("MWKR")],
            "taktline/JobShop-v0",
            {"instance": "ft06"},
            episodes=2,
        )
    client = mlflow.tracking.MlflowClient()
    data = client.get_run(run.info.run_id).data
    assert data.metrics["eval.SPT.makespan_mean"] == 94.0
    assert data.metrics["eval.MWKR.gap_mean"] == pytest.approx(58 / 55 - 1)
    files = {a.path for a in client.list_artifacts(run.info.run_id, "eval")}
    assert files == {"eval/table.json", "eval/evaluation.json"}
    assert (tmp_path / "mlflow.db").is_file() and (tmp_path / "mlartifacts").is_dir()
