"""Policy bundles: round trip, masks, shapes, size-agnostic networks, and no trainer imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from taktline.agents.bundle import BUNDLE_FILE, PolicyBundle, make_lineage
from taktline.agents.networks import MASKED_LOGIT, JobShopAttention, MaskedMLP, build_network
from taktline.agents.spaces import space_from_json, space_to_json
from taktline.envs.encoding import JOBSHOP_ID, LINE_DISPATCH_ID, make_codec
from taktline.errors import PolicyError


def mlp_bundle(obs_dim: int = 6, n: int = 4, seed: int = 0) -> PolicyBundle:
    torch.manual_seed(seed)
    kw = {"obs_dim": obs_dim, "n_actions": n, "hidden": [16, 16]}
    return PolicyBundle(
        env_id=LINE_DISPATCH_ID,
        env_kwargs={"line": "serial5", "max_queue": n},
        spec_hash="abc",
        observation_space=gym.spaces.Box(-10, 10, (obs_dim,), np.float32),
        action_space=gym.spaces.Discrete(n),
        network=MaskedMLP(**kw),  # type: ignore[arg-type]
        network_spec={"class": "mlp", "kwargs": kw},
        lineage=make_lineage(seed=seed, backend="test"),
    )


def attention_bundle(max_jobs: int = 6, max_machines: int = 6) -> PolicyBundle:
    torch.manual_seed(1)
    kw = {"max_jobs": max_jobs, "d_model": 16, "n_heads": 2, "n_layers": 1}
    codec = make_codec(JOBSHOP_ID, {"max_jobs": max_jobs, "max_machines": max_machines})
    return PolicyBundle(
        env_id=JOBSHOP_ID,
        env_kwargs={"instance": "ft06", "max_jobs": max_jobs, "max_machines": max_machines},
        spec_hash=None,
        observation_space=codec.observation_space,
        action_space=codec.action_space,
        network=JobShopAttention(**kw),  # type: ignore[arg-type]
        network_spec={"class": "attention", "kwargs": kw},
    )


def test_round_trip_keeps_spaces_weights_and_lineage(tmp_path: Path) -> None:
    for bundle in (mlp_bundle(), attention_bundle()):
        path = bundle.save(tmp_path / bundle.network_spec["class"])
        assert (path / BUNDLE_FILE).is_file() and (path / "weights.pt").is_file()
        meta = json.loads((path / BUNDLE_FILE).read_text())  # plain JSON, no pickles
        assert meta["env_id"] == bundle.env_id and meta["network"] == bundle.network_spec
        back = PolicyBundle.load(path)
        assert back.observation_space == bundle.observation_space
        assert back.action_space == bundle.action_space
        assert back.env_kwargs == bundle.env_kwargs and back.lineage == bundle.lineage
        rng = np.random.default_rng(0)
        n_obs = int(np.prod(bundle.observation_space.shape))  # type: ignore[arg-type]
        obs = rng.uniform(-1, 1, (5, n_obs)).astype(np.float32)
        mask = rng.random((5, bundle.action_space.n)) < 0.6
        mask[:, 0] = True
        np.testing.assert_array_equal(back.logits(obs, mask), bundle.logits(obs, mask))


def test_lineage_records_the_git_commit_and_time() -> None:
    lin = make_lineage(seed=3)
    assert lin["seed"] == 3 and lin["created_at"].endswith("Z")
    assert lin["git_commit"] is None or len(lin["git_commit"].split("+")[0]) == 40


@pytest.mark.parametrize("deterministic", [True, False])
@pytest.mark.parametrize("frozen", [False, True], ids=["torch", "numpy"])
def test_act_never_returns_a_masked_action(deterministic: bool, frozen: bool) -> None:
    bundle = mlp_bundle(n=7)
    if frozen:
        bundle.freeze()
    rng = np.random.default_rng(1)
    # huge observations push the unmasked logits far apart; masks keep a single action often
    obs = rng.normal(0, 50, (2000, 6)).astype(np.float32)
    mask = rng.random((2000, 7)) < 0.3
    mask[np.arange(2000), rng.integers(0, 7, 2000)] = True
    actions = bundle.act(obs, mask, deterministic=deterministic, rng=rng)
    assert actions.dtype == np.int64 and actions.shape == (2000,)
    assert mask[np.arange(2000), actions].all()


def test_sampling_follows_the_softmax_and_is_seeded() -> None:
    bundle = mlp_bundle(n=3)
    obs = np.zeros((20000, 6), np.float32)
    mask = np.ones((20000, 3), bool)
    a1 = bundle.act(obs, mask, deterministic=False, rng=np.random.default_rng(5))
    a2 = bundle.act(obs, mask, deterministic=False, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(a1, a2)
    probs = torch.softmax(torch.tensor(bundle.logits(obs[:1], mask[:1])[0]), 0).numpy()
    freq = np.bincount(a1, minlength=3) / len(a1)
    np.testing.assert_allclose(freq, probs, atol=0.02)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_frozen_numpy_kernel_computes_what_torch_computes(activation: str) -> None:
    torch.manual_seed(3)
    kw = {"obs_dim": 12, "n_actions": 5, "hidden": [32, 16], "activation": activation}
    net = MaskedMLP(**kw)  # type: ignore[arg-type]
    box = gym.spaces.Box(-100, 100, (12,), np.float32)
    spec = {"class": "mlp", "kwargs": kw}
    plain = PolicyBundle(LINE_DISPATCH_ID, {}, None, box, gym.spaces.Discrete(5), net, spec)
    frozen = PolicyBundle(LINE_DISPATCH_ID, {}, None, box, gym.spaces.Discrete(5), net, spec)
    assert frozen.freeze() is frozen and frozen.frozen and not plain.frozen
    rng = np.random.default_rng(0)
    obs = rng.normal(0, 3, (500, 12)).astype(np.float32)
    mask = rng.random((500, 5)) < 0.6
    mask[np.arange(500), rng.integers(0, 5, 500)] = True
    # float32 both ways: the sums differ only in summation order (a few ulp)
    np.testing.assert_allclose(frozen.logits(obs, mask), plain.logits(obs, mask), rtol=1e-5,
                               atol=1e-5)  # fmt: skip
    np.testing.assert_array_equal(frozen.act(obs, mask), plain.act(obs, mask))
    masked = frozen.logits(obs, mask)[~mask]
    assert (masked == np.float32(MASKED_LOGIT)).all()


def test_freeze_keeps_torch_where_numpy_has_no_exact_twin() -> None:
    gelu = {"obs_dim": 4, "n_actions": 3, "activation": "gelu"}
    net = build_network({"class": "mlp", "kwargs": gelu})
    box = gym.spaces.Box(-1, 1, (4,), np.float32)
    bundle = PolicyBundle(LINE_DISPATCH_ID, {}, None, box, gym.spaces.Discrete(3), net, {})
    assert not bundle.freeze().frozen
    assert bundle.act(np.zeros((1, 4), np.float32)).shape == (1,)
    assert not attention_bundle().freeze().frozen


def test_masked_logits_are_finite_and_low() -> None:
    net = build_network({"class": "mlp", "kwargs": {"obs_dim": 3, "n_actions": 2}})
    out = net(torch.zeros(1, 3), torch.tensor([[False, True]]))
    assert out[0, 0].item() == MASKED_LOGIT and torch.isfinite(out).all()


@pytest.mark.parametrize("frozen", [False, True], ids=["torch", "numpy"])
def test_bad_shapes_and_empty_masks_are_clear_errors(frozen: bool) -> None:
    bundle = mlp_bundle().freeze() if frozen else mlp_bundle()
    with pytest.raises(PolicyError, match=r"add a batch axis"):
        bundle.act(np.zeros(6, np.float32))
    with pytest.raises(PolicyError, match=r"expected shape \(B, 6\), got \(1, 5\)"):
        bundle.act(np.zeros((1, 5), np.float32))
    with pytest.raises(PolicyError, match=r"mask: expected shape \(1, 4\)"):
        bundle.act(np.zeros((1, 6), np.float32), np.ones((1, 3), bool))
    with pytest.raises(PolicyError, match="row 1 allows no action"):
        bundle.act(np.zeros((2, 6), np.float32), np.array([[1, 0, 0, 0], [0, 0, 0, 0]], bool))


def test_load_rejects_a_directory_without_a_bundle_and_unknown_networks(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="not a policy bundle"):
        PolicyBundle.load(tmp_path)
    with pytest.raises(PolicyError, match="unknown 'gnn'"):
        build_network({"class": "gnn", "kwargs": {}})
    path = mlp_bundle().save(tmp_path / "b")
    meta = json.loads((path / BUNDLE_FILE).read_text())
    meta["format_version"] = 99
    (path / BUNDLE_FILE).write_text(json.dumps(meta))
    with pytest.raises(PolicyError, match="upgrade taktline"):
        PolicyBundle.load(path)


def test_spaces_survive_json() -> None:
    spaces = [
        gym.spaces.Box(np.array([-1, 0], np.float32), np.array([1, np.inf], np.float32)),
        gym.spaces.Discrete(5, start=1),
        gym.spaces.MultiBinary(3),
        gym.spaces.MultiDiscrete([2, 3]),
        gym.spaces.Dict({"a": gym.spaces.Discrete(2), "b": gym.spaces.Box(0, 1, (2,))}),
    ]
    for s in spaces:
        assert space_from_json(json.loads(json.dumps(space_to_json(s)))) == s


def test_attention_policy_trained_small_runs_on_a_larger_shop() -> None:
    from taktline.envs.encoding_jobshop import jobshop_snapshot
    from taktline.envs.jobshop import JobShopState, load_bundled

    bundle = attention_bundle(max_jobs=6, max_machines=6)
    big = make_codec(JOBSHOP_ID, {"max_jobs": 15, "max_machines": 15})
    state = JobShopState(load_bundled("ta01"))  # 15 x 15
    obs, mask = big.encode(jobshop_snapshot(state))
    action = bundle.act(obs[None], mask[None])
    assert action.shape == (1,) and mask[action[0]]
    # padding rows do not change the scores of real jobs
    padded = make_codec(JOBSHOP_ID, {"max_jobs": 20, "max_machines": 18})
    obs2, mask2 = padded.encode(jobshop_snapshot(state))
    np.testing.assert_allclose(
        bundle.logits(obs2[None], mask2[None])[0, :15],
        bundle.logits(obs[None], mask[None])[0],
        rtol=1e-4,
        atol=1e-4,
    )


def test_loading_and_acting_imports_no_trainer(tmp_path: Path) -> None:
    path = mlp_bundle().save(tmp_path / "mlp")
    apath = attention_bundle().save(tmp_path / "att")
    code = f"""
import sys, numpy as np
from taktline.agents.bundle import PolicyBundle
from taktline.agents.policies import load_policy
b = PolicyBundle.load({str(path)!r})
a = b.act(np.zeros((3, 6), np.float32), np.ones((3, 4), bool))
p = load_policy({str(apath)!r})
from taktline.envs.jobshop import JobShopState, load_bundled
from taktline.envs.encoding_jobshop import jobshop_snapshot
d = p.decide(jobshop_snapshot(JobShopState(load_bundled("ft06"))))
heavy = sorted(m for m in ("stable_baselines3", "sb3_contrib", "ray", "mlflow") if m in sys.modules)
print("HEAVY", heavy, a.tolist(), d.kind)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "HEAVY [] " in out.stdout, out.stdout


def test_load_refuses_weights_changed_after_save_naming_file_and_digests(tmp_path: Path) -> None:
    import hashlib

    path = mlp_bundle().save(tmp_path / "b")
    weights = path / "weights.pt"
    recorded = hashlib.sha256(weights.read_bytes()).hexdigest()
    data = bytearray(weights.read_bytes())
    data[-20] ^= 0xFF  # one flipped byte inside the tensor data: torch still loads it
    weights.write_bytes(bytes(data))
    found = hashlib.sha256(bytes(data)).hexdigest()
    with pytest.raises(PolicyError) as info:
        PolicyBundle.load(path)
    message = str(info.value)
    assert "weights.pt" in message and recorded in message and found in message
    assert "download it again" in message


def test_save_records_the_sha256_of_the_weights(tmp_path: Path) -> None:
    import hashlib

    path = mlp_bundle().save(tmp_path / "b")
    meta = json.loads((path / BUNDLE_FILE).read_text())
    assert meta["files"] == {
        "weights.pt": hashlib.sha256((path / "weights.pt").read_bytes()).hexdigest()
    }


def test_load_refuses_a_bundle_without_digests_and_says_how_to_fix(tmp_path: Path) -> None:
    path = mlp_bundle().save(tmp_path / "b")
    meta = json.loads((path / BUNDLE_FILE).read_text())
    meta.pop("files", None)
    meta["format_version"] = 1
    (path / BUNDLE_FILE).write_text(json.dumps(meta))
    with pytest.raises(PolicyError, match=r"no sha256 digests.*export it again"):
        PolicyBundle.load(path)


def test_load_refuses_digest_entries_outside_the_bundle(tmp_path: Path) -> None:
    path = mlp_bundle().save(tmp_path / "b")
    meta = json.loads((path / BUNDLE_FILE).read_text())
    (tmp_path / "elsewhere").write_text("x")
    meta["files"]["../elsewhere"] = meta["files"]["weights.pt"]
    (path / BUNDLE_FILE).write_text(json.dumps(meta))
    with pytest.raises(PolicyError, match="not a file inside the bundle"):
        PolicyBundle.load(path)
