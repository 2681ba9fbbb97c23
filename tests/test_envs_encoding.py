"""One code path: at every step the env's observation is ``encode`` of its snapshot, ``decode``
names what the env does, and codecs built without an env match the env's spaces."""

from __future__ import annotations

import json
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from taktline.envs.encoding import (
    Codec,
    candidates_from_snapshot,
    decode,
    encode,
    infer_env_id,
    make_codec,
)
from taktline.envs.priorities import DISPATCH_RULES, rule_choice
from taktline.envs.snapshot import as_line_snapshot, pending_dispatch
from taktline.errors import InfeasibleActionError, PolicyError
from tests.envs_support import CASES, DISPATCH, JOBSHOP, RELEASE, case_id, flat, make, play


def posted(snapshot: Any) -> dict[str, Any]:
    """What a client would post: the snapshot through JSON and back."""
    return json.loads(json.dumps(snapshot.model_dump(mode="json")))  # type: ignore[no-any-return]


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_observation_is_encode_of_the_snapshot_at_every_step(
    case: tuple[str, dict[str, Any]],
) -> None:
    env_id, kw = case
    env = make(case)
    codec = make_codec(env_id, kw)
    steps = 0
    for obs, _, _, _, _ in play(env, 11):
        snap = env.unwrapped.snapshot()  # type: ignore[attr-defined]
        if steps % 7 == 0:  # what a client would post: through JSON and back
            snap = posted(snap)
        o, m = codec.encode(snap)
        assert o.dtype == np.float32 and m.dtype == bool
        assert np.array_equal(o, flat(obs)), f"step {steps}: observation != encode(snapshot)"
        assert np.array_equal(m, env.unwrapped.action_masks())  # type: ignore[attr-defined]
        if isinstance(obs, dict):
            assert np.array_equal(obs["action_mask"], m.astype(np.float32))
        assert env.observation_space.contains(obs)
        steps += 1
    assert steps > 3


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_codec_without_env_has_the_env_spaces(case: tuple[str, dict[str, Any]]) -> None:
    env_id, kw = case
    codec = make_codec(env_id, kw)
    env = make(case)
    assert isinstance(codec, Codec)
    assert codec.observation_space == env.observation_space
    assert codec.action_space == env.action_space


@pytest.mark.parametrize("case", [c for c in CASES if c[0] != JOBSHOP], ids=case_id)
def test_line_decode_names_what_the_env_does(case: tuple[str, dict[str, Any]]) -> None:
    """Decode the action, apply it to a second twin like a plant would: same next state."""
    env_id, kw = case
    codec = make_codec(env_id, kw)
    env: Any = make(case).unwrapped
    other: Any = make(case).unwrapped
    rng = np.random.default_rng(0)
    env.reset(seed=3)
    other.reset(seed=3)
    for _ in range(30):
        a = int(rng.choice(np.flatnonzero(env.action_masks())))
        decision = codec.decode(other.snapshot(), a)
        assert decision.kind == ("release" if env_id == RELEASE else "dispatch")
        other.twin.apply(decision)
        other.twin.run_until_decision(other.horizon)
        _, _, term, trunc, _ = env.step(a)
        assert env.snapshot() == other.twin.snapshot()
        if term or trunc:
            break


def test_jobshop_decode_names_the_operation_the_env_schedules() -> None:
    env: Any = gym.make(JOBSHOP, instance="la01").unwrapped
    codec = make_codec(JOBSHOP, {"instance": "la01"})
    rng = np.random.default_rng(1)
    env.reset(seed=0)
    while True:
        snap = env.snapshot()
        a = int(rng.choice(np.flatnonzero(env.action_masks())))
        d = codec.decode(snap, a)
        _, _, done, _, _ = env.step(a)
        op = next(o for o in env.state.schedule if (o.job, o.op) == (a, d.operation))
        assert (op.machine, op.start) == (d.machine, d.start)
        if done:
            break


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_decode_of_a_masked_action_is_a_clear_error(case: tuple[str, dict[str, Any]]) -> None:
    env_id, kw = case
    codec = make_codec(env_id, kw)
    env: Any = make(case).unwrapped
    env.reset(seed=0)
    snap = env.snapshot()
    n = int(codec.action_space.n)
    for a in [*(int(x) for x in np.flatnonzero(~env.action_masks())), n, -1]:
        with pytest.raises(InfeasibleActionError, match=rf"action {a}\b"):
            codec.decode(snap, a)
    for ok in np.flatnonzero(env.action_masks()):
        assert codec.decode(snap, int(ok)).kind in ("dispatch", "release")


def test_rule_mode_picks_the_job_the_rule_picks_on_the_twin() -> None:
    env: Any = gym.make(DISPATCH, line="machining", horizon=600.0, action_mode="rule").unwrapped
    env.reset(seed=2)
    seen = 0
    while seen < 25:
        snap = env.snapshot()
        req = env.twin.pending
        family = env.twin.machines[req.machine].last_family
        for k, rule in enumerate(DISPATCH_RULES):
            on_twin = req.candidates[rule_choice(rule, req.candidates, env.twin.now, family)]
            assert (
                decode(snap, k, DISPATCH, {"line": "machining", "action_mode": "rule"}).job
                == f"J-{on_twin.id}"
            )
        seen += 1
        _, _, term, trunc, _ = env.step(seen % len(DISPATCH_RULES))
        if term or trunc:
            break
    assert seen >= 5


def test_candidates_from_a_line_snapshot_carry_the_twin_jobs_numbers() -> None:
    env: Any = gym.make(DISPATCH, line="bodyshop", horizon=300.0).unwrapped
    env.reset(seed=5)
    for _ in range(20):
        snap = posted(env.snapshot())
        cands = candidates_from_snapshot(snap)
        req = env.twin.pending
        assert [c.id for c in cands] == [j.id for j in req.candidates]
        for c, j in zip(cands, req.candidates, strict=True):
            assert (c.processing_time, c.remaining_work, c.remaining_ops, c.due_date) == (
                j.processing_time,
                j.remaining_work,
                j.remaining_ops,
                j.due_date,
            )
            assert (c.family, c.queue_entry_time, c.name) == (
                j.family,
                j.queue_entry_time,
                f"J-{j.id}",
            )
        _, machine = pending_dispatch(as_line_snapshot(snap))
        assert machine.family == env.twin.machines[req.machine].last_family
        env.step(0)


def test_candidates_from_a_jobshop_snapshot_are_the_conflict_set() -> None:
    env: Any = gym.make(JOBSHOP, instance="ft06").unwrapped
    env.reset(seed=0)
    cands = candidates_from_snapshot(env.snapshot())
    state = env.state
    assert [c.id for c in cands] == state.candidate_jobs
    assert [c.processing_time for c in cands] == state.candidate_times
    assert [c.remaining_work for c in cands] == [
        state.remaining_work(j) for j in state.candidate_jobs
    ]
    assert [c.remaining_ops for c in cands] == [
        state.remaining_ops(j) for j in state.candidate_jobs
    ]


def test_public_encode_infers_the_env_from_the_snapshot() -> None:
    line: Any = gym.make(DISPATCH, line="serial5", horizon=100.0).unwrapped
    obs, _ = line.reset(seed=0)
    o, m = encode(line.snapshot())  # env id and line taken from the snapshot
    assert np.array_equal(o, obs) and np.array_equal(m, line.action_masks())
    shop: Any = gym.make(JOBSHOP, instance="ft06").unwrapped
    obs, _ = shop.reset(seed=0)
    snap = shop.snapshot()
    assert infer_env_id(snap) == JOBSHOP
    assert np.array_equal(encode(snap)[0], obs)
    rel: Any = gym.make(RELEASE, line="serial5", horizon=100.0).unwrapped
    rel.reset(seed=0)
    assert infer_env_id(rel.snapshot()) == RELEASE


def test_one_padded_codec_encodes_job_shops_of_different_sizes() -> None:
    codec = make_codec(JOBSHOP, {"max_jobs": 20, "max_machines": 10})
    for name, n_jobs in (("ft06", 6), ("la01", 10), ("la11", 20)):
        env: Any = gym.make(JOBSHOP, instance=name, max_jobs=20, max_machines=10).unwrapped
        obs, _ = env.reset(seed=0)
        o, mask = codec.encode(env.snapshot())
        assert np.array_equal(o, obs)
        assert not mask[n_jobs:].any()
        rows = o[: 20 * 11].reshape(20, 11)
        assert rows[:n_jobs, 0].all() and not rows[n_jobs:].any()  # valid flags, zero padding


def test_jobshop_observation_is_richer_than_jssenv() -> None:
    env = gym.make("taktline/JobShop-v0", instance="ta01")
    assert env.observation_space.shape == (15 * 11 + 15 * 4 + 4,)  # JSSEnv: 15 * 7


@pytest.mark.parametrize(
    ("env_id", "mutate", "words"),
    [
        (DISPATCH, lambda s: s["stations"].pop(), "stations"),
        (DISPATCH, lambda s: s["stations"][0]["machines"][0].update(state="asleep"), "asleep"),
        (DISPATCH, lambda s: s["decision"].update(station="paint"), "paint"),
        (DISPATCH, lambda s: s["decision"].update(machine="cut.M9"), "cut.M9"),
        (JOBSHOP, lambda s: s.update(kind="line"), "kind"),
        (JOBSHOP, lambda s: s["jobs"][0]["operations"][0][0].__setitem__(0, 99), "machine 99"),
    ],
)
def test_malformed_snapshot_is_an_error_naming_the_field(
    env_id: str, mutate: Any, words: str
) -> None:
    kw = {"line": "serial5", "horizon": 200.0} if env_id == DISPATCH else {"instance": "ft06"}
    env: Any = gym.make(env_id, **kw).unwrapped
    env.reset(seed=0)
    snap = posted(env.snapshot())
    mutate(snap)
    codec = make_codec(env_id, kw)
    with pytest.raises(PolicyError, match=words):
        codec.encode(snap)


def test_line_snapshot_without_a_decision_cannot_be_decoded() -> None:
    env: Any = gym.make(DISPATCH, line="serial5", horizon=30.0).unwrapped
    for _ in play(env, 0):
        pass
    snap = env.snapshot()
    assert snap.decision is None
    _, mask = encode(snap)
    assert not mask.any()
    with pytest.raises(PolicyError, match="decision"):
        decode(snap, 0)
    with pytest.raises(PolicyError, match="decision"):
        candidates_from_snapshot(snap)


def test_unknown_env_id_is_an_error_listing_the_known_ones() -> None:
    with pytest.raises(PolicyError, match="taktline/JobShop-v0"):
        make_codec("taktline/Paint-v0", {})


def test_due_and_release_dates_reach_the_observation_and_the_kpis() -> None:
    from taktline.envs.jobshop import load_bundled
    from taktline.envs.jobshop.generators import with_release_and_due_dates

    inst = with_release_and_due_dates(load_bundled("ft06"), rng=0, release_span=0.3)
    env: Any = gym.make(JOBSHOP, instance=inst).unwrapped
    codec = make_codec(JOBSHOP, {"max_jobs": 6, "max_machines": 6})
    slack_seen = False
    last: dict[str, Any] = {}
    for obs, _, _, info, _ in play(env, 0):
        assert np.array_equal(codec.encode(posted(env.snapshot()))[0], obs)
        slack_seen |= bool(obs[: 6 * 11].reshape(6, 11)[:, 10].any())
        last = info
    assert slack_seen
    ready = env.state.job_ready
    late = [max(0, c - d) for c, d in zip(ready, inst.due_dates, strict=True)]
    assert last["kpis"]["total_tardiness"] == sum(late)
    assert last["kpis"]["mean_flow_time"] == pytest.approx(
        sum(c - r for c, r in zip(ready, inst.release_dates, strict=True)) / 6
    )


@pytest.mark.parametrize("case", [c for c in CASES if c[0] != JOBSHOP], ids=case_id)
def test_the_envs_decode_on_the_twin_is_decode_of_the_snapshot(
    case: tuple[str, dict[str, Any]],
) -> None:
    """The envs step by ``twin.apply(codec.decode_twin(twin, a))``: the same decision function
    reading the twin's request; it must equal ``decode(snapshot, a)`` for every feasible action."""
    env: Any = make(case).unwrapped
    env.reset(seed=4)
    rng = np.random.default_rng(2)
    steps = 0
    while True:
        snap = env.snapshot()
        for a in np.flatnonzero(env.action_masks()):
            assert env.codec.decode_twin(env.twin, int(a)) == env.codec.decode(snap, int(a))
        _, _, term, trunc, _ = env.step(int(rng.choice(np.flatnonzero(env.action_masks()))))
        steps += 1
        if term or trunc or steps >= 60:
            break
    assert steps > 3
