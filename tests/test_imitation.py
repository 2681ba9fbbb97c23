"""``taktline imitate``: DAgger on the lookahead's labels gives a bundle that loads, decides only
feasible jobs, imitates better than the majority class, and is not registered unless it wins."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

import taktline.envs  # noqa: F401  (registers the env ids)
from taktline.agents.networks import MaskedMLP
from taktline.agents.policies import NeuralPolicy, load_policy
from taktline.cli import app
from taktline.errors import PolicyError
from taktline.training.imitation import Dataset, ImitationConfig, train_network
from tests.ray_support import Cluster
from tests.test_lookahead import CHANGEOVER_LINE

# the settings the tests were sized on: an expert that deviates from FIFO often enough for 4
# short iterations to learn from (the defaults, margin 3 and objective work, deviate less)
EXPERT = "LOOKAHEAD(base=FIFO,horizon=15,k=3,margin=1.5,objective=profit)"
NAME = "imitate-test"


@pytest.fixture(scope="module")
def line_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = {**CHANGEOVER_LINE, "name": "imitate-test", "horizon": 160.0, "warmup": 20.0}
    path = tmp_path_factory.mktemp("lines") / "changeover.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="module")
def run(line_file: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One short DAgger run through the CLI (4 iterations of 3 episodes; ~30 s on 2 busy
    cores), its JSON result and the folder holding its embedded MLflow store.

    The budget is iterations, not minutes, so the run is the same on a slow machine. On these
    seeds the learner is level with the best rule SAME (n.s.), so the registry stays empty."""
    root = tmp_path_factory.mktemp("imitate")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        # a module-scoped fixture runs before the per-test MLflow isolation (conftest): an
        # earlier module's store URI left in the environment would take the run elsewhere
        for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
            mp.delenv(var, raising=False)
        out = CliRunner().invoke(
            app,
            [
                "imitate",
                str(line_file),
                "--expert",
                EXPERT,
                "--minutes",
                "10",
                "--iterations",
                "4",
                "--episodes-per-iter",
                "3",
                "--rules",
                "FIFO,SPT,SAME",
                "--no-expert-eval",
                "--eval-episodes",
                "4",
                "--out",
                str(root / "bundle"),
                "--register",
                NAME,
                "--save-states",
                str(root / "states.npz"),
                "--json",
            ],
        )
    assert out.exit_code == 0, out.output
    return {"data": json.loads(out.stdout), "root": root}


@pytest.mark.slow
def test_saved_states_restart_dagger_without_relabelling(
    run: dict[str, Any], line_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The states a run saved are the states it learned from; a run started from them trains
    on them first (here another network, the slot scorer: the labels do not depend on it),
    then goes on collecting (new seeds) with the learner in the loop."""
    saved, meta = Dataset.load(run["root"] / "states.npz")
    assert len(saved) == run["data"]["dataset_size"] and meta["expert"] == EXPERT
    assert meta["episodes"] == 12 and any(saved.held_out) and not all(saved.held_out)
    assert all(m[a] for m, a in zip(saved.mask, saved.label, strict=True))
    departs = [b != a for b, a in zip(saved.base, saved.label, strict=True)]
    assert any(departs)  # the expert's estimated gain is positive exactly where it departs
    assert [g > 0 for g in saved.gain] == departs and min(saved.gain) == 0.0
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = CliRunner().invoke(
        app,
        [
            "imitate", str(line_file), "--expert", EXPERT, "--minutes", "10",
            "--iterations", "2", "--episodes-per-iter", "1", "--rules", "FIFO,SAME",
            "--no-expert-eval", "--eval-episodes", "2", "--out", str(tmp_path / "b"),
            "--states", str(run["root"] / "states.npz"), "--departure-weight", "3",
            "--network", "slots", "--json",
        ],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    policy = load_policy(data["bundle"])  # the slot scorer's bundle plays like any other
    assert isinstance(policy, NeuralPolicy)
    assert policy.bundle.network_spec["class"] == "slots"
    history = data["history"]
    assert history[0]["iteration"] == 0 and history[0]["dataset_size"] == len(saved)
    assert [h["beta"] for h in history[1:]] == [0.5]  # the learner is in the loop at once
    assert history[-1]["dataset_size"] > len(saved)


def test_gain_weighting_counts_clear_departures_more_than_marginal_ones() -> None:
    from taktline.training.imitation import _state_weights

    departs = torch.tensor([False, True, True, False, True])
    gain = torch.tensor([0.0, 30.0, 10.0, 0.0, 20.0])
    plain = _state_weights(departs, gain, ImitationConfig(line="serial5", departure_weight=4))
    assert plain.tolist() == [1.0, 4.0, 4.0, 1.0, 4.0]
    cfg = ImitationConfig(line="serial5", departure_weight=4, weight_by_gain=True)
    by_gain = _state_weights(departs, gain, cfg)
    assert by_gain.tolist() == pytest.approx([1.0, 6.0, 2.0, 1.0, 4.0])  # mean departure: 4


def _rare_departures(n: int, seed: int) -> Dataset:
    """Two feasible jobs; the base rule always takes job 0; where feature 0 > 1 (about 16% of
    states) the expert departs to job 1 four times in ten, elsewhere never."""
    rng = np.random.default_rng(seed)
    data = Dataset()
    for i in range(n):
        x = rng.normal(size=4).astype(np.float32)
        label = int(x[0] > 1.0 and rng.random() < 0.4)
        data.obs.append(x)
        data.mask.append(np.ones(2, bool))
        data.label.append(label)
        data.base.append(0)
        data.held_out.append(i % 5 == 0)
        data.gain.append(float(label))
    return data


@pytest.mark.parametrize(("weight", "learns_departures"), [(1.0, False), (8.0, True)])
def test_departure_weight_makes_rare_departures_worth_learning(
    weight: float, learns_departures: bool
) -> None:
    """Plain cross-entropy copies the base rule where the expert departs only 4 times in 10;
    weighting departures 8x makes them the likelier class there (0.4 * 8 > 0.6), so the
    network departs where the expert tends to and nowhere else."""
    data = _rare_departures(3000, seed=0)
    cfg = ImitationConfig(line="serial5", departure_weight=weight, epochs=30, patience=30)
    torch.manual_seed(0)
    net = MaskedMLP(4, 2, (32,), "relu")
    metrics = train_network(net, data, cfg, torch.Generator().manual_seed(0))
    assert 0.0 < metrics["heldout_departure_share"] < 0.15
    x = torch.from_numpy(np.asarray(data.obs, np.float32))
    picks = net(x, torch.ones(len(x), 2, dtype=torch.bool)).argmax(1).numpy()
    region = x[:, 0].numpy() > 1.0
    assert picks[~region].mean() < 0.02  # never departs where the expert never does
    if learns_departures:
        assert picks[region].mean() > 0.6 and metrics["heldout_departure_accuracy"] > 0.6
    else:
        assert picks[region].mean() < 0.2 and metrics["heldout_departure_accuracy"] < 0.2


@pytest.mark.slow
def test_dagger_bundle_loads_and_decides_only_feasible_jobs(run: dict[str, Any]) -> None:
    data = run["data"]
    policy = load_policy(data["bundle"])
    assert isinstance(policy, NeuralPolicy) and policy.name == data["policy"]
    lineage = policy.bundle.lineage
    assert lineage["expert"] == EXPERT and lineage["backend"] == "imitation"
    assert lineage["iterations"] == 4 and lineage["dataset_size"] == data["dataset_size"] > 0
    assert lineage["seed"] == 0 and lineage["verdict"]["won"] is False
    env = gym.make("taktline/LineDispatch-v0", disable_env_checker=True, **policy.bundle.env_kwargs)
    obs, _ = env.reset(seed=123)
    done, steps, choices = False, 0, set()
    while not done:
        mask = env.unwrapped.action_masks()  # type: ignore[attr-defined]
        a = policy.choose(env, obs, mask)
        assert mask[a], f"step {steps}: chose masked slot {a} of {mask.astype(int)}"
        choices.add(a)
        obs, _, term, trunc, _ = env.step(a)
        done, steps = term or trunc, steps + 1
    env.close()
    assert steps > 50 and len(choices) > 1  # not a constant slot: it learned to pick


@pytest.mark.slow
def test_dagger_imitates_better_than_the_majority_class_on_held_out_states(
    run: dict[str, Any],
) -> None:
    history = run["data"]["history"]
    assert [h["beta"] for h in history] == [1.0, 0.5, 0.25, 0.125]  # expert first, then mixed
    sizes = [h["dataset_size"] for h in history]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]  # the dataset aggregates
    last = history[-1]
    assert last["heldout_states"] >= 30
    assert last["heldout_accuracy"] > last["majority_accuracy"] + 0.05
    tp = run["data"]["throughput"]
    assert tp["labels"] == last["dataset_size"] and tp["env_steps"] >= tp["labels"]
    shares = tp["share_expert"] + tp["share_env"] + tp["share_network"]
    assert 0 < shares <= 1.0


@pytest.mark.slow
def test_dagger_policy_that_does_not_beat_the_best_rule_is_not_registered(
    run: dict[str, Any],
) -> None:
    import mlflow

    data, root = run["data"], run["root"]
    verdict = data["verdict"]
    assert verdict["baseline"] == data["reference"] == "SAME"
    assert verdict["won"] is False and verdict["n"] == 4
    assert verdict["ci95"][1] >= 0  # the paired CI does not lie above zero
    assert data["registered_version"] is None
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert [m.name for m in client.search_registered_models()] == []
    mlrun = client.get_run(data["mlflow_run_id"])
    assert mlrun.data.tags["taktline.verdict"] == "lost"
    assert mlrun.data.tags["taktline.baseline"] == "SAME"
    history = client.get_metric_history(data["mlflow_run_id"], "heldout_accuracy")
    assert len(history) == 4  # one per iteration
    row = next(r for r in data["rows"] if r["policy"] == data["policy"])
    assert np.isfinite(row["latency_p50_ms"]) and row["decisions"] > 0


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--minutes", "0"], "--minutes"),
        (["--iterations", "-1"], "--iterations"),
        (["--episodes-per-iter", "0"], "--episodes-per-iter"),
        (["--eval-episodes", "1"], "--eval-episodes"),
        (["--expert", "LOOKAHEAD(k=0)"], "LOOKAHEAD k"),
        (["--rules", ","], "--rules: no rule named"),
        (["--departure-weight", "0.5"], "--departure-weight"),
        (["--states", "no_such_states.npz"], "--states: no file"),
        (["--save-states", "states.csv"], "--save-states"),
    ],
)
def test_imitate_bad_input_is_one_clear_error(
    args: list[str], named: str, line_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    out = CliRunner().invoke(app, ["imitate", str(line_file), *args])
    assert out.exit_code == 2, out.output
    lines = [x for x in out.output.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and named in lines[0], out.output
    assert not (tmp_path / "mlflow.db").exists()  # refused before any work


def test_the_slot_scorer_judges_a_job_by_what_it_is_not_where_it_waits() -> None:
    """Permuting the queue slots permutes the scores the same way (one scorer shared over the
    slots), masked slots get the masked logit, and the bundle's network spec rebuilds it."""
    from taktline.agents.networks import MASKED_LOGIT, SlotScorer, build_network

    torch.manual_seed(0)
    head, slots, size = 11, 6, 5
    net = SlotScorer(head + slots * size, slots, size, hidden=16).eval()
    x = torch.randn(3, head + slots * size)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [1, 0, 1, 0, 1, 0]]).bool()
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    xp = torch.cat([x[:, :head], x[:, head:].reshape(3, slots, size)[:, perm].reshape(3, -1)], 1)
    with torch.no_grad():
        a, b = net(x, mask), net(xp, mask[:, perm])
    assert (a[~mask] == MASKED_LOGIT).all() and (a[mask] > MASKED_LOGIT).all()
    assert torch.allclose(a[:, perm][mask[:, perm]], b[mask[:, perm]], atol=1e-5)
    spec = {"class": "slots", "kwargs": {"obs_dim": head + slots * size, "n_actions": slots,
                                         "slot_size": size, "hidden": 16}}  # fmt: skip
    again = build_network(spec)
    again.load_state_dict(net.state_dict())
    with torch.no_grad():
        assert torch.equal(again.eval()(x, mask), a)
    with pytest.raises(PolicyError, match="cannot hold"):
        SlotScorer(10, 6, 5)


def _finetune_config(bundle: Path, hidden: list[int], lr: float) -> dict[str, Any]:
    env_kwargs = json.loads((bundle / "bundle.json").read_text())["env_kwargs"]
    return {
        "name": "finetune-test",
        "env": {"id": "taktline/LineDispatch-v0", "kwargs": env_kwargs},
        "algorithm": "maskable_ppo",
        "policy": {
            "network": "mlp",
            "kwargs": {"hidden": hidden, "activation": "relu"},
            "init": str(bundle),
        },
        "hyperparameters": {"learning_rate": lr, "n_steps": 64, "batch_size": 32, "n_epochs": 1},
        "budget": {"total_timesteps": 128},
        "n_envs": 1,
        "eval": {"every_steps": 1000, "episodes": 2, "seed": 7000, "baselines": ["SAME"]},
        "checkpoint": {"every_steps": 1000},
        "tracking": {"experiment": "finetune-test", "alias": "candidate"},
        "progress": False,
    }


def _assert_same_weights(root: Path, stdout: str, bundle: Path) -> None:
    """The run's (``train --json`` output) best bundle holds exactly ``bundle``'s network."""
    data = json.loads(stdout[stdout.index("{") :])
    tuned = load_policy(str(root / data["best_bundle"]))
    start = load_policy(str(bundle))
    assert isinstance(tuned, NeuralPolicy) and isinstance(start, NeuralPolicy)
    a, b = tuned.bundle.network.state_dict(), start.bundle.network.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_ppo_fine_tuning_starts_from_the_imitation_bundle(
    run: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``policy.init``: PPO's actor starts as the DAgger bundle's network (with a zero learning
    rate the run exports the very same weights); a bundle of another layout is named."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    bundle = Path(run["data"]["bundle"])
    cfg = tmp_path / "ft.yaml"
    cfg.write_text(yaml.safe_dump(_finetune_config(bundle, [128, 128], 0.0)))
    out = CliRunner().invoke(app, ["train", str(cfg), "--json"])
    assert out.exit_code == 0, out.output
    _assert_same_weights(tmp_path, out.stdout, bundle)
    cfg.write_text(yaml.safe_dump(_finetune_config(bundle, [64, 64], 1e-4)))
    out = CliRunner().invoke(app, ["train", str(cfg)])
    assert out.exit_code == 2 and "policy.init" in out.output and "hidden" in out.output


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_rllib_fine_tuning_starts_from_the_imitation_bundle(
    run: dict[str, Any], ray_cluster: Cluster, tmp_path: Path
) -> None:
    """``policy.init`` on the rllib backend: the learner's actor starts as
    the DAgger bundle's network (a zero learning rate exports the very same weights, on a real
    Ray cluster); a bundle of another layout is named before any training."""
    bundle = Path(run["data"]["bundle"])
    cfg = _finetune_config(bundle, [128, 128], 0.0)
    cfg["backend"] = "rllib"
    cfg["hyperparameters"] = {
        "learning_rate": 0.0,
        "n_steps": 200,
        "batch_size": 100,
        "n_epochs": 1,
        "num_env_runners": 1,
        "num_envs_per_env_runner": 1,
    }
    cfg["budget"] = {"total_timesteps": 200}
    path = tmp_path / "ft.yaml"
    path.write_text(yaml.safe_dump(cfg))

    def train(config: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "taktline.cli", "train", str(config), "--json"],
            cwd=tmp_path,
            env=ray_cluster.env(),
            capture_output=True,
            text=True,
            timeout=540,
        )

    proc = train(path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    _assert_same_weights(tmp_path, proc.stdout, bundle)
    cfg["policy"]["kwargs"]["hidden"] = [64, 64]
    path.write_text(yaml.safe_dump(cfg))
    proc = train(path)
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "policy.init" in proc.stderr and "hidden" in proc.stderr


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_labelling_on_ray_workers_collects_the_same_states(
    run: dict[str, Any], line_file: Path, ray_cluster: Cluster, tmp_path: Path
) -> None:
    """``--workers 2`` labels the episodes as Ray tasks on the cluster of RAY_ADDRESS; each
    episode carries its own seeds, so the states are those collected in one process (the
    module's run, same settings), state for state."""
    args = ["imitate", str(line_file), "--expert", EXPERT, "--minutes", "10"]
    args += ["--iterations", "4", "--episodes-per-iter", "3", "--rules", "SAME"]
    args += ["--no-expert-eval", "--eval-episodes", "2", "--out", str(tmp_path / "b")]
    args += ["--save-states", str(tmp_path / "s.npz"), "--workers", "2", "--json"]
    data = ray_cluster.run_cli(args, tmp_path)
    on_ray, _ = Dataset.load(tmp_path / "s.npz")
    here, _ = Dataset.load(run["root"] / "states.npz")
    assert len(on_ray) == len(here) > 0
    assert on_ray.label == here.label and on_ray.held_out == here.held_out
    assert np.array_equal(np.asarray(on_ray.obs), np.asarray(here.obs))
    tp = data["throughput"]
    assert tp["workers"] == 2 and tp["labels"] == len(on_ray)
