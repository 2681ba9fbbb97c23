"""The compiled twin (mypyc, ``make install``) computes exactly what the Python source does.

``setup.py`` compiles ``envs/twin.py`` when ``TAKTLINE_COMPILE=1``; the source ships beside the
extension. These tests load that source as a second module and run both on the bundled lines:
same event logs, KPIs and snapshots, and a compiled twin survives pickling mid-run (vector
envs send twins to subprocesses). Where the installed twin is pure Python there is nothing to
compare, and they skip.
"""

from __future__ import annotations

import importlib.util
import pickle
import sys
from pathlib import Path
from types import ModuleType

import pytest

import taktline.envs.twin as installed
from taktline.agents.rules import get_release_rule, get_rule
from taktline.envs.spec import load_spec

COMPILED = installed.__file__ is not None and not installed.__file__.endswith(".py")
pytestmark = pytest.mark.skipif(
    not COMPILED, reason="the installed twin is pure Python (make install compiles it)"
)


@pytest.fixture(scope="module")
def source() -> ModuleType:
    path = Path(installed.__file__ or "").with_name("twin.py")
    spec = importlib.util.spec_from_file_location("taktline_twin_source", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _run(module: ModuleType, line: str, seed: int, rule: str) -> object:
    spec = load_spec(line)
    release = get_release_rule("CONWIP(12)") if line == "serial5" else None
    twin = module.Twin(spec, seed, get_rule(rule), release, log_events=True)
    twin.run(until=400.0)
    return twin


@pytest.mark.parametrize("line", ["serial5", "bodyshop", "machining", "conwip_loop"])
@pytest.mark.parametrize("rule", ["FIFO", "SPT", "SAME", "ATC"])
def test_compiled_and_source_twins_agree_event_by_event(
    source: ModuleType, line: str, rule: str
) -> None:
    for seed in (0, 1):
        a, b = _run(installed, line, seed, rule), _run(source, line, seed, rule)
        assert type(a).__module__ != type(b).__module__  # two builds, not one twice
        assert a.log and a.log == b.log  # type: ignore[attr-defined]
        assert a.kpis() == b.kpis()  # type: ignore[attr-defined]
        assert a.snapshot() == b.snapshot()  # type: ignore[attr-defined]


def _drive(twin: object, until: float) -> None:
    """Answer every decision from outside, as an environment does (shortest job first)."""
    while (req := twin.run_until_decision(until)) is not None:  # type: ignore[attr-defined]
        if req.kind == "dispatch":
            times = [c.processing_time for c in req.candidates]
            twin.dispatch(times.index(min(times)))  # type: ignore[attr-defined]
        else:
            twin.release(req.pool_size)  # type: ignore[attr-defined]


def test_a_compiled_twin_pickles_mid_run_and_continues_identically() -> None:
    # driven from outside, as in the environments that vector envs pickle into subprocesses
    twin = installed.Twin(load_spec("bodyshop"), 3, None, log_events=True)
    _drive(twin, 150.0)
    copy = pickle.loads(pickle.dumps(twin))
    _drive(twin, 300.0)
    _drive(copy, 300.0)
    assert copy.log == twin.log and copy.kpis() == twin.kpis()
    assert len(twin.log) > 100
