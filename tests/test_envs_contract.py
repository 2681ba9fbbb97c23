"""The Gymnasium contract of every taktline env: checkers, seeding, masks, errors, pickling,
rendering, returns and end-of-episode KPIs."""

from __future__ import annotations

import copy
import pickle
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from taktline.envs.encoding import ENV_IDS
from taktline.envs.jobshop import load_bundled
from taktline.envs.spaces import SampledAction
from taktline.errors import InfeasibleActionError, PolicyError, SpecError
from tests.envs_support import (
    CASES,
    DISPATCH,
    JOBSHOP,
    RELEASE,
    case_id,
    episode,
    flat,
    make,
    play,
)


def test_every_env_id_is_registered_on_import() -> None:
    assert set(ENV_IDS) <= set(gym.registry)
    assert len(ENV_IDS) == 3


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_registered_env_passes_gymnasium_check_env(env_id: str) -> None:
    env = gym.make(env_id)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a checker warning is a failure
        gym_check_env(env.unwrapped)
    env.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_registered_env_passes_sb3_check_env(env_id: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sb3_check_env(gym.make(env_id).unwrapped, warn=True, skip_render_check=True)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_variant_passes_both_checkers(case: tuple[str, dict[str, Any]]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(make(case).unwrapped, skip_render_check=True)
        sb3_check_env(make(case).unwrapped, warn=True)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_same_seed_same_trajectory_and_other_seed_differs(
    case: tuple[str, dict[str, Any]],
) -> None:
    def trajectory(seed: int) -> list[tuple[bytes, float, int]]:
        return [(flat(o).tobytes(), r, a) for o, r, _, _, a in play(make(case), seed)]

    first = trajectory(5)
    assert trajectory(5) == first
    if case[0] != JOBSHOP or isinstance(case[1]["instance"], dict):
        assert trajectory(6) != first  # the seed drives the twin or the instance generator


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_sampled_actions_are_feasible_and_masked_actions_raise(
    case: tuple[str, dict[str, Any]],
) -> None:
    env = make(case)
    env.reset(seed=1)
    base: Any = env.unwrapped
    for _ in range(20):
        mask = base.action_masks()
        assert mask.dtype == bool and mask.shape == (env.action_space.n,)  # type: ignore[attr-defined]
        assert mask.any()
        if not mask.all():
            bad = int(np.flatnonzero(~mask)[0])
            with pytest.raises(InfeasibleActionError, match=f"action {bad}"):
                env.step(bad)
        with pytest.raises(InfeasibleActionError, match="action"):
            env.step(int(env.action_space.n) + 3)  # type: ignore[attr-defined]
        a = env.action_space.sample()
        assert mask[int(a)]
        _, _, term, trunc, _ = env.step(a)
        if term or trunc:
            break


def test_a_sample_drawn_before_reset_is_redrawn_over_the_new_mask() -> None:
    env = gym.make(JOBSHOP, instance="ft06")
    env.reset(seed=0)
    env.step(env.action_space.sample())
    env.action_space.seed(3)
    stale = env.action_space.sample()
    assert isinstance(stale, SampledAction)
    env.reset(seed=0)
    first_mask = env.unwrapped.action_masks()  # type: ignore[attr-defined]
    assert not first_mask[int(stale)]  # the premise: as drawn, it is infeasible here
    env.step(stale)  # never raises: redrawn from the same uniform draw
    with pytest.raises(InfeasibleActionError):
        env.reset(seed=0)
        env.step(int(np.flatnonzero(~first_mask)[0]))  # a plain int is never redrawn


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_step_before_reset_or_after_the_end_is_an_error(env_id: str) -> None:
    kw: dict[str, Any] = {"horizon": 30.0} if env_id != JOBSHOP else {}
    env = gym.make(env_id, **kw).unwrapped
    with pytest.raises(gym.error.ResetNeeded):
        env.step(0)
    episode(env, 0)
    with pytest.raises(gym.error.ResetNeeded):
        env.step(0)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_pickled_env_continues_identically(case: tuple[str, dict[str, Any]]) -> None:
    env = make(case).unwrapped
    env.reset(seed=2)
    rng = np.random.default_rng(0)
    for _ in range(3):
        env.step(int(rng.choice(np.flatnonzero(env.action_masks()))))  # type: ignore[attr-defined]
    twin = pickle.loads(pickle.dumps(env))
    clone = copy.deepcopy(env)
    for _ in range(10):
        a = int(rng.choice(np.flatnonzero(env.action_masks())))  # type: ignore[attr-defined]
        outs = [e.step(a) for e in (env, twin, clone)]
        for o in outs[1:]:
            assert np.array_equal(flat(o[0]), flat(outs[0][0])) and o[1:4] == outs[0][1:4]
        if outs[0][2] or outs[0][3]:
            break


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_fresh_env_pickles_small(env_id: str) -> None:
    env = gym.make(env_id).unwrapped
    assert len(pickle.dumps(env)) < 200_000  # cheap to ship to a subprocess before reset


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_render_modes_return_text_and_an_image(env_id: str) -> None:
    kw: dict[str, Any] = {"horizon": 60.0} if env_id != JOBSHOP else {}
    text_env = gym.make(env_id, render_mode="ansi", **kw)
    text_env.reset(seed=0)
    text_env.step(text_env.action_space.sample())
    text: Any = text_env.render()
    assert isinstance(text, str) and len(text.splitlines()) >= 3
    img_env = gym.make(env_id, render_mode="rgb_array", **kw)
    img_env.reset(seed=0)
    img_env.step(img_env.action_space.sample())
    img: Any = img_env.render()
    assert isinstance(img, np.ndarray) and img.dtype == np.uint8
    assert img.ndim == 3 and img.shape[2] == 3 and img.shape[0] > 50 and img.std() > 0


def test_jobshop_dense_and_sparse_returns_are_minus_the_makespan() -> None:
    for reward in ("dense", "sparse"):
        env = gym.make(JOBSHOP, instance="la01", reward=reward, reward_scale=0.5)
        ret, info, _ = episode(env, 4)
        assert ret == -0.5 * info["makespan"]
        assert info["kpis"]["makespan"] == info["makespan"]
        assert info["kpis"]["reference_kind"] == "optimum"
        assert info["kpis"]["gap"] == info["makespan"] / 666 - 1.0


def test_jobshop_skip_forced_steps_only_at_real_choices() -> None:
    env = gym.make(JOBSHOP, instance="ft06")
    for _, _, done, _, _ in play(env, 0):
        if not done:
            assert env.unwrapped.action_masks().sum() >= 2  # type: ignore[attr-defined]
    assert (
        episode(gym.make(JOBSHOP, instance="ft06", skip_forced=False), 0)[2] == 36
    )  # one step per operation


@pytest.mark.parametrize("env_id", [DISPATCH, RELEASE])
def test_line_return_is_the_profit_and_info_carries_kpis(env_id: str) -> None:
    for line, warmup in (("bodyshop", 0.0), ("conwip_loop", 30.0)):
        env = gym.make(env_id, line=line, horizon=150.0, warmup=warmup)
        ret = 0.0
        for _, r, done, info, _ in play(env, 7):
            ret += r
            assert done or "kpis" not in info
        kpis = info["kpis"]
        assert ret == pytest.approx(kpis["profit"], rel=1e-9, abs=1e-6)
        assert kpis["window"] == pytest.approx(150.0 - warmup)
        assert {"throughput", "wip", "total_tardiness", "makespan"} <= set(kpis)


def test_line_episode_is_truncated_at_the_horizon_not_terminated() -> None:
    env = gym.make(DISPATCH, line="serial5", horizon=50.0)
    env.reset(seed=0)
    while True:
        _, _, term, trunc, _ = env.step(0)
        if term or trunc:
            break
    assert trunc and not term
    assert env.unwrapped.twin.now == 50.0  # type: ignore[attr-defined]


def test_the_reward_reads_the_profit_the_kpis_report_at_every_step() -> None:
    """One meter: the profit rewards are made of is the KPIs' profit, to the last bit."""
    env: Any = gym.make(DISPATCH, line="bodyshop", horizon=200.0).unwrapped
    profits = []
    for _ in play(env, 3):
        profits.append(env.twin.meter.profit(env.twin))
        assert profits[-1] == env.twin.kpis().profit
    assert len(set(profits)) > 10  # premise: the profit moves (energy, WIP, revenue)


@pytest.mark.filterwarnings("ignore:.*render_mode")
@pytest.mark.parametrize(
    ("env_id", "kwargs", "error", "words"),
    [
        (DISPATCH, {"max_queue": 0}, PolicyError, "max_queue"),
        (DISPATCH, {"action_mode": "jobs"}, PolicyError, "action_mode"),
        (DISPATCH, {"action_mode": "rule", "rules": ["NOPE"]}, PolicyError, "NOPE"),
        (DISPATCH, {"horizon": -1.0}, PolicyError, "horizon"),
        (DISPATCH, {"horizon": 10.0, "warmup": 20.0}, PolicyError, "warmup"),
        (DISPATCH, {"render_mode": "svg"}, PolicyError, "render_mode"),
        (RELEASE, {"action_mode": "cap"}, PolicyError, "action_mode"),
        (RELEASE, {"review_period": 0.0}, PolicyError, "review_period"),
        (RELEASE, {"dispatch_rule": "XYZ"}, PolicyError, "XYZ"),
        (JOBSHOP, {"instance": "ta21", "max_jobs": 15}, PolicyError, "max_jobs"),
        (JOBSHOP, {"instance": {"generator": "magic", "n_jobs": 3}}, SpecError, "generator"),
        (JOBSHOP, {"instance": {"generator": "taillard_like"}}, SpecError, "n_jobs"),
        (JOBSHOP, {"instance": "no_such_instance"}, SpecError, "no_such_instance"),
        (JOBSHOP, {"reward": "idle"}, PolicyError, "reward"),
        (JOBSHOP, {"scheme": "semi-active"}, PolicyError, "scheme"),
    ],
)
def test_bad_kwargs_are_errors_that_name_the_field(
    env_id: str, kwargs: dict[str, Any], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        gym.make(env_id, **kwargs).reset(seed=0)


def test_generator_too_big_for_the_padding_is_an_error_at_construction() -> None:
    with pytest.raises(PolicyError, match="6 jobs x 4 machines does not fit"):
        gym.make(
            JOBSHOP,
            instance={"generator": "random_routing", "n_jobs": 6, "n_machines": 4},
            max_jobs=6,
            max_machines=3,
        )


def test_jobshop_reset_option_plays_another_instance_in_the_same_padding() -> None:
    env: Any = gym.make(JOBSHOP, instance="la01", max_jobs=15, max_machines=10).unwrapped
    env.reset(seed=0, options={"instance": "ft06"})
    assert env.instance.name == "ft06" and not env.action_masks()[6:].any()
    env.reset(seed=0)
    assert env.instance.name == "la01"
    with pytest.raises(PolicyError, match=r"options\.instance"):
        env.reset(options={"instance": "ta01"})


@pytest.mark.parametrize("skip_forced", [True, False])
def test_an_optimal_cp_sat_schedule_replayed_as_actions_reaches_the_optimum(
    skip_forced: bool,
) -> None:
    """Reachability: the action space contains an optimal schedule (ft06, optimum 55)."""
    from taktline.agents.cpsat import solve
    from taktline.envs.jobshop.replay import make_active

    result = solve(load_bundled("ft06"), time_limit_s=20.0, num_workers=2)
    assert result.status == "optimal" and result.makespan == 55
    target = {(o.job, o.op): o.start for o in make_active(load_bundled("ft06"), result.schedule)}
    env: Any = gym.make(JOBSHOP, instance="ft06", skip_forced=skip_forced).unwrapped
    env.reset(seed=0)
    ret, done = 0.0, False
    while not done:
        st = env.state
        action = min(st.candidate_jobs, key=lambda j: (target[(j, st.next_op[j])], j))
        _, reward, done, _, info = env.step(action)
        ret += reward
    assert info["makespan"] == 55 and ret == -55
