"""``Twin.fork``: a same-stream fork continues bit-identically, a seeded fork diverges, and
running a fork leaves the original as it was (the lookahead forks at every decision)."""

from __future__ import annotations

from collections import deque
from dataclasses import asdict
from typing import Any

import numpy as np
import pytest

from taktline.envs.distributions import Sampler
from taktline.envs.priorities import rule_choice
from taktline.envs.spec import load_spec
from taktline.envs.streams import Stream
from taktline.envs.twin import Twin
from taktline.envs.twin_state import Job, Machine, StationState

LINES = ("bodyshop", "machining", "serial5", "conwip_loop")
UNTIL = 300.0


def external(line: str, seed: int) -> Twin:
    """A twin that asks for every dispatch and, every 7 time units, for a release."""
    return Twin(
        load_spec(line),
        seed,
        log_events=True,
        external_release=True,
        review_period=7.0,
    )


def answer(twin: Twin, rule: str) -> None:
    """Answer the pending decision: ``rule`` dispatches, releases keep the pool at 2 orders."""
    req = twin.pending
    assert req is not None
    if req.kind == "dispatch":
        family = twin.machines[req.machine].last_family
        twin.dispatch(rule_choice(rule, req.candidates, twin.now, family))
    else:
        twin.release(max(0, len(twin.pool) - 2))


def run_on(twin: Twin, rule: str, until: float = UNTIL) -> int:
    """Run to ``until`` answering every decision with ``rule``; returns the decisions taken."""
    n = 0
    while twin.run_until_decision(until) is not None:
        answer(twin, rule)
        n += 1
    return n


def at_decision(line: str, seed: int, k: int, rule: str = "SPT") -> Twin:
    """A twin stopped at its ``k``-th decision point."""
    twin = external(line, seed)
    for _ in range(k):
        assert twin.run_until_decision(UNTIL) is not None
        answer(twin, rule)
    assert twin.run_until_decision(UNTIL) is not None
    return twin


def state(twin: Twin) -> tuple[Any, ...]:
    """Everything observable of a twin: events, KPIs, snapshot, clock."""
    return (list(twin.log or ()), asdict(twin.kpis()), twin.snapshot().model_dump(), twin.now)


@pytest.mark.parametrize("line", LINES)
@pytest.mark.parametrize("rule", ["FIFO", "SPT", "EDD"])
def test_a_same_stream_fork_continues_bit_identically(line: str, rule: str) -> None:
    twin = at_decision(line, seed=4, k=25)
    fork = twin.fork()
    n_fork = run_on(fork, rule)
    n_twin = run_on(twin, rule)
    assert n_fork == n_twin > 20
    assert len(twin.log or ()) > 200
    assert state(fork) == state(twin)  # exact: events, every KPI, the snapshot


@pytest.mark.parametrize("line", LINES)
def test_a_fork_of_a_fork_and_of_an_unrun_twin_continue_bit_identically(line: str) -> None:
    fresh = external(line, 9)
    forks = [fresh.fork()]
    assert fresh.run_until_decision(UNTIL) is not None
    answer(fresh, "SPT")
    forks[0].run_until_decision(UNTIL)
    answer(forks[0], "SPT")
    forks.append(forks[0].fork())  # its streams are stand-ins, some never used yet
    forks.append(forks[1].fork())
    for t in [fresh, *forks]:
        run_on(t, "SPT")
    assert all(state(f) == state(fresh) for f in forks)


@pytest.mark.parametrize("line", LINES)
def test_running_a_fork_leaves_the_original_as_it_was(line: str) -> None:
    twin = at_decision(line, seed=2, k=15)
    reference = at_decision(line, seed=2, k=15)  # the same run, never forked
    before = state(twin)
    for seed in (None, 11):
        fork = twin.fork(seed)
        run_on(fork, "LPT")
        assert state(twin) == before
    run_on(twin, "SPT")
    run_on(reference, "SPT")
    assert state(twin) == state(reference)


@pytest.mark.parametrize("line", LINES)
def test_a_seeded_fork_diverges_and_is_reproducible(line: str) -> None:
    twin = at_decision(line, seed=5, k=10)
    a, b, c = twin.fork(seed=100), twin.fork(seed=100), twin.fork(seed=101)
    for t in (twin, a, b, c):
        run_on(t, "SPT")
    assert state(a) == state(b)
    assert a.seed == 100
    assert a.log != twin.log
    assert a.log != c.log
    # what was drawn before the fork stays: the first events after it are the original's
    k = len(at_decision(line, seed=5, k=10).log or ())
    assert a.log[:k] == twin.log[:k]  # type: ignore[index]


def test_a_seeded_fork_draws_from_the_streams_of_a_twin_built_with_that_seed() -> None:
    fork = Twin(load_spec("bodyshop"), 1).fork(seed=42)
    spawned = np.random.default_rng(42).spawn(len(fork._streams))  # as Twin(spec, 42) does
    for built, new in zip(spawned, fork._streams, strict=True):
        assert np.array_equal(built.random(5), new.random(5))


def test_hooks_are_not_carried_and_the_log_is_copied() -> None:
    twin = at_decision("serial5", seed=1, k=5)
    seen: list[str] = []
    twin.hooks.append(lambda t, kind, job, st, m: seen.append(kind))
    fork = twin.fork()
    assert fork.hooks == []
    n = len(twin.log or ())
    run_on(fork, "SPT")
    assert seen == []
    assert len(twin.log or ()) == n < len(fork.log or ())


# the only containers a fork shares with its original: parameters the twin never changes
SHARED = {
    "_prod_route",
    "_prod_means",
    "_prod_remwork",
    "_prod_family",
    "_prod_allow",
    "_prod_revenue",
    "_mix_cdf",
    "_orders",
    "_entry_stations",
}
STATE = (list, dict, deque, set, Job, Machine, StationState, Sampler, Stream)


def _attributes(obj: Any) -> dict[str, Any]:
    """An object's attributes: its ``__dict__``/``__slots__`` in Python, the attribute list mypyc
    keeps (``__mypyc_attrs__``) on a compiled class."""
    names = getattr(type(obj), "__mypyc_attrs__", None)
    if names is None and not hasattr(obj, "__dict__"):
        names = type(obj).__slots__
    if names is None:
        return dict(vars(obj))
    return {n: getattr(obj, n) for n in names if n != "__dict__" and hasattr(obj, n)}


def _mutable_parts(obj: Any, path: str) -> list[tuple[str, Any]]:
    """Every mutable object reachable from a twin's state, with where it sits."""
    out: list[tuple[str, Any]] = []
    if isinstance(obj, Sampler):  # its block of drawn numbers is replaced, never edited
        return [(path, obj), (f"{path}._rng", obj._rng)] if obj._const is None else []
    if isinstance(obj, Stream):
        return [(path, obj)]
    if isinstance(obj, (Job, Machine, StationState)):
        out.append((path, obj))
        for slot, value in _attributes(obj).items():
            if isinstance(value, STATE) and slot not in ("times",):
                out += _mutable_parts(value, f"{path}.{slot}")
        return out
    if isinstance(obj, (list, deque, set)):
        out.append((path, obj))
        for i, v in enumerate(obj):
            if isinstance(v, STATE):
                out += _mutable_parts(v, f"{path}[{i}]")
    elif isinstance(obj, dict):
        out.append((path, obj))
        for k, v in obj.items():
            if isinstance(v, STATE):
                out += _mutable_parts(v, f"{path}[{k!r}]")
    return out


@pytest.mark.parametrize("line", LINES)
def test_a_fork_shares_no_mutable_state_with_its_original(line: str) -> None:
    """Checked on every attribute, so state added to the twin later is covered too."""
    twin = at_decision(line, seed=3, k=20)
    fork = twin.fork()
    theirs = {
        id(obj)
        for name, value in _attributes(twin).items()
        if name not in SHARED
        for _, obj in _mutable_parts(value, name)
    }
    shared = [
        where
        for name, value in _attributes(fork).items()
        if name not in SHARED | {"_streams"}  # streams no sampler draws from stay shared
        for where, obj in _mutable_parts(value, name)
        if id(obj) in theirs
    ]
    assert shared == []
    assert fork._streams is not twin._streams
