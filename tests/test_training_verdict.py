"""Training registers only what it learned and what won: the best checkpoint is a trained one,
the verdict against the best rule is played on held-out seeds and recorded with the version,
and only a win moves the alias. Checkpoints are verified before anything is unpickled."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from taktline.errors import SpecError
from taktline.training.config import load_config
from tests.test_training_sb3 import TINY_JOBSHOP

# lr 0: the network after training is the initial one, so the step-0 evaluation ties the
# final one; a tie must still not make the untrained step-0 network the best
UNTRAINED = [
    *TINY_JOBSHOP,
    "name=tiny-verdict",
    "hyperparameters.learning_rate=0.0",
    "eval.every_steps=100000",
    "eval.held_out_episodes=3",
    "normalize_reward=true",
]


def _cli(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "taktline.cli_train", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One tiny ``taktline train`` (a subprocess, its own embedded store)."""
    folder = tmp_path_factory.mktemp("verdict")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": "1"}
    sets = [x for s in UNTRAINED for x in ("--set", s)]
    out = _cli(["train", "jobshop_10x10_attention", *sets, "--json"], folder, env)
    assert out.returncode == 0, out.stderr[-3000:]
    return {"folder": folder, "uri": uri, "env": env, "out": out, "summary": json.loads(out.stdout)}


def _client(uri: str) -> Any:
    import mlflow

    mlflow.set_tracking_uri(uri)
    return mlflow.MlflowClient(uri, uri)


@pytest.mark.slow
def test_the_registered_network_is_a_trained_checkpoint_never_step_0(
    tiny_run: dict[str, Any],
) -> None:
    import mlflow

    summary = tiny_run["summary"]
    _client(tiny_run["uri"])
    name, version = summary["registered"].split("/")
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}"))
    bundle = json.loads(next(local.rglob("bundle.json")).read_text())
    # the final evaluation ties step 0 (lr 0); the trained checkpoint is chosen all the same
    assert bundle["lineage"]["num_timesteps"] == summary["num_timesteps"] >= 256
    assert bundle["lineage"]["verdict"] == summary["verdict"]  # recorded with the network


@pytest.mark.slow
def test_the_version_carries_the_held_out_verdict_and_only_a_win_gets_the_alias(
    tiny_run: dict[str, Any],
) -> None:
    from mlflow.exceptions import MlflowException

    summary = tiny_run["summary"]
    client = _client(tiny_run["uri"])
    name, version = summary["registered"].split("/")
    mv = client.get_model_version(name, version)
    verdict = summary["verdict"]
    tags = mv.tags
    assert tags["verdict"] == ("won" if verdict["won"] else "lost")
    assert tags["baseline"] == verdict["baseline"] in {"SPT", "MWKR"}
    assert float(tags["delta"]) == pytest.approx(verdict["delta"], rel=1e-5, abs=1e-9)
    assert json.loads(tags["ci95"]) == pytest.approx(verdict["ci95"], rel=1e-5, abs=1e-9)
    assert int(tags["n"]) == 3 and tags["p"] and tags["metric"] == "makespan"
    # held out: never the seeds that picked the checkpoint (eval.seed .. + episodes - 1)
    cfg = load_config("jobshop_10x10_attention", UNTRAINED)
    selection = {cfg.eval.seed + i for i in range(cfg.eval.episodes)}
    assert verdict["seeds"] == cfg.eval.held_out_seeds() and not selection & set(verdict["seeds"])
    # the verdict is the paired comparison with the better rule on those seeds
    values = summary["evaluation"]["values"]
    best_rule = min(("SPT", "MWKR"), key=lambda r: sum(values[r]))
    assert verdict["baseline"] == best_rule
    diffs = [p - b for p, b in zip(values["tiny-verdict[greedy]"], values[best_rule], strict=True)]
    assert verdict["delta"] == pytest.approx(sum(diffs) / len(diffs))
    assert verdict["won"] == (verdict["ci95"][1] < 0)  # makespan: lower is better
    stderr = tiny_run["out"].stderr
    if verdict["won"]:
        assert client.get_model_version_by_alias(name, "candidate").version == version
        assert f"beats the best rule {best_rule}" in stderr
    else:
        with pytest.raises(MlflowException):
            client.get_model_version_by_alias(name, "candidate")
        line = next(x for x in stderr.splitlines() if "does not beat the best rule" in x)
        assert f"{verdict['n']} held-out seeds" in line and "95% CI" in line


def _malicious_pickle(marker: Path) -> bytes:
    class Touch:
        def __reduce__(self) -> tuple[Any, tuple[str, str]]:
            return (open, (str(marker), "w"))

    return pickle.dumps(Touch())


@pytest.mark.slow
def test_a_tampered_checkpoint_in_the_store_is_refused_before_unpickling(
    tiny_run: dict[str, Any],
) -> None:
    import mlflow

    folder, summary = tiny_run["folder"], tiny_run["summary"]
    run_id = summary["run_id"]
    _client(tiny_run["uri"])
    state = mlflow.artifacts.load_dict(f"runs:/{run_id}/checkpoints/state.json")
    assert "vecnormalize.pkl" in state["files"] and "checkpoint.zip" in state["files"]
    stored = [p for p in (folder / "mlartifacts").rglob("vecnormalize.pkl")]
    target = next(p for p in stored if p.parent.name == state["slot"])
    marker = folder / "unpickled"
    target.write_bytes(_malicious_pickle(marker))
    (folder / "taktline-runs" / run_id).rename(folder / "elsewhere")  # resume from the store
    out = _cli(["train", "--resume", run_id], folder, tiny_run["env"])
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    assert (
        "vecnormalize.pkl: sha256" in out.stderr
        and state["files"]["vecnormalize.pkl"] in out.stderr
    )
    assert not marker.exists(), "the tampered pickle was loaded"


def test_verdict_is_a_win_only_when_the_paired_ci_excludes_zero() -> None:
    from taktline.agents.policies import load_policy
    from taktline.training.evaluate import evaluate
    from taktline.training.run import verdict_of

    kwargs = {"instance": {"generator": "taillard_like", "n_jobs": 6, "n_machines": 4}}
    ev = evaluate(
        [load_policy(n) for n in ("MWKR", "SPT", "FIFO")],
        "taktline/JobShop-v0",
        kwargs,
        episodes=8,
        seed=3,
        log=False,
    )
    for policy, rules in (("MWKR", ["SPT", "FIFO"]), ("SPT", ["MWKR", "FIFO"])):
        v = verdict_of(ev, policy, rules)
        assert v is not None
        best = min(rules, key=lambda r: sum(ev.values[r]))
        assert v["baseline"] == best and v["n"] == 8
        row = next(r for r in ev.paired(reference=best) if r["policy"] == policy)
        assert v["won"] == (row["diff_ci_high"] < 0)
        assert v["ci95"] == [row["diff_ci_low"], row["diff_ci_high"]]
    assert verdict_of(ev, "MWKR", []) is None  # nothing to beat: never a win


def test_held_out_seeds_must_not_overlap_the_selection_seeds() -> None:
    cfg = load_config("bodyshop_dispatch")
    held = cfg.eval.held_out_seeds()
    assert min(held) >= cfg.eval.seed + cfg.eval.episodes and len(held) == cfg.eval.episodes
    with pytest.raises(SpecError, match=r"eval: held_out_seed: .*overlap the selection seeds"):
        load_config("bodyshop_dispatch", [f"eval.held_out_seed={cfg.eval.seed + 2}"])
