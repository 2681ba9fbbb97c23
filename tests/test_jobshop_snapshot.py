"""Job-shop snapshots: typed, restored exactly, forked, and the one source of rule candidates.

Random job shops (classical, random routings, flexible with two machines per operation, with
release and due dates), both schemes, seeded random decisions.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from taktline.agents.jobshop_dispatch import dispatch
from taktline.agents.policies import RulePolicy
from taktline.agents.rules import DISPATCH_RULES, get_rule
from taktline.envs.decision import Decision
from taktline.envs.encoding_jobshop import JobShopCodec, jobshop_candidates, jobshop_snapshot
from taktline.envs.env_jobshop import JobShopEnv
from taktline.envs.jobshop import JobShopInstance, JobShopState, generators
from taktline.envs.snapshot import JobShopSnapshot, as_snapshot
from taktline.errors import InfeasibleActionError, PolicyError, SpecError

SHOPS: dict[str, Callable[[int], JobShopInstance]] = {
    "taillard_like": lambda s: generators.taillard_like(5, 4, rng=s),
    "random_routing": lambda s: generators.random_routing(6, 4, rng=s),
    "flexible": lambda s: generators.flexible(8, 5, rng=s, machines_per_op=(2, 2)),
    "flexible_dated": lambda s: generators.with_release_and_due_dates(
        generators.flexible(6, 4, rng=s, machines_per_op=(1, 3)), rng=s, release_span=0.5
    ),
}
CASES = [
    (kind, scheme, seed) for kind in SHOPS for scheme in ("active", "non-delay") for seed in (1, 2)
]


def _finish(state: JobShopState, rng: random.Random) -> list[int]:
    """Random decisions to the end; returns them."""
    picks = []
    while not state.done:
        picks.append(rng.choice(state.candidate_jobs))
        state.apply(picks[-1])
    return picks


def _as_decision(d: Any) -> Decision:
    return d if isinstance(d, Decision) else Decision.model_validate(dict(d))


@pytest.mark.parametrize(("kind", "scheme", "seed"), CASES)
def test_a_restored_snapshot_is_the_same_snapshot_and_continues_the_same_schedule(
    kind: str, scheme: str, seed: int
) -> None:
    inst = SHOPS[kind](seed)
    rng = random.Random(seed)
    state = JobShopState(inst, scheme)
    checked = 0
    while True:
        snap = jobshop_snapshot(state)
        body = snap.model_dump(mode="json")
        assert as_snapshot(body) == snap  # the unvalidated build is a valid snapshot
        for given in (snap, body):
            restored = JobShopState.from_snapshot(inst, given)
            assert jobshop_snapshot(restored) == snap
        # continue the original (on a fork) and the restored state under the same decisions
        ahead, restored = state.fork(), JobShopState.from_snapshot(inst, body)
        past = len(ahead.schedule)
        pick = random.Random(checked)
        while not ahead.done:
            assert jobshop_snapshot(restored) == jobshop_snapshot(ahead)
            job = pick.choice(ahead.candidate_jobs)
            ahead.apply(job)
            restored.apply(job)
        assert restored.done and jobshop_snapshot(restored) == jobshop_snapshot(ahead)
        assert restored.schedule == ahead.schedule[past:]
        assert restored.makespan == ahead.makespan and restored.job_ready == ahead.job_ready
        checked += 1
        if state.done:
            break
        state.apply(rng.choice(state.candidate_jobs))
    assert checked == inst.n_operations + 1


@pytest.mark.parametrize("kind", list(SHOPS))
def test_a_fork_continues_exactly_and_leaves_the_original_alone(kind: str) -> None:
    inst = SHOPS[kind](3)
    state = JobShopState(inst)
    rng = random.Random(3)
    for _ in range(inst.n_operations // 2):
        state.apply(rng.choice(state.candidate_jobs))
    before = jobshop_snapshot(state)
    fork = state.fork()
    picks = _finish(fork, random.Random(4))
    assert jobshop_snapshot(state) == before  # running the fork did not touch the original
    for job in picks:
        state.apply(job)
    assert state.schedule == fork.schedule and state.makespan == fork.makespan


def test_an_env_fork_continues_exactly_and_draws_the_same_next_instances() -> None:
    spec = {"generator": "flexible", "n_jobs": 6, "n_machines": 4, "machines_per_op": [2, 2]}
    env = JobShopEnv(instance=spec, skip_forced=True)
    env.reset(seed=5)
    env.step(int(np.flatnonzero(env.action_masks())[-1]))
    fork = env.fork()
    rng = np.random.default_rng(0)
    trace = []
    for _ in range(3):  # finish this episode, then two more on freshly drawn instances
        done = False
        while not done:
            a = int(rng.choice(np.flatnonzero(fork.action_masks())))
            obs, r, done, _, info = fork.step(a)
            trace.append((a, obs, r, info.get("makespan")))
        fork.reset()
    assert len(trace) > 10
    it = iter(trace)
    for _ in range(3):
        done = False
        while not done:
            a, obs_f, r_f, ms_f = next(it)
            obs, r, done, _, info = env.step(a)
            assert np.array_equal(obs, obs_f) and r == r_f and info.get("makespan") == ms_f
        env.reset()


def test_rule_candidates_count_the_decided_operation_at_the_decision_machine() -> None:
    # job 0's first operation takes 5 on machine 0 (2 on machine 1); machine 0 decides first
    inst = JobShopInstance(jobs=(((((0, 5), (1, 2))), ((1, 3),)), (((0, 1),),)), n_machines=2)
    snap = jobshop_snapshot(JobShopState(inst))
    assert snap.decision is not None and snap.decision.machine == 0
    for given in (snap, snap.model_dump(mode="json")):
        cands = jobshop_candidates(given)
        assert [(c.id, c.name, c.processing_time) for c in cands] == [(0, "0", 5.0), (1, "1", 1.0)]
        assert [c.remaining_work for c in cands] == [5.0 + 3.0, 1.0]
        assert [c.remaining_ops for c in cands] == [2, 1]
        assert cands[0].due_date == float("inf") and cands[0].queue_entry_time == 0.0


def test_mwkr_and_every_rule_pick_the_same_job_in_the_env_and_on_the_posted_snapshot() -> None:
    """The issue's drift: flexible 8x5 shops, 2 alternatives per operation (40 of them)."""
    decisions = disagreements = 0
    others = sorted(set(DISPATCH_RULES) - {"MWKR"})
    for seed in range(40):
        inst = generators.flexible(8, 5, rng=seed, machines_per_op=(2, 2))
        for rule in ("MWKR", *(others if seed < 4 else ())):
            offline = dispatch(inst, rule)
            env = JobShopEnv(instance=inst, skip_forced=False)
            env.reset(seed=0)
            policy = RulePolicy(rule)
            done = False
            while not done:
                body = env.snapshot().model_dump(mode="json")
                job = _as_decision(policy.decide(body)).job
                cands = jobshop_candidates(env.snapshot())
                mine = cands[get_rule(rule).dispatch(cands, float(body["time"]), None)].id
                decisions += 1
                disagreements += job != mine
                _, _, done, _, info = env.step(mine)
            assert info["makespan"] == offline.makespan
    print(f"rule agreement on flexible shops: {decisions} decisions, {disagreements} disagreements")
    assert decisions > 1000 and disagreements == 0


@pytest.mark.parametrize("kind", ["taillard_like", "flexible"])
def test_the_env_steps_by_decoding_its_snapshot_then_applying_the_decision(kind: str) -> None:
    inst = SHOPS[kind](6)
    env = JobShopEnv(instance=inst, skip_forced=False)
    env.reset(seed=0)
    codec, rng, done = env.codec, random.Random(6), False
    while not done:
        assert env.state is not None
        a = rng.choice(env.state.candidate_jobs)
        decision = codec.decode(env.snapshot(), a)
        assert decision == codec.decode_state(env.state, a)
        assert decision.job == a and decision.machine == env.state.candidate_machine
        applied = env.state.fork()
        applied.apply_decision(decision.model_dump())
        _, _, done, _, _ = env.step(a)
        assert jobshop_snapshot(applied) == env.snapshot()


def test_decisions_that_do_not_fit_the_decision_point_are_refused_naming_the_field() -> None:
    state = JobShopState(SHOPS["flexible"](7))
    job, m = state.candidate_jobs[0], state.candidate_machine
    start = state.candidate_starts[0]
    ok = {"kind": "dispatch", "machine": m, "job": job, "operation": 0, "start": start}
    for change, words in (
        ({"operation": 1}, "decision.operation"),
        ({"start": start + 1}, "decision.start"),
        ({"machine": (m + 1) % 5}, "not the decision machine"),
        ({"job": "J-1"}, "job and machine numbers"),
        ({"kind": "release", "count": 1}, "job and machine numbers"),
    ):
        with pytest.raises(InfeasibleActionError, match=words):
            state.fork().apply_decision({**ok, **change})
    not_cand = next(j for j in range(8) if j not in state.candidate_jobs)
    with pytest.raises(InfeasibleActionError, match="cannot start its next operation"):
        JobShopCodec(8, 5).decode(jobshop_snapshot(state), not_cand)
    state.apply_decision(ok)
    assert state.schedule[0][:3] == (job, 0, m)


def _mutations(body: dict[str, Any]) -> list[tuple[Callable[[dict[str, Any]], Any], str]]:
    d = body["decision"]
    return [
        (lambda s: s.update(instance="other"), "instance: 'other'"),
        (lambda s: s["jobs"][1]["operations"].pop(), "jobs[1]"),
        (lambda s: s["jobs"][2].update(release_date=3), "jobs[2].release_date"),
        (lambda s: s["jobs"][0].update(due_date=1.0), "jobs[0].due_date"),
        (lambda s: s.update(time_scale=s["time_scale"] + 1), "time_scale"),
        (lambda s: s.update(makespan=s["makespan"] + 1), "makespan"),
        (lambda s: s.update(time=s["time"] + 1), "time:"),
        (lambda s: s["decision"]["candidates"].pop(), "decision.candidates"),
        (
            lambda s: s["decision"].update(machine=(d["machine"] + 1) % len(s["machines"])),
            "decision",
        ),
    ]


def test_restoring_a_snapshot_that_does_not_fit_the_instance_names_the_field() -> None:
    inst = SHOPS["flexible"](8)
    state = JobShopState(inst)
    rng = random.Random(8)
    for _ in range(10):
        state.apply(rng.choice(state.candidate_jobs))
    while len(state.candidate_jobs) < 2:
        state.apply(state.candidate_jobs[0])
    body = jobshop_snapshot(state).model_dump(mode="json")
    assert JobShopState.from_snapshot(inst, body).job_ready == state.job_ready
    failures = 0
    for mutate, words in _mutations(body):
        bad = copy.deepcopy(body)
        mutate(bad)
        with pytest.raises((SpecError, PolicyError)) as err:
            JobShopState.from_snapshot(inst, bad)
        assert words in str(err.value), (words, str(err.value))
        failures += 1
    assert failures == len(_mutations(body))
    done = JobShopState(inst)
    _finish(done, rng)
    finished = jobshop_snapshot(done)
    assert finished.decision is None and JobShopState.from_snapshot(inst, finished).done
    with pytest.raises(PolicyError, match="schedule is complete"):
        jobshop_candidates(finished)
    assert isinstance(finished, JobShopSnapshot)


def test_a_snapshot_changed_in_place_does_not_leak_into_the_next_one() -> None:
    state = JobShopState(SHOPS["flexible"](9))
    snap = jobshop_snapshot(state)
    fresh = snap.model_copy(deep=True)
    snap.jobs[0].ready += 7  # records are reused from one snapshot to the next
    snap.machines[1].available += 3
    assert jobshop_snapshot(state) == fresh


@pytest.mark.parametrize("skip_forced", [True, False])
def test_an_env_reset_from_a_snapshot_goes_on_as_the_original(skip_forced: bool) -> None:
    inst = SHOPS["flexible_dated"](10)
    env = JobShopEnv(instance=inst, skip_forced=skip_forced)
    env.reset(seed=0)
    rng = np.random.default_rng(10)
    for _ in range(3):
        env.step(int(rng.choice(np.flatnonzero(env.action_masks()))))
    assert env.state is not None and not env.state.done
    body = env.snapshot().model_dump(mode="json")
    other = JobShopEnv(instance=inst, skip_forced=skip_forced)
    obs_r, _ = other.reset(options={"snapshot": body})
    assert other.snapshot() == env.snapshot()
    assert np.array_equal(obs_r, env.codec.encode(env.snapshot())[0])
    done = False
    while not done:
        a = int(rng.choice(np.flatnonzero(env.action_masks())))
        obs, r, done, _, info = env.step(a)
        obs_r, r_r, done_r, _, info_r = other.step(a)
        assert np.array_equal(obs, obs_r) and r == r_r and done == done_r
    assert info["kpis"] == info_r["kpis"]
    with pytest.raises(PolicyError, match=r"options\.snapshot\.scheme"):
        JobShopEnv(instance=inst, scheme="non-delay").reset(options={"snapshot": body})
    gen = JobShopEnv(instance={"generator": "flexible", "n_jobs": 6, "n_machines": 4})
    with pytest.raises(PolicyError, match="pass the snapshot's instance"):
        gen.reset(options={"snapshot": body})
