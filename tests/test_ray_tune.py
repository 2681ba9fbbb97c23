"""``taktline tune``: a Ray Tune sweep on the local cluster, tracked as parent and child runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.ray_support import Cluster, mlflow_client, tiny_config, write_config

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]


def test_tune_sweep_runs_trials_as_child_runs_and_registers_the_best_scoring_trial(
    ray_cluster: Cluster, tmp_path: Path
) -> None:
    base = tiny_config(
        "tiny-base",
        **{
            "budget.total_timesteps": 800,
            "hyperparameters.num_env_runners": 0,
            "eval.every_steps": 400,
            "checkpoint.every_steps": 1_000_000,
            "tracking.experiment": "ray-tune",
        },
    )
    write_config(tmp_path, base)
    sweep = {
        "name": "tiny-sweep",
        "base": "tiny-base.yaml",
        "search_space": {
            "hyperparameters.learning_rate": {"choice": [1e-4, 1e-3]},
            "env.kwargs.max_queue": {"choice": [6, 8]},
        },
        "num_samples": 2,
        "scheduler": {"grace_period_steps": 400},
    }
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    env = ray_cluster.env()
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(
        [sys.executable, "-m", "taktline.cli_tune", "sweep.yaml", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    best = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert "Trial status" in proc.stdout + proc.stderr  # Tune's progress table
    assert len(best["trials"]) == 2
    assert {t["params"]["env.kwargs.max_queue"] for t in best["trials"]} <= {6, 8}

    client = mlflow_client(tmp_path)
    exp = client.get_experiment_by_name("ray-tune")
    runs = client.search_runs([exp.experiment_id])
    parent = [r for r in runs if r.info.run_name == "tiny-sweep"]
    assert len(parent) == 1 and parent[0].info.run_id == best["parent_run_id"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == best["parent_run_id"]]
    assert len(children) == 2
    assert all(c.data.tags["taktline.backend"] == "rllib" for c in children)
    assert best["run_id"] in {c.info.run_id for c in children}
    # the best: the highest score (profit) among the trials that finished with a model
    finished = [t for t in best["trials"] if t["model_uri"]]
    assert best["score"] == max(t["score"] for t in finished)
    assert best["run_id"] == max(finished, key=lambda t: t["score"])["run_id"]
    (version,) = client.search_model_versions("name='tiny-sweep'")
    assert version.run_id == best["run_id"] and str(version.version) == str(best["model_version"])
    assert parent[0].data.tags["taktline.best_run_id"] == best["run_id"]
    # no eval.baselines in this sweep: nothing to beat, so registered without the alias
    assert version.tags["verdict"].startswith("none")
    assert "candidate" not in dict(client.get_registered_model("tiny-sweep").aliases)
