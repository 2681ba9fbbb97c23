"""Gymnasium spaces as plain JSON, so a policy bundle describes itself without pickles.

>>> import gymnasium as gym, numpy as np
>>> box = gym.spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)
>>> space_from_json(space_to_json(box)) == box
True
>>> space_to_json(gym.spaces.Discrete(4))
{'type': 'Discrete', 'n': 4, 'start': 0}
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from taktline.errors import PolicyError


def _bound(values: np.ndarray) -> Any:
    """A scalar when every entry is equal (the usual case), else the nested list."""
    flat = values.ravel()
    if flat.size and np.all(flat == flat[0]):
        return _number(flat[0])
    return [_number(v) for v in flat]


def _number(v: Any) -> float | str:
    f = float(v)
    if np.isinf(f):
        return "inf" if f > 0 else "-inf"
    return f


def _unbound(value: Any, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
    if isinstance(value, list):
        return np.array([float(v) for v in value], dtype=dtype).reshape(shape)
    return np.full(shape, float(value), dtype=dtype)


def space_to_json(space: gym.spaces.Space[Any]) -> dict[str, Any]:
    """A JSON-ready description of ``space`` (Box, Discrete, MultiBinary, MultiDiscrete, Dict).

    Raises:
        PolicyError: for a space type without a JSON form.
    """
    if isinstance(space, gym.spaces.Box):
        return {
            "type": "Box",
            "shape": list(space.shape),
            "dtype": str(space.dtype),
            "low": _bound(space.low),
            "high": _bound(space.high),
        }
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, gym.spaces.MultiBinary):
        return {"type": "MultiBinary", "n": np.asarray(space.n).tolist()}
    if isinstance(space, gym.spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": space.nvec.tolist()}
    if isinstance(space, gym.spaces.Dict):
        return {"type": "Dict", "spaces": {k: space_to_json(s) for k, s in space.spaces.items()}}
    raise PolicyError(
        f"observation/action space: {type(space).__name__} has no JSON form; use Box, "
        "Discrete, MultiBinary, MultiDiscrete or Dict"
    )


def space_from_json(data: dict[str, Any]) -> gym.spaces.Space[Any]:
    """The space :func:`space_to_json` described.

    Raises:
        PolicyError: for an unknown or malformed description.
    """
    kind = data.get("type")
    try:
        if kind == "Box":
            shape = tuple(int(d) for d in data["shape"])
            dtype = np.dtype(data["dtype"])
            low = _unbound(data["low"], shape, dtype)
            high = _unbound(data["high"], shape, dtype)
            return gym.spaces.Box(low, high, shape=shape, dtype=dtype)
        if kind == "Discrete":
            return gym.spaces.Discrete(int(data["n"]), start=int(data.get("start", 0)))
        if kind == "MultiBinary":
            return gym.spaces.MultiBinary(data["n"])
        if kind == "MultiDiscrete":
            return gym.spaces.MultiDiscrete(data["nvec"])
        if kind == "Dict":
            return gym.spaces.Dict({k: space_from_json(v) for k, v in data["spaces"].items()})
    except (KeyError, TypeError, ValueError) as exc:
        raise PolicyError(f"space {kind}: malformed description {data!r} ({exc})") from exc
    raise PolicyError(
        f"space.type: unknown {kind!r}; expected Box, Discrete, MultiBinary, MultiDiscrete, Dict"
    )
