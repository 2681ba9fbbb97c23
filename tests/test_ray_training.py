"""RLlib training on a real local Ray cluster: cluster jobs, bundles, fault tolerance, resume.

Every test attaches to the session's ``ray start --head --num-cpus 2`` cluster
(:func:`tests.ray_support.shared_cluster`) and trains the body-shop dispatch line for a few
iterations of 400 steps.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.ray_support import (
    NO_TRAINER_CHECK,
    RAY,
    TINY_ENV,
    Cluster,
    mlflow_client,
    tiny_config,
    train_cmd,
    write_config,
)

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

ENV_ID = "taktline/LineDispatch-v0"


def _history(client: Any, run_id: str, key: str) -> list[Any]:
    return sorted(client.get_metric_history(run_id, key), key=lambda m: (m.timestamp, m.step))


# ---- a training job submitted with `ray job submit` -------------------------------------------
@pytest.fixture(scope="module")
def job_run(
    ray_cluster: Cluster, mlflow_server: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """Submit ``taktline train`` as a Ray job (working_dir = a folder with the config) that
    logs to a real ``mlflow server``."""
    import mlflow

    folder = tmp_path_factory.mktemp("job")
    job_dir = folder / "job"
    job_dir.mkdir()
    cfg = tiny_config(
        "tiny-job",
        **{
            "budget.total_timesteps": 800,
            "eval.baselines": ["FIFO"],
            "tracking.experiment": "ray-job",
        },
    )
    write_config(job_dir, cfg)
    runtime_env = {"env_vars": {"MLFLOW_TRACKING_URI": mlflow_server, "RAY_AUTH_MODE": "token"}}
    cmd = [
        RAY,
        "job",
        "submit",
        "--address",
        ray_cluster.dashboard_url,
        "--working-dir",
        str(job_dir),
        "--runtime-env-json",
        json.dumps(runtime_env),
        "--",
        *train_cmd("tiny-job.yaml", "--json"),
    ]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=480,
        env={**os.environ, "RAY_AUTH_MODE": "token"},
    )
    mlflow.set_tracking_uri(mlflow_server)
    client = mlflow.MlflowClient(mlflow_server, mlflow_server)
    return {"folder": folder, "proc": proc, "client": client, "uri": mlflow_server}


def test_ray_job_submit_of_train_succeeds_and_logs_to_mlflow(job_run: dict[str, Any]) -> None:
    proc, client = job_run["proc"], job_run["client"]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "succeeded" in (proc.stdout + proc.stderr)
    exp = client.get_experiment_by_name("ray-job")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["taktline.backend"] == "rllib"
    assert run.data.params["rllib.num_env_runners"] == "1"
    assert run.data.params["env.id"] == ENV_ID
    iterations = [m.value for m in _history(client, run.info.run_id, "train.iteration")]
    assert iterations == [1.0, 2.0]
    for key in (
        "eval.profit",
        "train.episode_return",
        "train.policy_loss",
        "baseline.FIFO.profit",
        "checkpoint.step",
    ):
        assert key in run.data.metrics, key
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"checkpoints", "config.json", "learning_curve.png"} <= artifacts
    # the checkpoint reached the server's artifact store (a resume may run on another node)
    checkpoint = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")}
    assert "checkpoints/state.json" in checkpoint
    folder = str(job_run["folder"])
    local = client.download_artifacts(run.info.run_id, "checkpoints/state.json", folder)
    state = json.loads(Path(local).read_text())
    slot = {a.path for a in client.list_artifacts(run.info.run_id, f"checkpoints/{state['slot']}")}
    assert f"checkpoints/{state['slot']}/rllib" in slot
    assert any(rel.startswith("rllib/") for rel in state["files"])  # digests of RLlib's files
    # registered with its held-out verdict; the alias only if it beat FIFO
    (version,) = client.search_model_versions("name='tiny-job'")
    assert version.run_id == run.info.run_id and version.version == "1"
    assert version.tags["baseline"] == "FIFO" and version.tags["verdict"] in {"won", "lost"}
    aliases = dict(client.get_registered_model("tiny-job").aliases)
    assert ("candidate" in aliases) == (version.tags["verdict"] == "won")


def test_rllib_bundle_acts_through_evaluate_and_the_serving_store_without_ray_or_sb3(
    job_run: dict[str, Any],
) -> None:
    folder: Path = job_run["folder"]
    assert job_run["proc"].returncode == 0
    script = f"""
import json, sys
from pathlib import Path
import gymnasium as gym
import mlflow
import taktline.envs
from taktline import cli_train

sys.argv = ["taktline", "evaluate", "--policy", "models:/tiny-job/1", "--policy", "FIFO",
            "--env", "{ENV_ID}", "--env-kwargs", {json.dumps(json.dumps(TINY_ENV))},
            "--episodes", "2", "--json"]
try:
    cli_train.main()
except SystemExit as exc:
    assert not exc.code, exc.code

# serving's path: the bundle from the registry, encode -> act -> decode with its codec
from taktline.envs.encoding import make_codec
from taktline.serving.store import load_bundle_dir
local = mlflow.artifacts.download_artifacts("models:/tiny-job/1")
bundle = load_bundle_dir(Path(local))
assert bundle.lineage["backend"] == "rllib", bundle.lineage
codec = make_codec(bundle.env_id, bundle.env_kwargs)
env = gym.make("{ENV_ID}", **{TINY_ENV!r})
env.reset(seed=3)
for _ in range(25):
    snap = env.unwrapped.snapshot()
    obs, mask = codec.encode(snap)
    action = int(bundle.act(obs[None], mask[None])[0])
    assert mask[action], (action, mask)
    decision = codec.decode(snap, action)
    assert decision.kind == "dispatch", decision
    env.step(action)
print("SERVING-OK")
"""
    env = {**os.environ, "MLFLOW_TRACKING_URI": job_run["uri"]}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(
        [sys.executable, "-c", script + NO_TRAINER_CHECK],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "SERVING-OK" in proc.stdout
    table = json.loads(proc.stdout[: proc.stdout.index("SERVING-OK")])
    rows = {r["policy"]: r for r in table["summary"]}
    assert set(rows) == {"tiny-job/v1[greedy]", "FIFO"}  # the registered version, greedy
    assert all(r["n"] == 2 for r in rows.values()) and table["seeds"] == [0, 1]
    (paired,) = table["paired"]  # the bundle against FIFO on the same two seeds
    assert paired["n"] == 2 and paired["reference"] == "tiny-job/v1[greedy]"


# ---- the env's registration follows the Ray job ----------------------------------------------
def test_env_registration_reaches_runners_of_a_later_job_in_the_same_process(
    ray_cluster: Cluster,
) -> None:
    """A process that trained on one Ray (the multi-node test's cluster, a notebook's local Ray)
    and then attaches to another is a new job; Ray caches the first job's id as the registry's
    key, so its own ``register_env`` left the env unknown to the new job's runners (CI failed so
    once). Each registration now keys by the job connected at that moment."""
    import ray

    from taktline.training.rllib_module import ENV_NAME, register_env

    @ray.remote(num_cpus=0)
    def runner_sees_env() -> bool:
        from ray.tune.registry import ENV_CREATOR, _global_registry

        return bool(_global_registry.contains(ENV_CREATOR, ENV_NAME))

    seen = []
    for address in ("local", ray_cluster.address):
        extra = {"num_cpus": 1} if address == "local" else {}
        ray.init(address=address, include_dashboard=False, log_to_driver=False, **extra)
        try:
            register_env()
            seen.append(ray.get(runner_sees_env.remote(), timeout=120))
        finally:
            ray.shutdown()
    assert seen == [True, True]


# ---- fault tolerance: a dying env runner ------------------------------------------------------
def test_killed_env_runner_is_restarted_and_training_continues(
    ray_cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ray.util.state import list_actors

    from taktline.training import rllib_backend
    from taktline.training.config import validate_config
    from taktline.training.rllib_runner import MaskedEnvRunner

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = validate_config(
        tiny_config(
            "tiny-kill",
            **{
                "hyperparameters.num_env_runners": 2,
                "n_envs": 2,
                "hyperparameters.n_steps": 200,
                "budget.total_timesteps": 2000,
                "checkpoint.every_steps": 1_000_000,
                "tracking.register_model": False,
            },
        )
    )
    killed: list[int] = []
    seen: list[set[int]] = []

    def runner_pids() -> set[int]:
        actors = list_actors(
            address=ray_cluster.address,
            filters=[("class_name", "=", MaskedEnvRunner.__name__), ("state", "=", "ALIVE")],
        )
        return {int(a.pid) for a in actors}

    def kill_one(metrics: dict[str, float]) -> None:
        pids = runner_pids()
        seen.append(pids)
        if not killed:
            victim = min(pids)
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)
        elif len(pids) < 2:
            # give Ray the time to start the replacement process (seconds on a busy machine)
            # rather than spending the training budget on it
            deadline = time.monotonic() + 120
            while len(runner_pids()) < 2 and time.monotonic() < deadline:
                time.sleep(0.5)

    import ray

    try:
        result = rllib_backend.train(cfg, address=ray_cluster.address, on_iteration=kill_one)
    finally:
        ray.shutdown()  # leave no connection behind for other tests of the session

    assert result.num_timesteps >= 2000
    assert killed and len(seen[0]) == 2
    later = set().union(*seen[2:])
    assert killed[0] not in later
    assert later - seen[0], "no replacement env runner appeared"
    client = mlflow_client(tmp_path)
    healthy = [m.value for m in _history(client, result.run_id, "ray.healthy_env_runners")]
    restarts = [m.value for m in _history(client, result.run_id, "ray.env_runner_restarts")]
    # whether an iteration ran while one runner was down depends on restart timing; that RLlib
    # restarted it (the callback waited for the replacement) and both serve at the end do not
    assert healthy[0] == 2 and healthy[-1] == 2, healthy
    assert restarts[0] == 0 and restarts[-1] >= 1, restarts


# ---- fault tolerance: a killed driver resumes -------------------------------------------------
def _wait_for_checkpoint(
    runs_dir: Path, min_steps: int, proc: subprocess.Popen[str], timeout_s: float = 300
) -> tuple[str, int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for state in runs_dir.glob("*/checkpoints/state.json"):
            try:
                steps = int(json.loads(state.read_text())["num_timesteps"])
            except (ValueError, KeyError, OSError):
                continue
            if steps >= min_steps:
                return state.parent.parent.name, steps
        if proc.poll() is not None:
            raise AssertionError(
                f"driver ended early ({proc.returncode}):\n"
                + (proc.stdout.read() if proc.stdout else "")[-3000:]
            )
        time.sleep(0.2)
    raise AssertionError("no checkpoint appeared")


def test_killed_driver_resumes_same_mlflow_run_and_iteration_count(
    ray_cluster: Cluster, tmp_path: Path
) -> None:
    cfg = tiny_config(
        "tiny-resume", **{"budget.total_timesteps": 2000, "tracking.register_model": False}
    )
    path = write_config(tmp_path, cfg)
    env = ray_cluster.env()
    env.pop("MLFLOW_TRACKING_URI", None)
    driver = subprocess.Popen(
        train_cmd(path),
        cwd=tmp_path,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        run_id, ck_steps = _wait_for_checkpoint(tmp_path / "runs", 800, driver)
    finally:
        if driver.poll() is None:  # the driver dies as under an OOM killer or a preemption
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(30)
        if driver.stdout:
            driver.stdout.close()
    killed_at_ms = time.time() * 1000
    assert driver.returncode == -signal.SIGKILL

    # the resumed driver names the cluster with --address instead of RAY_ADDRESS
    resumed = subprocess.run(
        [
            sys.executable,
            "-m",
            "taktline.cli_train",
            "train",
            "--resume",
            run_id,
            "--address",
            ray_cluster.address,
            "--json",
        ],
        cwd=tmp_path,
        env={k: v for k, v in env.items() if k != "RAY_ADDRESS"},
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"run {run_id} (resumed at step" in resumed.stderr.replace("\n", " ")
    summary = json.loads(resumed.stdout[resumed.stdout.index("{") :])
    assert summary["run_id"] == run_id
    assert summary["num_timesteps"] >= 2000

    client = mlflow_client(tmp_path)
    exp = client.get_experiment_by_name("ray-tests")
    assert [r.info.run_id for r in client.search_runs([exp.experiment_id])] == [run_id]
    assert client.get_run(run_id).info.status == "FINISHED"
    history = _history(client, run_id, "train.iteration")
    before = [int(m.value) for m in history if m.timestamp < killed_at_ms]
    after = [int(m.value) for m in history if m.timestamp >= killed_at_ms]
    checkpoint_iteration = ck_steps // 400
    assert before[:checkpoint_iteration] == list(range(1, checkpoint_iteration + 1))
    # the resumed driver continues counting after the checkpoint (it does not start at 1)
    assert after == list(range(checkpoint_iteration + 1, after[-1] + 1))
    assert after[-1] == summary["num_timesteps"] // 400
