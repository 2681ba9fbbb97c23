"""Checkpoint publishing: the state file reaches the tracking store last (it commits)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from taktline.training.run import STATE_FILE, publish_checkpoint


def test_state_file_is_uploaded_after_the_model_files_to_its_slot_and_the_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = mlflow.create_experiment("ck", artifact_location=(tmp_path / "artifacts").as_uri())
    folder = tmp_path / "checkpoints"
    (folder / "best_bundle").mkdir(parents=True)
    (folder / "best_bundle" / "bundle.json").write_text("{}")
    (folder / "model.zip").write_bytes(b"weights")
    (folder / STATE_FILE).write_text(json.dumps({"num_timesteps": 128, "slot": "a"}))

    # record what the real store holds at each upload (the calls go through unchanged)
    seen: list[tuple[str, list[str], list[int]]] = []
    client = MlflowClient()
    real_one, real_many = mlflow.log_artifact, mlflow.log_artifacts

    def snapshot_then(real: Any) -> Any:
        def call(local: str, artifact_path: str | None = None) -> None:
            run_id = mlflow.active_run().info.run_id  # type: ignore[union-attr]
            stored = [f.path for f in client.list_artifacts(run_id, "checkpoints")]
            steps = [m.step for m in client.get_metric_history(run_id, "checkpoint.step")]
            seen.append((Path(local).name, stored, steps))
            real(local, artifact_path=artifact_path)

        return call

    monkeypatch.setattr(mlflow, "log_artifact", snapshot_then(real_one))
    monkeypatch.setattr(mlflow, "log_artifacts", snapshot_then(real_many))
    with mlflow.start_run(experiment_id=exp) as run:
        publish_checkpoint(folder, "checkpoints", {"checkpoint.step": 128.0}, 128)

    names = [name for name, _, _ in seen]
    assert names[-1] == STATE_FILE and sorted(names[:-1]) == ["best_bundle", "model.zip"]
    _, stored_before_state, steps_before_state = seen[-1]
    assert sorted(stored_before_state) == ["checkpoints/a"]
    assert steps_before_state == [128]
    stored = {f.path for f in client.list_artifacts(run.info.run_id, "checkpoints/a")}
    assert stored == {"checkpoints/a/best_bundle", "checkpoints/a/model.zip"}
    top = {f.path for f in client.list_artifacts(run.info.run_id, "checkpoints")}
    assert top == {"checkpoints/a", "checkpoints/state.json"}
    state = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/checkpoints/{STATE_FILE}")
    assert state == {"num_timesteps": 128, "slot": "a"}
