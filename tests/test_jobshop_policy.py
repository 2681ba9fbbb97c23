"""The learned job-shop scheduler: features, batched roll-outs, weights, self-labeling, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from taktline.agents.jobshop_features import (
    N_FEATURES,
    InstanceTables,
    batch_features,
    unscheduled_load,
)
from taktline.agents.jobshop_hybrid import hybrid_solve
from taktline.agents.jobshop_policy import (
    LearnedScheduler,
    NetConfig,
    SchedulerNet,
    load_net,
    mirrored,
    policy_search,
    policy_solve,
    replay_features,
    rollout,
    save_net,
    trained_scheme,
    unmirror_start,
)
from taktline.agents.jobshop_search import _batch_row, _greedy
from taktline.cli import app
from taktline.envs.jobshop import JobShopState, check_schedule, load_bundled
from taktline.envs.jobshop.batch import JobShopBatch
from taktline.envs.jobshop.generators import taillard_like
from taktline.envs.jobshop.replay import replay_schedule
from taktline.envs.jobshop.taillard import taillard_instance
from taktline.errors import PolicyError, SpecError
from tests.ray_support import Cluster


def _net(seed: int = 0) -> SchedulerNet:
    torch.manual_seed(seed)
    return SchedulerNet(NetConfig(dim=16)).eval()


def test_features_match_a_direct_computation_from_the_schedule_state() -> None:
    inst = taillard_like(6, 5, np.random.default_rng(3))
    tables = InstanceTables(inst)
    state = JobShopState(inst)
    batch = JobShopBatch(inst, 1)
    rng = np.random.default_rng(1)
    for _ in range(9):  # walk both to the same partial schedule
        j = int(rng.choice(state.candidate_jobs))
        state.apply(j)
        batch.apply(np.array([j]))
    f = batch_features(tables, batch, unscheduled_load(tables, batch.next_op))[0]
    assert f.shape == (6, N_FEATURES)
    cands = set(state.candidate_jobs)
    assert {j for j in range(6) if f[j, 0] == 1.0} == cands
    mp, lb = tables.mean_p, inst.trivial_lower_bound()
    m_of, p_of = inst.machines_matrix(), inst.times_matrix()

    def unscheduled(m: int) -> int:
        return sum(
            p_of[k][q] for k in range(6) for q in range(state.next_op[k], 5) if m_of[k][q] == m
        )

    bound = [state.machine_available[m] + unscheduled(m) for m in range(5)]
    neck = int(np.argmax(bound))
    for j in range(6):
        i = state.next_op[j]
        route = range(i, len(inst.jobs[j]))
        on_neck = [q for q in route if m_of[j][q] == neck]
        assert f[j, 23] == float(bool(on_neck))
        if on_neck:
            head = sum(p_of[j][q] for q in route if q < on_neck[0])
            tail = sum(p_of[j][q] for q in route if q > on_neck[0])
            assert f[j, 21] == pytest.approx(head / lb, rel=1e-5)
            assert f[j, 22] == pytest.approx(tail / lb, rel=1e-5)
        else:
            assert f[j, 21] == f[j, 22] == 0.0
        congestion = max((bound[m_of[j][q]] for q in route), default=0)
        assert f[j, 24] == pytest.approx(congestion / lb, rel=1e-5)
        if i == len(inst.jobs[j]):
            assert f[j, 1] == 1.0
            continue
        m = m_of[j][i]
        est = max(state.job_ready[j], state.machine_available[m])
        unscheduled_on_m = unscheduled(m)
        assert f[j, 2] == pytest.approx(p_of[j][i] / mp, rel=1e-5)
        assert f[j, 5] == pytest.approx(state.remaining_work(j) / lb, rel=1e-5)
        assert f[j, 7] == pytest.approx((est + state.remaining_work(j)) / lb, rel=1e-5)
        assert f[j, 9] == pytest.approx(unscheduled_on_m / lb, rel=1e-5)


def test_greedy_rows_agree_and_sampled_row_zero_is_the_greedy_schedule() -> None:
    inst = load_bundled("ft06")
    net = _net()
    rng = np.random.default_rng(0)
    greedy = rollout(net, inst, 3, True, rng)
    sampled = rollout(net, inst, 32, False, rng)
    assert greedy is not None and sampled is not None
    assert len(set(greedy.makespan.tolist())) == 1
    assert sampled.makespan[0] == greedy.makespan[0]
    assert len(set(sampled.makespan.tolist())) > 1  # sampling explores


@pytest.mark.parametrize("scheme", ["active", "non-delay"])
def test_every_rollout_is_a_feasible_schedule_that_replays_to_its_makespan(scheme: str) -> None:
    inst = taillard_like(8, 6, np.random.default_rng(5))
    r = rollout(_net(), inst, 16, False, np.random.default_rng(2), scheme)
    assert r is not None

    for row in range(16):
        schedule = _batch_row(inst, r.start[row])
        assert check_schedule(inst, schedule) == r.makespan[row]
        assert replay_schedule(inst, schedule).makespan <= r.makespan[row]


def test_replaying_a_rollouts_choices_gives_the_features_it_was_decided_on() -> None:
    inst = taillard_like(7, 5, np.random.default_rng(8))
    r = rollout(_net(), inst, 4, False, np.random.default_rng(4))
    assert r is not None
    x, mask, act = replay_features(inst, r.actions[:, 2])
    assert x.shape[1:] == (7, N_FEATURES) and len(x) == len(mask) == len(act) > 0
    assert (mask.sum(axis=1) > 1).all()  # forced steps are left out
    assert mask[np.arange(len(act)), act].all()  # every label is a candidate
    # the replayed choices rebuild the same schedule
    batch = JobShopBatch(inst, 1)
    for a in r.actions[:, 2]:
        if not batch.done:
            batch.apply(np.array([a]))
    assert batch.makespan[0] == r.makespan[2]


def test_saved_weights_load_to_the_same_scores_and_bad_files_are_named(tmp_path: Path) -> None:
    net = _net(3)
    path = tmp_path / "w.npz"
    save_net(net, path, {"config_run": {"scheme": "non-delay"}})
    loaded, meta = load_net(path)
    assert trained_scheme(meta) == "non-delay"
    inst = taillard_like(6, 4, np.random.default_rng(0))
    batch = JobShopBatch(inst, 2)
    tables = InstanceTables(inst)
    x = torch.from_numpy(batch_features(tables, batch, unscheduled_load(tables, batch.next_op)))
    mask = torch.from_numpy(batch.mask)
    with torch.no_grad():
        assert torch.equal(net(x, mask), loaded(x, mask))
    bad = tmp_path / "bad.npz"
    bad.write_text("not weights")
    with pytest.raises(PolicyError, match="not a job-shop policy file"):
        load_net(bad)
    old = tmp_path / "old.npz"
    arrays = {k: v.numpy() for k, v in net.state_dict().items()}
    np.savez(old, __meta__=np.array(json.dumps({"n_features": 7, "config": {}})), **arrays)
    with pytest.raises(PolicyError, match="retrain"):
        load_net(old)


def test_best_of_n_is_never_worse_than_greedy_and_search_gives_up_past_its_deadline() -> None:
    inst = taillard_instance("ta01")
    sched = LearnedScheduler(_net())
    greedy = policy_solve(inst, time_limit_s=0.0, scheduler=sched)
    best = policy_solve(inst, time_limit_s=5.0, samples=64, scheduler=sched)
    assert greedy.iterations == 1 and best.iterations == 64
    assert best.makespan <= greedy.makespan
    assert check_schedule(inst, best.schedule) == best.makespan
    assert policy_search(inst, 1e-6, scheduler=sched) is None


def test_a_mirror_schedule_read_backwards_is_a_schedule_of_the_instance_with_its_makespan() -> None:
    inst = taillard_like(9, 5, np.random.default_rng(7))
    mirror = mirrored(inst)
    assert [list(reversed(ops)) for ops in mirror.jobs] == [list(ops) for ops in inst.jobs]
    r = rollout(_net(), mirror, 16, False, np.random.default_rng(3))
    assert r is not None

    for row in range(16):
        ms = int(r.makespan[row])
        schedule = _batch_row(inst, unmirror_start(inst, r.start[row], ms))
        assert check_schedule(inst, schedule) == ms
        assert min(s.start for s in schedule) == 0


@pytest.mark.parametrize("mirror", [False, True])
def test_best_of_n_counts_every_schedule_once_with_or_without_the_mirror(mirror: bool) -> None:
    inst = taillard_like(8, 6, np.random.default_rng(5))
    sched = LearnedScheduler(_net(), mirror=mirror)
    for n, batch in ((64, 64), (50, 16)):
        res = policy_solve(inst, 3600.0, seed=1, samples=n, batch_size=batch, scheduler=sched)
        assert res.iterations == n
        assert check_schedule(inst, res.schedule) == res.makespan
    stages = {p.stage for p in policy_solve(inst, 3600.0, samples=64, scheduler=sched).log}
    assert ("policy-sampling-mirror" in stages) <= mirror


def test_the_shipped_weights_schedule_unseen_benchmarks_better_than_the_greedy_rules() -> None:
    """Taillard's instances were never trained on (training draws its own random instances)."""
    shipped = LearnedScheduler.load()
    untrained_net = LearnedScheduler(_net(), shipped.scheme)
    names = [f"ta{i:02d}" for i in range(1, 11)]
    learned, rules, untrained = [], [], []
    for name in names:
        inst = taillard_instance(name)
        opt = inst.reference()[0]
        learned.append(policy_solve(inst, 0.0, scheduler=shipped).makespan / opt - 1)
        untrained.append(policy_solve(inst, 0.0, scheduler=untrained_net).makespan / opt - 1)
        rules.append(
            min(_greedy(inst, 0, s).makespan for s in ("active", "non-delay")) / opt - 1
        )  # MWKR, the best greedy rule here, in its better scheme
    assert np.mean(learned) < np.mean(rules) < np.mean(untrained)


def test_the_hybrid_started_from_the_learned_scheduler_keeps_the_better_start() -> None:
    inst = taillard_instance("ta02")
    shipped = LearnedScheduler.load()
    start = policy_solve(inst, 0.25, scheduler=shipped)
    res = hybrid_solve(inst, time_limit_s=2.0, start_policy=shipped)
    assert res.makespan <= start.makespan
    assert check_schedule(inst, res.schedule) == res.makespan
    times = [p.time_s for p in res.log]
    assert times == sorted(times) and [p.makespan for p in res.log] == sorted(
        (p.makespan for p in res.log), reverse=True
    )


def test_cli_solve_policy_uses_the_shipped_weights_and_writes_an_anytime_log(
    tmp_path: Path,
) -> None:
    log = tmp_path / "log.csv"
    args = ["solve", "ta01", "--method", "policy", "--time-limit", "0.5", "--json"]
    out = CliRunner().invoke(app, [*args, "--anytime-log", str(log)])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output[out.output.index("{") :])
    assert data["method"] == "policy" and data["makespan"] >= 1231
    assert data["anytime"][0]["stage"] == "policy-greedy"
    assert log.read_text().startswith("time_s,best_makespan,stage")


def test_train_jobshop_cli_writes_weights_that_solve_uses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the embedded MLflow store goes here
    w = tmp_path / "mine.npz"
    args = ["train-jobshop", "--out", str(w), "--minutes", "0.15", "--sizes", "6x5,8x6"]
    args += ["--beta", "8", "--eval-every", "3", "--mirror", "--json"]
    args += ["--replay", "16", "--updates", "3", "--ema", "0.9", "--validation-per-size", "9"]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    data = json.loads(out.output[out.output.index("{") :])
    assert data["instances"] > 0 and data["mlflow_run_id"]
    import mlflow

    client = mlflow.MlflowClient()
    history = client.get_metric_history(data["mlflow_run_id"], "label_ratio")
    assert history and all(p.value >= 1.0 for p in history)  # best sample / lower bound
    # three gradient steps per four new labels; the moving average is validated too
    steps = client.get_metric_history(data["mlflow_run_id"], "gradient_steps")
    assert steps and all(p.value == 3 * (p.step // 4) for p in steps)
    assert client.get_metric_history(data["mlflow_run_id"], "validation_greedy_ratio_ema")
    # the learning curve (validation ratio, the rules as lines) beside the weights and in MLflow
    assert (tmp_path / "mine_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    artifacts = [a.path for a in client.list_artifacts(data["mlflow_run_id"])]
    assert "learning_curve.png" in artifacts
    out = CliRunner().invoke(app, ["solve", "ft06", "--method", "policy", "--weights", str(w)])
    assert out.exit_code == 0, out.output


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_labelling_on_ray_workers_writes_the_same_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ray_cluster: Cluster
) -> None:
    """``--workers 2`` labels the instances as Ray tasks on the cluster of RAY_ADDRESS; each
    instance samples from its own seed and the budget and validations count instances, so the
    weights are those of one process, bit for bit."""
    args = ["train-jobshop", "--minutes", "8", "--sizes", "6x5,8x6", "--beta", "8"]
    args += ["--instances", "10", "--eval-every-instances", "4", "--seed", "3", "--json"]
    monkeypatch.chdir(tmp_path)
    here = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "here.npz")])
    assert here.exit_code == 0, here.output
    data = ray_cluster.run_cli([*args, "--workers", "2", "--out", "there.npz"], tmp_path)
    assert data["instances"] == 10
    a, b = np.load(tmp_path / "here.npz"), np.load(tmp_path / "there.npz")
    weights = [k for k in a.files if k != "__meta__"]
    assert weights and sorted(weights) == sorted(k for k in b.files if k != "__meta__")
    assert all(np.array_equal(a[k], b[k]) for k in weights)
    assert (
        json.loads(str(a["__meta__"]))["instances"] == json.loads(str(b["__meta__"]))["instances"]
    )


def test_mirror_self_labels_are_the_best_of_both_directions() -> None:
    from taktline.training.jobshop_selflabel import SelfLabelConfig, _label

    inst = taillard_like(8, 6, np.random.default_rng(1))
    net = _net()
    ms, (x, mask, act) = _label(
        net, inst, SelfLabelConfig(beta=16, mirror=True), np.random.default_rng(4)
    )
    rng = np.random.default_rng(4)
    forward = rollout(net, inst, 8, False, rng)
    backward = rollout(net, mirrored(inst), 8, False, rng)
    assert forward is not None and backward is not None
    assert ms == min(forward.makespan.min(), backward.makespan.min())
    assert len(act) == len(x) == len(mask) > 0 and mask[np.arange(len(act)), act].all()


def test_improved_labels_are_never_worse_and_teach_the_schedule_they_report() -> None:
    from taktline.training.jobshop_selflabel import SelfLabelConfig, _label

    net = _net()
    gains = 0
    for i in range(4):
        inst = taillard_like(10, 10, np.random.default_rng(100 + i))
        plain, _ = _label(net, inst, SelfLabelConfig(beta=8), np.random.default_rng(i))
        ms, (_x, mask, act) = _label(
            net, inst, SelfLabelConfig(beta=8, improve=500), np.random.default_rng(i)
        )
        assert ms <= plain
        gains += ms < plain
        # the taught choices (multi-candidate steps) rebuild a schedule of the reported makespan
        batch, taught = JobShopBatch(inst, 1), iter(act)
        while not batch.done:
            cand = np.flatnonzero(batch.mask[0])
            batch.apply(np.array([cand[0] if len(cand) == 1 else next(taught)]))
        assert int(batch.makespan[0]) == ms and next(taught, None) is None
        assert mask[np.arange(len(act)), act].all()
    assert gains >= 3  # an untrained network's best of 8 leaves tabu search room


@pytest.mark.parametrize("added", ["round", "attention"])
def test_a_warm_start_with_an_added_layer_schedules_like_the_weights_it_started_from(
    tmp_path: Path, added: str
) -> None:
    """The new round (or attention layer) starts near zero: the larger network makes the same
    greedy schedules as the shipped one, and its scores differ by little; a width it cannot
    copy is named."""
    from taktline.training.jobshop_selflabel import warm_start

    shipped, _ = load_net()
    save_net(shipped, tmp_path / "w.npz", {})
    c = shipped.config
    deeper = SchedulerNet(
        NetConfig(c.dim, c.rounds + 1) if added == "round" else NetConfig(c.dim, c.rounds, heads=4)
    )
    warm_start(deeper, tmp_path / "w.npz", seed=0)
    deeper.eval()
    inst = taillard_instance("ta01")
    rng = np.random.default_rng(0)
    a = rollout(shipped, inst, 1, True, rng)
    b = rollout(deeper, inst, 1, True, rng)
    assert a is not None and b is not None
    assert a.makespan[0] == b.makespan[0] and (a.actions == b.actions).all()
    x, mask, _ = replay_features(inst, a.actions[:, 0], "active")
    with torch.no_grad():
        s1, s2 = (
            shipped(torch.from_numpy(x), torch.from_numpy(mask)),
            deeper(torch.from_numpy(x), torch.from_numpy(mask)),
        )
    spread = float(s1[mask].abs().max())  # scores spread over several units
    assert float((s1[mask] - s2[mask]).abs().max()) < 0.02 * spread
    save_net(deeper, tmp_path / "deeper.npz", {})
    loaded, meta = load_net(tmp_path / "deeper.npz")
    assert NetConfig(**meta["config"]) == deeper.config
    with torch.no_grad():
        assert torch.equal(loaded(torch.from_numpy(x), torch.from_numpy(mask)), s2)
    with pytest.raises(SpecError, match="same --dim"):
        warm_start(SchedulerNet(NetConfig(shipped.config.dim * 2, 1)), tmp_path / "w.npz", 0)


def test_replayed_updates_start_with_the_new_labels_and_keep_a_bounded_window() -> None:
    from taktline.training.jobshop_selflabel import SelfLabelConfig, _update_groups

    def label(k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return np.full((1, 2, 1), k, np.float32), np.ones((1, 2), bool), np.zeros(1, int)

    cfg = SelfLabelConfig(replay=6, updates=5)
    kept: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    rng = np.random.default_rng(0)
    for first in range(0, 20, 2):
        new = [label(first), label(first + 1)]
        groups = _update_groups(new, kept, cfg, rng)
        assert len(groups) == 5 and groups[0] == new
        window = {int(x[0][0, 0, 0]) for x in kept}
        assert window == set(range(max(0, first - 4), first + 2))  # the newest 6 at most
        drawn = [int(x[0][0, 0, 0]) for g in groups[1:] for x in g]
        assert set(drawn) <= window and all(len(g) == 2 for g in groups)
    once = _update_groups([label(0)], [], SelfLabelConfig(updates=2), rng)
    assert len(once) == 2 and once[0] == once[1]  # no replay: the new labels twice


def test_the_weight_average_moves_by_one_minus_the_decay_per_step() -> None:
    from taktline.training.jobshop_selflabel import _Average

    net = _net(0)
    average = _Average(net, 0.75)
    before = [p.detach().clone() for p in average.net.parameters()]
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    average.update(net)
    for old, new, live in zip(before, average.net.parameters(), net.parameters(), strict=True):
        assert torch.allclose(new, 0.75 * old + 0.25 * live)


def test_a_larger_validation_set_extends_the_fixed_one() -> None:
    from taktline.training.jobshop_selflabel import validation_set

    fixed, larger = validation_set(), validation_set(per_size=10)
    assert len(fixed) == 16 and len(larger) == 20
    for a, b in zip(fixed, larger[:16], strict=True):
        assert a.name == b.name and a.trivial_lower_bound() == b.trivial_lower_bound()
    assert len({i.name for i in larger}) == 20


def test_a_warm_start_from_weights_made_for_fewer_features_scores_as_they_did(
    tmp_path: Path,
) -> None:
    """Features are only appended: an older file fills the first input columns and the new
    features start at weight 0, so the network scores every job as the file's network did."""
    from taktline.training.jobshop_selflabel import warm_start

    source = _net(3)
    arrays = {k: v.numpy().copy() for k, v in source.state_dict().items()}
    arrays["encode.0.weight"] = arrays["encode.0.weight"][:, : N_FEATURES - 4]
    meta = {"config": {"dim": 16, "rounds": 1}, "n_features": N_FEATURES - 4}
    np.savez(tmp_path / "old.npz", __meta__=np.array(json.dumps(meta)), **arrays)
    net = SchedulerNet(NetConfig(dim=16))
    warm_start(net, tmp_path / "old.npz", seed=0)
    net.eval()
    with torch.no_grad():
        source.encode[0].weight[:, N_FEATURES - 4 :] = 0.0  # what the old network computed
    inst = taillard_like(8, 6, np.random.default_rng(5))
    r = rollout(source, inst, 1, True, np.random.default_rng(0))
    assert r is not None
    x, mask, _ = replay_features(inst, r.actions[:, 0], "active")
    with torch.no_grad():
        a = net(torch.from_numpy(x), torch.from_numpy(mask))
        b = source(torch.from_numpy(x), torch.from_numpy(mask))
    assert torch.equal(a, b)
    meta["n_features"] = N_FEATURES + 1
    np.savez(tmp_path / "new.npz", __meta__=np.array(json.dumps(meta)), **arrays)
    with pytest.raises(SpecError, match=f"at most {N_FEATURES} features"):
        warm_start(net, tmp_path / "new.npz", seed=0)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--replay", "-1"], "replay/updates: need replay >= 0"),
        (["--updates", "0"], "replay/updates: need replay >= 0 and updates >= 1"),
        (["--ema", "1.0"], "ema: a decay in [0, 1)"),
        (["--validation-per-size", "4"], "validation_per_size: the fixed set has 8"),
        (["--init", "no_such.npz"], "init: no weights file"),
        (["--rounds", "0"], "dim/rounds"),
        (["--sizes", "10by10"], "--sizes: expected JOBSxMACHINES"),
        (["--scheme", "fast"], "--scheme: expected one of active, non-delay"),
        (["--minutes", "0"], "--minutes: must be > 0"),
        (["--beta", "1"], "beta: need at least 2"),
        (["--workers", "0"], "workers: need at least 1"),
        (["--instances", "-1"], "max_instances/eval_every_instances: need integers >= 0"),
        (["--improve", "-5"], "improve: tabu moves per label, >= 0"),
        (["--improve", "100", "--scheme", "non-delay"], "improve: improved labels are taught"),
        (["--out", "w.txt"], "--out"),
    ],
)
def test_train_jobshop_bad_options_give_one_clear_error(args: list[str], needle: str) -> None:
    out = CliRunner().invoke(app, ["train-jobshop", *args])
    assert out.exit_code == 2, out.output
    assert needle in out.output and "Traceback" not in out.output


@pytest.mark.parametrize("scheme", ["active", "non-delay"])
def test_deciding_snapshot_by_snapshot_rebuilds_the_batched_greedy_schedule(scheme: str) -> None:
    """One decide path: the snapshot features equal the batch features at every step."""
    from taktline.agents.policies import load_policy
    from taktline.envs.jobshop.snapshots import jobshop_snapshot

    inst = taillard_instance("ta03")
    policy = load_policy("scheduler")
    net = policy.net  # type: ignore[attr-defined]
    state = JobShopState(inst, scheme)
    while not state.done:
        snap = jobshop_snapshot(state).model_dump(mode="json")  # as a client would post it
        state.apply(policy.decide(snap).job)
    greedy = rollout(net, inst, 1, True, np.random.default_rng(0), scheme)
    assert greedy is not None and state.makespan == int(greedy.makespan[0])


def test_the_scheduler_plays_the_jobshop_env_and_names_what_it_cannot_decide() -> None:
    import gymnasium as gym

    import taktline.envs  # noqa: F401  (registers the envs)
    from taktline.agents.policies import load_policy
    from taktline.envs.snapshot import as_snapshot

    policy = load_policy("scheduler")
    env = gym.make("taktline/JobShop-v0", instance="ft06")
    obs, _ = env.reset(seed=0)
    done = False
    while not done:
        action = policy.choose(env, obs, env.unwrapped.action_masks())
        obs, _, term, trunc, _ = env.step(action)
        done = term or trunc
    assert env.unwrapped.state.makespan >= 55
    snap = jobshop_snapshot_of_unknown_instance()
    with pytest.raises(PolicyError, match=r"snapshot\.instance"):
        policy.decide(as_snapshot(snap))


def jobshop_snapshot_of_unknown_instance() -> dict[str, object]:
    from taktline.envs.jobshop.snapshots import jobshop_snapshot

    snap = jobshop_snapshot(JobShopState(load_bundled("ft06"))).model_dump(mode="json")
    snap["instance"] = "no-such-shop"
    return snap


def test_online_the_scheduler_sees_the_job_shop_left_and_picks_from_the_queue() -> None:
    """On a dynamic job shop's dispatch decision, the residual shop holds every job with work
    left (the candidates are the deciding station's queue, their next operation on it), and
    the scheduler's answer, asked through the env or posted as JSON, is one of those jobs."""
    import gymnasium as gym

    import taktline.envs  # noqa: F401  (registers the envs)
    from taktline.agents.jobshop_online import residual_shop
    from taktline.agents.policies import dispatch_action, load_policy
    from taktline.envs.snapshot import LineSnapshot, as_snapshot, pending_dispatch
    from taktline.envs.spec import load_spec

    spec = load_spec("dynamic_jobshop")
    env = gym.make(
        "taktline/LineDispatch-v0", line="dynamic_jobshop", action_mode="job", horizon=600.0
    )
    policy = load_policy("scheduler")
    obs, _ = env.reset(seed=3)
    checked = 0
    for _ in range(400):
        mask = env.unwrapped.action_masks()
        snap = as_snapshot(env.unwrapped.snapshot())
        assert isinstance(snap, LineSnapshot)
        if mask.sum() > 1 and checked < 25:
            shop = residual_shop(snap, spec)
            station, _ = pending_dispatch(snap)
            s = [st.name for st in spec.stations].index(station.name)
            cands = np.flatnonzero(shop.mask)
            assert sorted(shop.queue_index[cands]) == list(range(len(station.queue)))
            assert all(shop.instance.jobs[j][0][0][0] == s for j in cands)
            assert (shop.ready >= 0).all() and shop.available[s] == 0
            in_system = sum(len(st.queue) for st in snap.stations) + sum(
                m.in_process is not None for st in snap.stations for m in st.machines
            )
            assert len(station.queue) <= shop.instance.n_jobs <= in_system
            posted = policy.decide(snap.model_dump(mode="json"))
            assert posted.job in {j.id for j in station.queue}
            action = policy.choose(env, obs, mask)
            if len(station.queue) <= len(mask):  # every waiting job has a slot
                assert action == dispatch_action(snap, posted)
            checked += 1
        action = policy.choose(env, obs, mask)
        assert mask[action]
        obs, _, term, trunc, _ = env.step(action)
        if term or trunc:
            break
    assert checked == 25
    env.reset(seed=3)
    release = as_snapshot(env.unwrapped.snapshot()).model_dump(mode="json")
    release["decision"] = {"kind": "release"}
    with pytest.raises(PolicyError, match="answers dispatch decisions"):
        policy.decide(release)
