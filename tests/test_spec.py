"""The line spec: bad input gets errors that name the path, the value and the fix."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from taktline.envs.spec import bundled_lines, load_spec, parse_spec
from taktline.errors import SpecError

BASE: dict[str, Any] = {
    "name": "t",
    "stations": [{"name": "a"}, {"name": "b", "machines": 2, "buffer_capacity": 3}],
    "products": [
        {
            "name": "p",
            "routing": [
                {"station": "a", "processing_time": 1.0},
                {"station": "b", "processing_time": {"dist": "exponential", "mean": 1.5}},
            ],
        }
    ],
    "arrivals": {"kind": "poisson", "rate": 0.5},
}


def _with(path: list[Any], value: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    node = data
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return data


def _problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(SpecError) as exc:
        parse_spec(data)
    return exc.value.problems


def test_every_bundled_line_loads_and_is_stable() -> None:
    names = set(bundled_lines())
    assert {"serial5", "bodyshop", "machining", "conwip_loop"} <= names
    for name in names:
        spec = load_spec(name)
        utils = spec.utilizations()
        assert utils is None or max(utils) < 1


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (["stations", 1, "machines"], 0, "stations[1].machines: must be >= 1, got 0"),
        (
            ["stations", 0, "buffer_capacity"],
            -2,
            "stations[0].buffer_capacity: must be >= 0, got -2",
        ),
        (["arrivals", "rate"], -1.0, "arrivals.rate: must be > 0, got -1.0"),
        (["stations", 0, "colour"], "red", "stations[0].colour: unknown key"),
        (
            ["products", 0, "routing", 1, "processing_time", "dist"],
            "poisson",
            "products[0].routing[1].processing_time: unknown dist 'poisson'",
        ),
        (
            ["products", 0, "routing", 0, "processing_time"],
            -3.0,
            "products[0].routing[0].processing_time.value: must be >= 0, got -3.0",
        ),
        (
            ["products", 0, "routing", 0, "station"],
            "weld",
            "products[0].routing[0].station: unknown station 'weld'; known stations: a, b",
        ),
    ],
)
def test_errors_name_path_value_and_fix(path: list[Any], value: Any, expected: str) -> None:
    problems = _problems(_with(path, value))
    assert any(p.startswith(expected) for p in problems), problems


def test_unstable_open_line_is_rejected_before_simulation() -> None:
    problems = _problems(_with(["arrivals", "rate"], 1.2))
    assert len(problems) == 1
    assert problems[0].startswith("stations[0] (a): utilization 1.200 >= 1 with an unbounded")
    assert "lower arrivals.rate" in problems[0]


def test_near_critical_line_is_warned() -> None:
    spec = parse_spec(_with(["arrivals", "rate"], 0.97))
    assert any("utilization 0.970" in w for w in spec.warnings())


def test_all_problems_are_reported_at_once() -> None:
    data = _with(["stations", 1, "machines"], 0)
    data["stations"][0]["buffer_capacity"] = -1
    assert len(_problems(data)) == 2


def test_missing_file_names_the_bundled_lines() -> None:
    with pytest.raises(SpecError, match="bundled: bodyshop"):
        load_spec("no-such-line.yaml")


@pytest.mark.parametrize(
    ("dist", "mean"),
    [
        ({"dist": "deterministic", "value": 2.0}, 2.0),
        ({"dist": "exponential", "mean": 2.0}, 2.0),
        ({"dist": "uniform", "low": 1.0, "high": 3.0}, 2.0),
        ({"dist": "triangular", "low": 1.0, "mode": 2.0, "high": 3.0}, 2.0),
        ({"dist": "normal", "mu": 2.0, "sigma": 0.5}, 2.0),
        ({"dist": "lognormal", "mean": 2.0, "std": 1.0}, 2.0),
        ({"dist": "gamma", "shape": 4.0, "scale": 0.5}, 2.0),
        ({"dist": "weibull", "shape": 2.0, "scale": 2.0 / 0.886226925452758}, 2.0),
        ({"dist": "empirical", "samples": [1.0, 2.0, 3.0]}, 2.0),
    ],
)
def test_distributions_sample_their_stated_mean_and_variance(
    dist: dict[str, Any], mean: float
) -> None:
    import numpy as np
    from pydantic import TypeAdapter

    from taktline.envs.distributions import Distribution

    d = TypeAdapter(Distribution).validate_python(dist)
    assert d.mean == pytest.approx(mean, rel=1e-3)
    x = d.draw(np.random.default_rng(0), 200_000)
    assert (x >= 0).all()
    se = np.sqrt(d.scv) * d.mean / np.sqrt(len(x))
    assert abs(x.mean() - d.mean) <= 4 * se + 1e-12
    if d.scv > 0:  # the variance estimate within 5% (200k draws)
        assert x.var() / d.mean**2 == pytest.approx(d.scv, rel=0.05)


def test_warmup_at_or_past_the_horizon_is_rejected() -> None:
    data = _with(["warmup"], 100.0)
    data["horizon"] = 100.0
    problems = _problems(data)
    assert any(p.startswith("warmup: must be < horizon (100), got 100") for p in problems), problems


def test_non_finite_numbers_in_a_spec_are_rejected() -> None:
    problems = _problems(_with(["arrivals", "rate"], float("nan")))
    assert any(p.startswith("arrivals.rate: must be a finite number") for p in problems), problems


def test_yaml_aliases_are_allowed_in_moderation_and_bombs_refused(tmp_path: Any) -> None:
    import yaml

    shared = yaml.safe_dump(BASE).replace("rate: 0.5", "rate: &t 0.5")  # arrivals come first
    shared = shared.replace("processing_time: 1.0", "processing_time: *t")
    ok = tmp_path / "aliases.yaml"
    ok.write_text(shared)
    assert load_spec(ok).products[0].routing[0].processing_time.mean == 0.5
    levels = ["a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for prev, cur in zip("abcdefgh", "bcdefghi", strict=True):
        levels.append(f"{cur}: &{cur} [{', '.join([f'*{prev}'] * 10)}]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(levels) + "\n")  # 10**9 leaves once expanded
    with pytest.raises(SpecError, match="expands to more than 1,000,000 nodes"):
        load_spec(bomb)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"\x00\x01\x02binary", "is a binary file"),
        ("name: Fräsen\n".encode("latin-1"), "is not UTF-8 text"),
        (b"", "the file is empty"),
    ],
)
def test_unreadable_spec_files_name_the_problem(
    tmp_path: Any, content: bytes, expected: str
) -> None:
    path = tmp_path / "spec.yaml"
    path.write_bytes(content)
    with pytest.raises(SpecError, match=expected):
        load_spec(path)


def test_a_directory_is_not_a_spec(tmp_path: Any) -> None:
    with pytest.raises(SpecError, match="is a directory"):
        load_spec(tmp_path)
