"""Random streams of a twin, copied on write by :meth:`taktline.envs.twin.Twin.fork`.

A twin spawns one numpy generator per source of randomness. A fork needs its own copy of each,
and a numpy generator costs about 30 µs to make and 3 µs to read the state of (a body-shop
twin has 34 in use): more than the rest of a fork together, for streams a short rollout mostly
never touches, because their :class:`~taktline.envs.distributions.Sampler` still holds drawn
numbers. So the twin draws through :class:`Stream` handles, and forking a stream copies
nothing: the twins share the generator until one of them draws, and that one draws from a copy
made then (from the state nobody has advanced since the fork); the last one takes the original.

A stream of a seeded fork (``fork(seed=...)``) is made on first use too: stream ``index`` of
``seed``, the numbers ``Twin(spec, seed)`` draws from its stream ``index``
(``default_rng(seed).spawn(n)[index]``).

>>> import numpy as np
>>> a = Stream(np.random.default_rng(7))
>>> b = a.fork()
>>> bool(a.random() == b.random())
True
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np

from taktline.envs.distributions import Sampler


class _Shared:
    """A generator that ``users`` streams still share: the first of them to draw copies it."""

    __slots__ = ("gen", "users")

    def __init__(self, gen: np.random.Generator, users: int) -> None:
        self.gen = gen
        self.users = users


def copy_generator(gen: np.random.Generator) -> np.random.Generator:
    """A new generator in ``gen``'s state (it draws what ``gen`` will draw)."""
    bits = type(gen.bit_generator)()
    bits.state = gen.bit_generator.state
    return np.random.Generator(bits)


class Stream:
    """A numpy ``Generator`` that can be forked without copying it (copy on first draw).

    Every attribute is the generator's (``random``, ``exponential``...), so a sampler draws from
    a stream as from the generator itself.

    Args:
        gen: The generator it draws from (its own).
        seed: Without ``gen``: the seed whose stream ``index`` it draws, made on first use.
        index: See ``seed``.
    """

    __slots__ = ("_gen", "_index", "_seed", "_shared")

    def __init__(
        self, gen: np.random.Generator | None = None, seed: int | None = None, index: int = 0
    ) -> None:
        self._gen = gen
        self._shared: _Shared | None = None
        self._seed = seed
        self._index = index

    @property
    def generator(self) -> np.random.Generator:
        """The generator this stream draws from (its own from now on)."""
        gen = self._gen
        if gen is None:
            shared = self._shared
            if shared is None:
                child = np.random.SeedSequence(self._seed, spawn_key=(self._index,))
                gen = np.random.Generator(np.random.PCG64(child))
            else:
                self._shared = None
                shared.users -= 1
                gen = copy_generator(shared.gen) if shared.users else shared.gen
            self._gen = gen
        return gen

    def fork(self) -> Stream:
        """A stream that draws what this one draws from now on, independently of it."""
        new = Stream(seed=self._seed, index=self._index)
        if self._gen is not None:
            self._shared = _Shared(self._gen, 1)
            self._gen = None
        if self._shared is not None:
            self._shared.users += 1
            new._shared = self._shared
        return new

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # unset slots (while unpickling): not the generator's
            raise AttributeError(name)
        return getattr(self.generator, name)


def spawn_streams(seed: int, n: int) -> list[np.random.Generator]:
    """The ``n`` streams of a twin built with ``seed`` (``default_rng(seed).spawn(n)``)."""
    return [cast(np.random.Generator, Stream(g)) for g in np.random.default_rng(seed).spawn(n)]


class StreamMap:
    """Maps a twin's streams and samplers to a fork's (streams shared by samplers stay shared).

    Args:
        streams: The twin's streams, in spawn order.
        seed: ``None`` to continue each stream where it is; else the seed of fresh streams
            (drawn numbers a sampler holds are dropped: everything after comes from them).
    """

    __slots__ = ("_fresh", "_map", "_seed", "_streams")

    def __init__(self, streams: list[Any], seed: int | None) -> None:
        self._seed = seed
        self._fresh = seed is not None
        self._streams = streams
        self._map: dict[int, np.random.Generator] = {}
        if seed is not None:
            self._map = {
                id(old): cast(np.random.Generator, Stream(seed=seed, index=i))
                for i, old in enumerate(streams)
            }

    def streams(self) -> list[np.random.Generator]:
        """The fork's streams, in the twin's order (call it after mapping the samplers). A
        stream that no sampler draws from stays shared: nothing ever draws from it."""
        get = self._map.get
        return [get(id(g), g) for g in self._streams]

    def stream(self, rng: Any) -> np.random.Generator:
        """The fork's copy of the twin's stream ``rng``."""
        key = id(rng)
        got = self._map.get(key)
        if got is not None:
            return got
        if self._fresh:  # a stream made after the twin's spawn (a restore's): one more
            new = Stream(seed=self._seed, index=len(self._map))
        elif isinstance(rng, Stream):
            new = rng.fork()
        else:  # a bare generator (not made by the twin): copied now
            new = Stream(copy_generator(rng))
        self._map[key] = got = cast(np.random.Generator, new)
        return got

    def sampler(self, s: Sampler) -> Sampler:
        """The fork's copy of sampler ``s``: the same distribution, drawing from the fork's
        stream; it keeps the numbers ``s`` holds unless the streams are fresh."""
        if s._const is not None:
            return s  # a constant never draws: nothing to copy
        rng = self._map.get(id(s._rng))
        new = Sampler.__new__(Sampler)
        new._dist = s._dist
        new._const = None
        new._rng = self.stream(s._rng) if rng is None else rng
        # a sampler replaces its block when it runs out, never edits it: the list is shared
        new._buf = [] if self._fresh else s._buf
        new._i = 0 if self._fresh else s._i
        return new
