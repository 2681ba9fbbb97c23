"""The schedule builder: feasibility, generation-scheme semantics, replay, copies, masks."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taktline.envs.jobshop import (
    JobShopInstance,
    JobShopState,
    ScheduledOperation,
    check_schedule,
    load_bundled,
    make_active,
    replay_schedule,
)
from taktline.envs.jobshop.batch import JobShopBatch
from taktline.envs.jobshop.generators import flexible, random_routing, with_release_and_due_dates
from taktline.errors import InfeasibleActionError, SpecError


@st.composite
def instances(draw: st.DrawFn, flexible_ops: bool = False) -> JobShopInstance:
    """Small random (flexible) job shops, with or without release dates."""
    seed = draw(st.integers(0, 2**31))
    n_jobs, n_machines = draw(st.integers(1, 6)), draw(st.integers(1, 5))
    if flexible_ops:
        inst = flexible(n_jobs, n_machines, rng=seed, ops_per_job=(1, 4), time_range=(1, 9))
    else:
        recirculation = draw(st.booleans())
        inst = random_routing(
            n_jobs,
            n_machines,
            rng=seed,
            time_range=(1, 9),
            recirculation=recirculation,
            ops_per_job=(1, 6 if recirculation else n_machines),
        )
    if draw(st.booleans()):
        inst = with_release_and_due_dates(inst, rng=seed, release_span=0.5)
    return inst


def _random_run(inst: JobShopInstance, scheme: str, seed: int) -> JobShopState:
    rng = random.Random(seed)
    state = JobShopState(inst, scheme)
    while not state.done:
        assert state.candidate_jobs, "a state that is not done must offer a decision"
        state.apply(rng.choice(state.candidate_jobs))
    return state


def _is_non_delay(inst: JobShopInstance, schedule: list[ScheduledOperation]) -> bool:
    """No operation waits while its machine stands idle and its job is ready."""
    by_machine: dict[int, list[ScheduledOperation]] = {}
    for s in schedule:
        by_machine.setdefault(s.machine, []).append(s)
    end_of = {(s.job, s.op): s.end for s in schedule}
    releases = inst.release_dates or (0,) * inst.n_jobs
    for s in schedule:
        ready = end_of[(s.job, s.op - 1)] if s.op else releases[s.job]
        busy = sorted((o.start, o.end) for o in by_machine[s.machine] if o.start < s.start)
        t = ready
        for a, b in busy:
            if a > t:
                break
            t = max(t, b)
        if t < s.start:
            return False
    return True


@settings(max_examples=150, deadline=None)
@given(inst=instances(), scheme=st.sampled_from(["active", "non-delay"]), seed=st.integers(0, 99))
def test_random_decisions_always_give_feasible_complete_schedules(
    inst: JobShopInstance, scheme: str, seed: int
) -> None:
    state = _random_run(inst, scheme, seed)
    assert len(state.schedule) == inst.n_operations
    assert check_schedule(inst, state.schedule) == state.makespan
    assert state.candidate_jobs == [] and state.mask().sum() == 0


@settings(max_examples=80, deadline=None)
@given(
    inst=instances(flexible_ops=True),
    scheme=st.sampled_from(["active", "non-delay"]),
    seed=st.integers(0, 99),
)
def test_flexible_random_decisions_give_feasible_schedules(
    inst: JobShopInstance, scheme: str, seed: int
) -> None:
    state = _random_run(inst, scheme, seed)
    assert check_schedule(inst, state.schedule) == state.makespan


@settings(max_examples=150, deadline=None)
@given(inst=instances(), seed=st.integers(0, 99))
def test_every_generated_schedule_is_active_and_replays_exactly(
    inst: JobShopInstance, seed: int
) -> None:
    for scheme in ("active", "non-delay"):
        schedule = _random_run(inst, scheme, seed).schedule
        # active: no operation can move left into a gap, so left-justifying changes nothing
        assert sorted(make_active(inst, schedule)) == sorted(schedule)
        replayed = replay_schedule(inst, schedule)  # raises if it diverged
        assert sorted(replayed.schedule) == sorted(schedule)


@settings(max_examples=150, deadline=None)
@given(inst=instances(), seed=st.integers(0, 99))
def test_non_delay_schedules_keep_no_machine_idle_and_are_a_subset_of_active(
    inst: JobShopInstance, seed: int
) -> None:
    nd = _random_run(inst, "non-delay", seed)
    assert _is_non_delay(inst, nd.schedule)
    # non-delay is a subset of active: the active builder reproduces it decision by decision
    assert sorted(replay_schedule(inst, nd.schedule).schedule) == sorted(nd.schedule)


def test_active_scheme_reaches_an_optimum_that_non_delay_excludes() -> None:
    # J0: M0(1) M1(1) M2(10); J1: M1(5). The optimum (12) keeps M1 idle during [0, 1] for J0;
    # a non-delay schedule must start J1 on M1 at 0 and ends at 16.
    inst = JobShopInstance.from_matrices([[0, 1, 2], [1]], [[1, 1, 10], [5]])
    assert {_random_run(inst, "active", s).makespan for s in range(30)} == {12, 16}
    assert {_random_run(inst, "non-delay", s).makespan for s in range(30)} == {16}
    best = next(r for r in (_random_run(inst, "active", s) for s in range(30)) if r.makespan == 12)
    assert not _is_non_delay(inst, best.schedule)  # the checker itself can fail


@settings(max_examples=100, deadline=None)
@given(inst=instances(), seed=st.integers(0, 99), delay_seed=st.integers(0, 99))
def test_replay_of_a_delayed_schedule_is_never_longer(
    inst: JobShopInstance, seed: int, delay_seed: int
) -> None:
    """Push every operation right (a feasible but non-active schedule); replay recovers it."""
    base = _random_run(inst, "active", seed).schedule
    rng = random.Random(delay_seed)
    shift: dict[tuple[int, int], int] = {}
    delayed = []
    # shifting by a non-decreasing amount along both jobs and machines keeps feasibility
    order = sorted(base, key=lambda s: s.start)
    total = 0
    for s in order:
        total += rng.randint(0, 3)
        shift[(s.job, s.op)] = total
        delayed.append(s._replace(start=s.start + total, end=s.end + total))
    check_schedule(inst, delayed)
    replayed = replay_schedule(inst, delayed)
    assert replayed.makespan <= max(s.end for s in delayed)
    assert replayed.makespan <= max(s.end for s in base)


def test_cp_sat_optimum_of_ft06_replays_to_55() -> None:
    """CP-SAT's optimal ft06 schedule (generally not active) replays to the optimum."""
    inst = load_bundled("ft06")
    from taktline.agents.cpsat import solve

    res = solve(inst, time_limit_s=10)
    assert replay_schedule(inst, res.schedule).makespan == 55


def test_invalid_actions_raise_and_leave_the_state_unchanged() -> None:
    state = JobShopState(load_bundled("ft06"))
    not_cand = next(j for j in range(6) if j not in state.candidate_jobs)
    before = state.arrays()
    with pytest.raises(InfeasibleActionError, match="not schedulable now"):
        state.apply(not_cand)
    with pytest.raises(InfeasibleActionError, match="decision machine"):
        state.apply(state.candidate_jobs[0], machine=(state.candidate_machine + 1) % 6)
    after = state.arrays()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    while not state.done:
        state.apply(state.candidate_jobs[0])
    with pytest.raises(InfeasibleActionError, match="complete"):
        state.apply(0)
    with pytest.raises(SpecError, match="scheme"):
        JobShopState(load_bundled("ft06"), scheme="semi-active")


def test_copy_is_independent_and_deterministic() -> None:
    inst = load_bundled("la01")
    state = JobShopState(inst)
    for _ in range(10):
        state.apply(state.candidate_jobs[-1])
    before = state.arrays()
    other = _finish(state.copy(), 2)  # finishing a copy leaves the original where it was
    assert len(other.schedule) == inst.n_operations and not state.done
    assert all(np.array_equal(before[k], v) for k, v in state.arrays().items())
    twin = state.copy()
    a, b = _finish(state, 1), _finish(twin, 1)
    assert a.schedule == b.schedule  # same decisions from a copy: the same schedule
    assert a.schedule != other.schedule  # and the check above could tell them apart
    fresh = state.copy()
    fresh.reset()
    assert fresh.schedule == [] and fresh.candidate_jobs == JobShopState(inst).candidate_jobs


def _finish(state: JobShopState, seed: int) -> JobShopState:
    rng = random.Random(seed)
    while not state.done:
        state.apply(rng.choice(state.candidate_jobs))
    return state


def test_arrays_describe_the_state_for_observations() -> None:
    inst = load_bundled("ft06")
    state = JobShopState(inst)
    arr = state.arrays()
    assert arr["remaining_work"].tolist() == [sum(r) for r in inst.times_matrix()]
    assert arr["remaining_ops"].tolist() == [6] * 6
    assert arr["op_machine"].tolist() == [r[0] for r in inst.machines_matrix()]
    assert arr["mask"].tolist() == [j in state.candidate_jobs for j in range(6)]
    j = state.candidate_jobs[0]
    p = state.candidate_times[0]
    state.apply(j)
    arr = state.arrays()
    assert arr["job_ready"][j] == p and arr["next_op"][j] == 1
    assert arr["remaining_work"][j] == sum(inst.times_matrix()[j]) - p


def test_giffler_thompson_conflict_set_on_a_hand_checked_instance() -> None:
    # J0: M0(3) M1(2); J1: M0(2) M1(4); J2: M1(5) M0(1)
    inst = JobShopInstance.from_matrices([[0, 1], [0, 1], [1, 0]], [[3, 2], [2, 4], [5, 1]])
    s = JobShopState(inst)
    # earliest completion: J1 on M0 at 2 -> M* = M0, C* = 2; J0 and J1 start at 0 < 2
    assert (s.candidate_machine, sorted(s.candidate_jobs)) == (0, [0, 1])
    s.apply(0)  # M0 busy until 3; J0 -> M1 (ect 3+2=5), J1 on M0 (3+2=5), J2 on M1 (0+5=5)
    # tie at 5: lowest machine M0; conflict set = jobs on M0 starting before 5
    assert (s.candidate_machine, s.candidate_jobs) == (0, [1])
    nd = JobShopState(inst, "non-delay")
    # earliest start 0 on M0 (lowest machine among M0 and M1)
    assert (nd.candidate_machine, sorted(nd.candidate_jobs)) == (0, [0, 1])


def test_bundled_rollouts_on_ta01_are_feasible_for_both_schemes() -> None:
    inst = load_bundled("ta01")
    for scheme in ("active", "non-delay"):
        state = _random_run(inst, scheme, 0)
        assert check_schedule(inst, state.schedule) >= 1231


@settings(max_examples=25, deadline=None)
@given(inst=instances(), scheme=st.sampled_from(["active", "non-delay"]), seed=st.integers(0, 99))
def test_batch_builder_matches_the_single_state_row_by_row(
    inst: JobShopInstance, scheme: str, seed: int
) -> None:
    batch = JobShopBatch(inst, batch_size=8, scheme=scheme)
    states = [JobShopState(inst, scheme) for _ in range(8)]
    rng = np.random.default_rng(seed)
    while True:
        for row, state in enumerate(states):
            assert sorted(np.flatnonzero(batch.mask[row]).tolist()) == sorted(state.candidate_jobs)
            assert batch.candidate_machine[row] == state.candidate_machine
        if batch.done:
            break
        jobs = batch.random_decisions(rng)
        batch.apply(jobs)
        for row, state in enumerate(states):
            if not state.done:
                state.apply(int(jobs[row]))
    assert all(s.done for s in states)
    for row, state in enumerate(states):
        assert batch.makespan[row] == state.makespan
        for so in state.schedule:
            assert batch.start[row, so.job, so.op] == so.start


def test_batch_builder_rejects_infeasible_decisions_and_flexible_instances() -> None:
    batch = JobShopBatch(load_bundled("ft06"), batch_size=2)
    bad = np.array([next(j for j in range(6) if not batch.mask[0, j])] * 2)
    with pytest.raises(InfeasibleActionError, match="row 0"):
        batch.apply(bad)
    with pytest.raises(SpecError, match="flexible"):
        JobShopBatch(flexible(3, 3, rng=0, machines_per_op=(2, 3)), batch_size=2)
