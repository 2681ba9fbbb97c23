"""Local search for classical job shops: construct a schedule, then tabu search on its critical
path.

Two stages, each time-budgeted and anytime (the best makespan so far is logged with its time):

* :func:`construct` builds starting schedules: every dispatching rule in
  :data:`CONSTRUCT_RULES`, then batches of most-work-remaining schedules with random
  tie-breaking noise, built in lockstep by :class:`~taktline.envs.jobshop.batch.JobShopBatch`,
  until its budget is spent. The best one is returned.
* :func:`tabu_search` improves a schedule with the N5 neighbourhood of Nowicki & Smutnicki
  (1996): swap the first two or the last two operations of a *critical block* (a maximal run of
  critical operations on one machine), never the first two of the first block nor the last two
  of the last. Moves are ranked by the head/tail estimate of the new makespan (Taillard 1994)
  in O(1); the chosen move is applied and heads and tails are recomputed in one topological
  pass. A swapped pair may not be swapped back for a random tenure of ``10 + n/m`` to
  ``1.5 (10 + n/m)`` iterations unless that would beat the best makespan (aspiration). After
  ``stall_iterations`` without improvement the search restarts from the best schedule with a few
  random critical swaps.

The schedules are semi-active: every operation starts as soon as its job and machine
predecessors allow; :func:`~taktline.envs.jobshop.replay.check_schedule` accepts each one (the
tests check it) and the makespan never exceeds the start schedule's.

>>> from taktline.envs.jobshop import load_bundled
>>> inst = load_bundled("ft06")
>>> start = construct(inst, time_limit_s=0.2, seed=0)
>>> result = tabu_search(inst, start.schedule, time_limit_s=1.0, seed=0)
>>> result.makespan <= start.makespan, result.makespan >= 55
(True, True)
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from taktline.envs.jobshop.instance import JobShopInstance
from taktline.envs.jobshop.schedule import JobShopState, ScheduledOperation
from taktline.errors import PolicyError

#: The greedy rules :func:`construct` runs (both generation schemes each): most work remaining,
#: most operations remaining, shortest and longest processing time, earliest ready.
CONSTRUCT_RULES: tuple[str, ...] = ("MWKR", "MOPNR", "SPT", "LPT", "FIFO")


@dataclass(frozen=True)
class AnytimePoint:
    """The best makespan known ``time_s`` seconds after the search began; ``stage`` found it."""

    time_s: float
    makespan: int
    stage: str


@dataclass
class SearchResult:
    """A schedule and how it was found.

    Attributes:
        makespan: The schedule's makespan.
        schedule: Every operation with its machine, start and end, sorted by start.
        log: The anytime log: one point per improvement, best makespan non-increasing.
        iterations: Moves applied (tabu) or schedules built (construct).
        wall_time_s: Time spent.
        lower_bound: A proven lower bound equal to ``makespan`` (the schedule is optimal), or
            ``None`` when optimality is not proven.
    """

    makespan: int
    schedule: list[ScheduledOperation]
    log: list[AnytimePoint] = field(default_factory=list)
    iterations: int = 0
    wall_time_s: float = 0.0
    lower_bound: int | None = None


def require_classical(instance: JobShopInstance, what: str) -> None:
    """Refuse a flexible job shop (the critical-path neighbourhoods need fixed machines)."""
    if instance.is_flexible:
        raise PolicyError(
            f"{what}: {instance.name} is a flexible job shop (operations with several machines); "
            "construction, tabu search and LNS handle classical job shops only; use --method cpsat"
        )


def _greedy(instance: JobShopInstance, rule: int, scheme: str) -> JobShopState:
    """One schedule by rule ``CONSTRUCT_RULES[rule]`` on the schedule builder (ties: lowest job)."""
    state = JobShopState(instance, scheme)
    while not state.done:
        cands = state.candidate_jobs
        if len(cands) == 1:
            state.apply(cands[0])
            continue
        if rule == 0:  # MWKR
            keys = [-state.remaining_work(j) for j in cands]
        elif rule == 1:  # MOPNR
            keys = [-state.remaining_ops(j) for j in cands]
        elif rule in (2, 3):  # SPT, LPT
            keys = [t if rule == 2 else -t for t in state.candidate_times]
        else:  # FIFO: earliest ready
            keys = [state.job_ready[j] for j in cands]
        state.apply(cands[keys.index(min(keys))])
    return state


def construct(
    instance: JobShopInstance,
    time_limit_s: float = 1.0,
    seed: int = 0,
    batch_size: int = 64,
    noise: float = 0.3,
    clock: float | None = None,
) -> SearchResult:
    """The best schedule of the greedy rules and of noisy most-work-remaining sampling.

    First every rule of :data:`CONSTRUCT_RULES` builds one schedule (ties to the lowest job
    id) in the non-delay, then in the active scheme; MWKR in the non-delay scheme always runs,
    the others while time is left. Then, while time is left, batches of ``batch_size``
    schedules are built in lockstep whose remaining-work priority carries uniform noise (a
    batch cut short by the limit is dropped).

    Args:
        instance: A classical job shop.
        time_limit_s: Budget (one greedy schedule is always built).
        seed: Seed of the sampling noise.
        batch_size: Schedules built per batch.
        noise: Noise on the remaining-work priority, relative to the mean job's work.
        clock: ``time.perf_counter()`` value the anytime log counts from (default: now).
    """
    from taktline.envs.jobshop.batch import JobShopBatch

    require_classical(instance, "construct")
    t0 = time.perf_counter() if clock is None else clock
    started = time.perf_counter()
    deadline = started + time_limit_s
    best: list[ScheduledOperation] = []
    best_ms = 1 << 62
    log: list[AnytimePoint] = []
    built = 0
    for scheme in ("non-delay", "active"):
        for rule, name in enumerate(CONSTRUCT_RULES):
            if built and time.perf_counter() >= deadline:
                break
            state = _greedy(instance, rule, scheme)
            built += 1
            if state.makespan < best_ms:
                best_ms, best = state.makespan, state.schedule
                log.append(AnytimePoint(time.perf_counter() - t0, best_ms, name))
    rng = np.random.default_rng(seed)
    n = instance.n_jobs
    width = max(len(ops) for ops in instance.jobs)
    work_left = np.zeros((n, width + 1))
    for j, ops in enumerate(instance.jobs):
        for i in range(len(ops) - 1, -1, -1):
            work_left[j, i] = work_left[j, i + 1] + ops[i][0][1]
    scale = max(1.0, float(work_left[:, 0].mean()))
    cols = np.arange(n)
    passes = 0
    while time.perf_counter() < deadline:
        batch = JobShopBatch(instance, batch_size, ("non-delay", "active")[passes % 2])
        passes += 1
        jitter = noise * scale * rng.random((batch_size, n))
        steps = 0
        while not batch.done and (steps & 63 or time.perf_counter() < deadline):
            score = work_left[cols, batch.next_op] + jitter
            score[~batch.mask] = -np.inf
            batch.apply(score.argmax(axis=1))
            steps += 1
        if not batch.done:
            break
        built += batch_size
        ms = batch.makespan
        r = int(ms.argmin())
        if int(ms[r]) < best_ms:
            best_ms = int(ms[r])
            best = _batch_row(instance, batch.start[r])
            log.append(AnytimePoint(time.perf_counter() - t0, best_ms, "sampling"))
    best = sorted(best, key=lambda s: (s.start, s.machine))
    return SearchResult(best_ms, best, log, built, time.perf_counter() - started)


def _batch_row(instance: JobShopInstance, start: np.ndarray) -> list[ScheduledOperation]:
    out = []
    for j, ops in enumerate(instance.jobs):
        for i, alts in enumerate(ops):
            m, p = alts[0]
            s = int(start[j, i])
            out.append(ScheduledOperation(j, i, m, s, s + p))
    return out


class _Graph:
    """The disjunctive graph of a classical job shop with a machine order chosen (mutable)."""

    def __init__(self, instance: JobShopInstance, schedule: Sequence[ScheduledOperation]):
        self.instance = instance
        first = []
        k = 0
        for ops in instance.jobs:
            first.append(k)
            k += len(ops)
        self.n = k
        self.first = first
        self.job = [j for j, ops in enumerate(instance.jobs) for _ in ops]
        self.op = [i for ops in instance.jobs for i in range(len(ops))]
        self.p = [alts[0][1] for ops in instance.jobs for alts in ops]
        self.machine = [alts[0][0] for ops in instance.jobs for alts in ops]
        releases = instance.release_dates or (0,) * instance.n_jobs
        self.release = [releases[j] for j in self.job]
        self.jpred = [-1 if self.op[o] == 0 else o - 1 for o in range(k)]
        self.jsucc = [
            o + 1 if self.op[o] + 1 < len(instance.jobs[self.job[o]]) else -1 for o in range(k)
        ]
        seqs: list[list[tuple[int, int]]] = [[] for _ in range(instance.n_machines)]
        for so in schedule:
            seqs[self.machine[first[so.job] + so.op]].append((so.start, first[so.job] + so.op))
        self.mpred = [-1] * k
        self.msucc = [-1] * k
        for seq in seqs:
            seq.sort()
            for (_, a), (_, b) in itertools.pairwise(seq):
                self.msucc[a], self.mpred[b] = b, a
        self.last = [o for o in range(k) if self.jsucc[o] < 0]
        self.head = [0] * k
        self.tail = [0] * k  # longest path from the operation's start to the end, incl. p
        self.makespan = 0
        self.order: list[int] = []  # a topological order of the graph
        self.pos: list[int] = []  # each operation's place in it

    def evaluate(self) -> bool:
        """Recompute heads, tails and the makespan; False if the machine orders form a cycle."""
        n, p, jp, mp, js, ms = self.n, self.p, self.jpred, self.mpred, self.jsucc, self.msucc
        indeg = [(jp[o] >= 0) + (mp[o] >= 0) for o in range(n)]
        head = self.head
        stack = [o for o in range(n) if indeg[o] == 0]
        order = []
        rel = self.release
        while stack:
            o = stack.pop()
            order.append(o)
            a, b = jp[o], mp[o]
            h = rel[o]
            if a >= 0 and head[a] + p[a] > h:
                h = head[a] + p[a]
            if b >= 0 and head[b] + p[b] > h:
                h = head[b] + p[b]
            head[o] = h
            s = js[o]
            if s >= 0:
                indeg[s] -= 1
                if indeg[s] == 0:
                    stack.append(s)
            s = ms[o]
            if s >= 0:
                indeg[s] -= 1
                if indeg[s] == 0:
                    stack.append(s)
        if len(order) < n:
            return False
        self.order = order
        self.pos = [0] * n
        for i, o in enumerate(order):
            self.pos[o] = i
        self.makespan = max(head[o] + p[o] for o in self.last)
        self._tails(n - 1)
        return True

    def _heads(self, first: int) -> None:
        """Heads of ``order[first:]`` (the earlier ones are unchanged) and the makespan."""
        head, p, jp, mp, rel = self.head, self.p, self.jpred, self.mpred, self.release
        for o in self.order[first:]:
            a, b = jp[o], mp[o]
            h = rel[o]
            if a >= 0 and head[a] + p[a] > h:
                h = head[a] + p[a]
            if b >= 0 and head[b] + p[b] > h:
                h = head[b] + p[b]
            head[o] = h
        self.makespan = max(head[o] + p[o] for o in self.last)

    def _tails(self, last: int) -> None:
        """Tails of ``order[: last + 1]`` (the later ones are unchanged)."""
        tail, p, js, ms = self.tail, self.p, self.jsucc, self.msucc
        for o in reversed(self.order[: last + 1]):
            a, b = js[o], ms[o]
            t = tail[a] if a >= 0 else 0
            if b >= 0 and tail[b] > t:
                t = tail[b]
            tail[o] = t + p[o]

    def move(self, u: int, v: int) -> bool:
        """Swap ``u`` and its machine successor ``v`` and update heads, tails and makespan.

        Only the stretch of the topological order from ``u`` to ``v`` is reordered (the
        operations in it that descend from ``u`` go after ``u``, the others before ``v``);
        heads are recomputed from ``u``'s old place on, tails up to ``v``'s.

        Returns:
            False (nothing changed) if the swap would close a cycle.
        """
        pu, pv = self.pos[u], self.pos[v]
        inner = self.order[pu + 1 : pv]
        jp, mp = self.jpred, self.mpred
        below = {u}  # u and the inner operations that descend from it
        for x in inner:
            if jp[x] in below or mp[x] in below:
                below.add(x)
        if jp[v] in below:
            return False
        after = [x for x in inner if x in below]
        segment = [x for x in inner if x not in below] + [v, u] + after
        self.order[pu : pv + 1] = segment
        for i, o in enumerate(segment, pu):
            self.pos[o] = i
        self.swap(u, v)
        self._heads(pu)
        self._tails(pv)
        return True

    def critical_blocks(self, rng: random.Random) -> list[list[int]]:
        """The blocks of one critical path (machine predecessors preferred when both are tight)."""
        head, p, jp, mp, cmax = self.head, self.p, self.jpred, self.mpred, self.makespan
        ends = [o for o in self.last if head[o] + p[o] == cmax]
        cur = ends[rng.randrange(len(ends))]
        path = [cur]
        while True:
            b = mp[cur]
            if b >= 0 and head[b] + p[b] == head[cur]:
                cur = b
            else:
                a = jp[cur]
                if a >= 0 and head[a] + p[a] == head[cur]:
                    cur = a
                else:
                    break
            path.append(cur)
        path.reverse()
        blocks = [[path[0]]]
        for prev, o in itertools.pairwise(path):
            if self.msucc[prev] == o:
                blocks[-1].append(o)
            else:
                blocks.append([o])
        return blocks

    def n5_moves(self, blocks: list[list[int]]) -> list[tuple[int, int]]:
        """Adjacent pairs ``(u, v)`` (``v`` follows ``u`` on their machine) that N5 may swap."""
        last = len(blocks) - 1
        moves: list[tuple[int, int]] = []
        for i, b in enumerate(blocks):
            if len(b) < 2 or last == 0:
                continue
            if i > 0:
                moves.append((b[0], b[1]))
            if i < last and (i == 0 or len(b) > 2):
                moves.append((b[-2], b[-1]))
        return moves

    def estimate(self, u: int, v: int) -> int:
        """Head/tail estimate of the makespan once ``u`` and its machine successor ``v`` swap."""
        head, tail, p = self.head, self.tail, self.p
        a, b = self.jpred[v], self.mpred[u]
        hv = self.release[v]
        if a >= 0 and head[a] + p[a] > hv:
            hv = head[a] + p[a]
        if b >= 0 and head[b] + p[b] > hv:
            hv = head[b] + p[b]
        a = self.jpred[u]
        hu = hv + p[v]
        if a >= 0 and head[a] + p[a] > hu:
            hu = head[a] + p[a]
        a, b = self.jsucc[u], self.msucc[v]
        tu = tail[a] if a >= 0 else 0
        if b >= 0 and tail[b] > tu:
            tu = tail[b]
        tu += p[u]
        a = self.jsucc[v]
        tv = tail[a] if a >= 0 else 0
        if tu > tv:
            tv = tu
        tv += p[v]
        return max(hv + tv, hu + tu)

    def swap(self, u: int, v: int) -> None:
        """Put ``v`` (``u``'s machine successor) before ``u``."""
        mp, ms = self.mpred, self.msucc
        b, c = mp[u], ms[v]
        if b >= 0:
            ms[b] = v
        if c >= 0:
            mp[c] = u
        mp[v], ms[v] = b, u
        mp[u], ms[u] = v, c

    def orders(self) -> tuple[list[int], list[int]]:
        return list(self.mpred), list(self.msucc)

    def set_orders(self, orders: tuple[list[int], list[int]]) -> None:
        self.mpred, self.msucc = list(orders[0]), list(orders[1])

    def schedule(self) -> list[ScheduledOperation]:
        out = [
            ScheduledOperation(
                self.job[o], self.op[o], self.machine[o], self.head[o], self.head[o] + self.p[o]
            )
            for o in range(self.n)
        ]
        out.sort(key=lambda s: (s.start, s.machine))
        return out


def tabu_search(
    instance: JobShopInstance,
    start: Sequence[ScheduledOperation],
    time_limit_s: float = 10.0,
    seed: int = 0,
    stall_iterations: int = 2500,
    max_iterations: int | None = None,
    target: int | None = None,
    clock: float | None = None,
    stage: str = "tabu",
) -> SearchResult:
    """Improve ``start`` with N5 tabu search on the critical path (see the module docstring).

    Args:
        instance: A classical job shop.
        start: A complete feasible schedule (any start times; its machine orders are used).
        time_limit_s: Wall-clock budget.
        seed: Seed of the tie-breaking, tenure and restart randomness.
        stall_iterations: Iterations without improvement before a restart from the best.
        max_iterations: Optional cap on moves (for reproducible tests).
        target: Stop as soon as this makespan is reached (e.g. a known optimum or lower bound).
        clock: ``time.perf_counter()`` value the anytime log counts from (default: now).
        stage: Name written in the anytime log.

    Returns:
        The best schedule found; its makespan is at most ``start``'s.
    """
    require_classical(instance, "tabu_search")
    if time_limit_s < 0:
        raise PolicyError(f"tabu_search: time_limit_s must be >= 0, got {time_limit_s}")
    started = time.perf_counter()
    t0 = started if clock is None else clock
    rng = random.Random(seed)
    g = _Graph(instance, start)
    if not g.evaluate():
        raise PolicyError("tabu_search: the start schedule's machine orders contain a cycle")
    best_ms = g.makespan
    best_orders = g.orders()
    log = [AnytimePoint(time.perf_counter() - t0, best_ms, stage)]
    base = 10 + instance.n_jobs // max(1, instance.n_machines)
    tabu: dict[tuple[int, int], int] = {}
    it = 0
    last_improve = 0
    deadline = started + time_limit_s
    while (max_iterations is None or it < max_iterations) and (target is None or best_ms > target):
        if (it & 15) == 0 and time.perf_counter() >= deadline:
            break
        it += 1
        moves = g.n5_moves(g.critical_blocks(rng))
        if not moves:
            break  # one critical block: the makespan is a machine's load, hence optimal
        pick: tuple[int, int] | None = None
        pick_val = 1 << 62
        for u, v in moves:
            val = g.estimate(u, v)
            if tabu.get((u, v), 0) > it and val >= best_ms:
                continue
            if val < pick_val or (val == pick_val and rng.random() < 0.5):
                pick, pick_val = (u, v), val
        if pick is None:
            pick = moves[rng.randrange(len(moves))]
        u, v = pick
        if not g.move(u, v):  # only possible with zero processing times
            tabu[(u, v)] = it + base
            continue
        tabu[(v, u)] = it + rng.randint(base, base + base // 2)
        if g.makespan < best_ms:
            best_ms, best_orders, last_improve = g.makespan, g.orders(), it
            log.append(AnytimePoint(time.perf_counter() - t0, best_ms, stage))
        elif it - last_improve > stall_iterations:
            g.set_orders(best_orders)
            g.evaluate()
            for _ in range(rng.randint(2, 6)):
                kick = g.n5_moves(g.critical_blocks(rng))
                if not kick:
                    break
                u, v = kick[rng.randrange(len(kick))]
                g.move(u, v)
            tabu.clear()
            last_improve = it
    g.set_orders(best_orders)
    g.evaluate()
    return SearchResult(best_ms, g.schedule(), log, it, time.perf_counter() - started)
