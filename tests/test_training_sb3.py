"""SB3 training end to end: export equals SB3, tracked runs (embedded and server), registry,
and resuming a killed run from its checkpoint."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest

import taktline.envs  # noqa: F401
from taktline.training.config import load_config

TINY_JOBSHOP = [
    "name=tiny-jobshop",
    "env.kwargs.instance.n_jobs=5",
    "env.kwargs.instance.n_machines=4",
    "env.kwargs.max_jobs=5",
    "env.kwargs.max_machines=4",
    "policy.kwargs.d_model=16",
    "policy.kwargs.n_heads=2",
    "policy.kwargs.n_layers=1",
    "hyperparameters.n_steps=64",
    "hyperparameters.batch_size=32",
    "hyperparameters.n_epochs=2",
    "budget.total_timesteps=256",
    "budget.max_minutes=null",
    "eval.every_steps=128",
    "eval.episodes=2",
    "eval.baselines=[SPT,MWKR]",
    "checkpoint.every_steps=128",
    "n_envs=1",
    "vec_env=dummy",
    "progress=false",
    "tracking.experiment=tests",
]


RELEASE = {"line": "serial5", "max_release": 3, "action_mode": "wip_cap"}  # every action legal


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Any:
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize(
    ("algorithm", "network", "env_id", "env_kwargs"),
    [
        ("maskable_ppo", "attention", "taktline/JobShop-v0", {"instance": "ft06"}),
        ("maskable_ppo", "mlp", "taktline/LineDispatch-v0", {"line": "serial5", "max_queue": 4}),
        ("ppo", "mlp", "taktline/LineRelease-v0", RELEASE),
        ("dqn", "mlp", "taktline/LineRelease-v0", RELEASE),
    ],
)
def test_exported_bundle_acts_exactly_like_the_sb3_policy(
    algorithm: str, network: str, env_id: str, env_kwargs: dict[str, Any]
) -> None:
    from stable_baselines3.common.env_util import make_vec_env

    from taktline.agents.bundle import PolicyBundle
    from taktline.training.sb3_backend import _algorithm, make_env
    from taktline.training.sb3_policies import export_network, sb3_policy_setup

    cfg = load_config(
        "bodyshop_dispatch",
        [
            f"algorithm={algorithm}",
            f"policy.network={network}",
            f"env.id={env_id}",
            f"env.kwargs={json.dumps(env_kwargs)}",
            "policy.kwargs={}",
        ],
    )
    venv = make_vec_env(lambda: make_env(env_id, env_kwargs), n_envs=1, seed=0)
    small = {"d_model": 16, "n_heads": 2, "n_layers": 1} if network == "attention" else {}
    policy, pkw, spec = sb3_policy_setup(
        network, small, venv.observation_space, venv.action_space, algorithm
    )
    ppo_kw = {"n_steps": 32, "batch_size": 16, "n_epochs": 2}
    extra = {"learning_starts": 0} if algorithm == "dqn" else ppo_kw
    model = _algorithm(cfg)(policy, venv, policy_kwargs=pkw, seed=0, device="cpu", **extra)
    model.learn(64)  # move the weights away from their initialization
    bundle = PolicyBundle(
        env_id,
        env_kwargs,
        None,
        venv.observation_space,
        venv.action_space,
        export_network(model, spec),
        spec,
    )
    env = make_env(env_id, env_kwargs)
    obs, _ = env.reset(seed=1)
    for _ in range(25):
        mask = env.unwrapped.action_masks()  # type: ignore[attr-defined]
        mine = int(bundle.act(obs[None], mask[None])[0])
        if algorithm == "maskable_ppo":
            theirs, _ = model.predict(obs, action_masks=mask, deterministic=True)
        else:
            # unmasked SB3 (ppo, dqn) is compared on RELEASE, where every action is legal, so
            # its argmax and the bundle's masked argmax must agree exactly
            assert mask.all(), "an unmasked algorithm needs an env where every action is legal"
            theirs, _ = model.predict(obs, deterministic=True)
        assert mask[mine] and mine == int(theirs)
        obs, _, term, trunc, _ = env.step(mine)
        if term or trunc:
            obs, _ = env.reset()
    venv.close()


def _check_tracked_run(result: Any, name: str) -> None:
    """What a finished run must have left in the tracking store and the registry."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from taktline.agents.policies import load_policy

    client = MlflowClient()
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["algorithm"] == "maskable_ppo" and params["env.kwargs.max_jobs"] == "5"
    history = client.get_metric_history(result.run_id, "eval.makespan")
    assert next(m.step for m in history) == 0 and len(history) >= 3
    assert any(k.startswith("train.") for k in run.data.metrics)
    assert "baseline.MWKR.makespan" in run.data.metrics
    files = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"learning_curve.png", "gantt.png", "config.json", "checkpoints", "eval"} <= files
    version = client.get_model_version(name, result.model_version)
    assert version.tags["verdict"] == ("won" if result.verdict["won"] else "lost")
    aliases = dict(client.get_registered_model(name).aliases)
    if result.verdict["won"]:  # only a network that beat the best rule gets the alias
        assert str(aliases["candidate"]) == result.model_version
    else:
        assert "candidate" not in aliases
    policy = load_policy(f"models:/{name}/{result.model_version}")
    assert policy.bundle.version == result.model_version  # type: ignore[attr-defined]
    assert policy.bundle.lineage["mlflow_run_id"] == result.run_id  # type: ignore[attr-defined]
    env = gym.make("taktline/JobShop-v0", instance="ft06", max_jobs=6, max_machines=6)
    obs, _ = env.reset(seed=0)
    mask = env.unwrapped.action_masks()  # type: ignore[attr-defined]
    model = mlflow.pyfunc.load_model(f"models:/{name}/{result.model_version}")
    action = model.predict({"obs": obs[None], "mask": mask[None]})
    assert mask[int(action[0])]  # the pyfunc model runs a 5x4-trained policy on a 6x6 shop


@pytest.mark.slow
def test_tiny_training_run_on_the_embedded_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from taktline.training.sb3_backend import train

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = load_config("jobshop_10x10_attention", TINY_JOBSHOP)
    result = train(cfg)
    assert result.num_timesteps >= 256 and result.best_bundle is not None
    assert (tmp_path / "mlflow.db").is_file()
    assert any((tmp_path / "mlartifacts").rglob("bundle.json"))
    _check_tracked_run(result, "tiny-jobshop")
    assert result.evaluation is not None
    assert {r["policy"] for r in result.evaluation["summary"]} == {
        "tiny-jobshop[greedy]",
        "SPT",
        "MWKR",
    }


@pytest.mark.slow
@pytest.mark.mlflow_server
def test_tiny_training_run_against_a_real_mlflow_server(
    mlflow_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    from taktline.training import tracking
    from taktline.training.sb3_backend import train

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    cfg = load_config(
        "jobshop_10x10_attention",
        [*TINY_JOBSHOP, "name=tiny-server", "n_envs=2", "vec_env=subproc"],
    )
    result = train(cfg)
    assert mlflow.get_tracking_uri() == mlflow_server
    assert not (tmp_path / "mlflow.db").exists()  # everything went to the server
    _check_tracked_run(result, "tiny-server")
    # promote moves the alias; a missing version is a clear error
    tracking.promote("tiny-server", str(result.model_version), "production")
    from mlflow.tracking import MlflowClient

    prod = MlflowClient().get_model_version_by_alias("tiny-server", "production")
    assert str(prod.version) == result.model_version
    from taktline.errors import PolicyError

    with pytest.raises(PolicyError, match="version 7 not found; versions: \\[1\\]"):
        tracking.promote("tiny-server", "7", "production")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "taktline.cli_train", *args]


@pytest.mark.slow
def test_a_killed_run_resumes_exactly_from_its_last_checkpoint(tmp_path: Path) -> None:
    """kill -9 after a checkpoint, resume from the tracking store alone: the reward
    normaliser's statistics and the step counter come back, the run stops at its budget, and
    each baseline is logged once."""
    import pickle

    import mlflow
    from mlflow.tracking import MlflowClient

    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "OMP_NUM_THREADS": "1",
    }
    sets = [x for s in TINY_JOBSHOP for x in ("--set", s)]
    long_run = [
        *sets,
        "--set",
        "budget.total_timesteps=1000000",
        "--set",
        "name=tiny-resume",
        "--set",
        "normalize_reward=true",
        "--set",  # not a multiple of the 64-step rollout: checkpoints fall mid-rollout
        "checkpoint.every_steps=40",
        "--set",
        "eval.every_steps=100000",
    ]
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(
        _cli("train", "jobshop_10x10_attention", *long_run),
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    state_file: Path | None = None
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        found = list((tmp_path / "taktline-runs").glob("*/checkpoints/state.json"))
        try:
            if found and json.loads(found[0].read_text())["num_timesteps"] >= 128:
                state_file = found[0]
                break
        except (OSError, ValueError):  # swapped out between the glob and the read
            pass
        assert first.poll() is None, (tmp_path / "first.log").read_text()
        time.sleep(0.3)
    assert state_file is not None, "no checkpoint within 3 minutes"
    os.killpg(first.pid, signal.SIGKILL)  # no chance to clean up: a crash
    first.wait(timeout=30)
    log.close()
    run_id = state_file.parents[1].name
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    # what the store committed at the kill: the step and the normaliser's pickled statistics
    saved = mlflow.artifacts.load_dict(f"runs:/{run_id}/checkpoints/state.json")
    at_kill = saved["num_timesteps"]
    pkl = mlflow.artifacts.download_artifacts(
        run_id=run_id,
        artifact_path=f"checkpoints/{saved['slot']}/vecnormalize.pkl",
        dst_path=str(tmp_path / "at-kill"),
    )
    ret_rms = pickle.loads(Path(pkl).read_bytes()).ret_rms  # our own file, from this test
    assert ret_rms.count > 1  # statistics were gathered, not a fresh normaliser
    # resume from the tracking store alone (another machine): drop the local copy
    shutil.rmtree(tmp_path / "taktline-runs")
    target = at_kill + 100  # not on a rollout boundary of the resumed run either
    out = subprocess.run(
        _cli(
            "train",
            "--resume",
            run_id,
            "--set",
            f"budget.total_timesteps={target}",
            "--set",
            "eval.every_steps=64",
            "--json",
        ),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"resumed at step {at_kill}" in out.stderr
    summary = json.loads(out.stdout)
    client = MlflowClient()
    # (a) the resumed run starts from exactly the saved reward statistics
    for key in ("mean", "var", "count"):
        history = client.get_metric_history(run_id, f"resume.ret_rms.{key}")
        assert [(m.step, m.value) for m in history] == [(at_kill, float(getattr(ret_rms, key)))]
    # (b) the budget: one env (n_envs=1) steps at a time, so the run stops exactly at it
    assert summary["run_id"] == run_id and summary["num_timesteps"] == target
    assert summary["registered"] == "tiny-resume/1"
    final = json.loads(state_file.read_text())
    assert final["num_timesteps"] == summary["num_timesteps"]
    steps = [m.step for m in client.get_metric_history(run_id, "checkpoint.step")]
    assert at_kill in steps and max(steps) == summary["num_timesteps"]
    assert min(s for s in steps if s > at_kill) - at_kill <= 40  # continued, not restarted
    # (c) each baseline once per run, resume or not
    for rule in ("SPT", "MWKR"):
        history = client.get_metric_history(run_id, f"baseline.{rule}.makespan")
        assert [m.step for m in history] == [0], (rule, history)
