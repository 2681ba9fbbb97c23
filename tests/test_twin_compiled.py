"""The compiled twin (mypyc, ``make install``) computes exactly what the Python source does.

``setup.py`` compiles the engine, ``envs/twin.py`` (kernel) and ``envs/twin_state.py`` (state),
when ``TAKTLINE_COMPILE=1``; the source ships beside the extensions. These tests load that source
as a second engine and run both on the bundled lines: same event logs, KPIs and snapshots, and a
compiled twin survives pickling mid-run (vector envs send twins to subprocesses).

Where the installed twin is pure Python there is nothing to compare. With
``TAKTLINE_REQUIRE_COMPILED=1`` (``make test``, after ``make install`` compiled the twin) that
is a failure: compilation fell back to pure Python silently. Without it (editable installs,
which never compile) the tests skip and say why.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import sys
from pathlib import Path
from types import ModuleType

import pytest

import taktline.envs.twin as installed
import taktline.envs.twin_state as installed_state
from taktline.agents.rules import get_release_rule, get_rule
from taktline.envs.spec import load_spec

COMPILED = installed.__file__ is not None and not installed.__file__.endswith(".py")
REQUIRE_COMPILED = os.environ.get("TAKTLINE_REQUIRE_COMPILED", "").strip() not in ("", "0")


def require_compiled(installed_file: str | None, required: bool) -> None:
    """Fail (compilation required) or skip (not required) unless the installed twin is the
    compiled extension."""
    if installed_file is not None and not installed_file.endswith(".py"):
        return
    where = f"taktline.envs.twin is pure Python ({installed_file})"
    if required:
        pytest.fail(
            f"{where}, but TAKTLINE_REQUIRE_COMPILED is set: the mypyc build fell back to pure "
            "Python. Rebuild with `make install` (TAKTLINE_COMPILE=1) and read its log for the "
            "mypyc error, or unset TAKTLINE_REQUIRE_COMPILED to test the source twin only.",
            pytrace=False,
        )
    pytest.skip(f"{where}: nothing to compare; make install compiles it")


def _exec_source(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def source() -> ModuleType:
    """The engine's Python source (kernel and state), beside the installed build: the source
    kernel imports the source state, so no compiled class is shared between the two."""
    folder = Path(installed.__file__ or "").parent
    state = _exec_source("taktline_twin_state_source", folder / "twin_state.py")
    compiled_state = sys.modules["taktline.envs.twin_state"]
    sys.modules["taktline.envs.twin_state"] = state  # what the source kernel imports
    try:
        return _exec_source("taktline_twin_source", folder / "twin.py")
    finally:
        sys.modules["taktline.envs.twin_state"] = compiled_state


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
    require_compiled(installed.__file__, REQUIRE_COMPILED)
    require_compiled(installed_state.__file__, REQUIRE_COMPILED)
    for seed in (0, 1):
        a, b = _run(installed, line, seed, rule), _run(source, line, seed, rule)
        assert type(a).__module__ != type(b).__module__  # two builds, not one twice
        machines = a.machines[0], b.machines[0]  # type: ignore[attr-defined]
        assert type(machines[0]).__module__ != type(machines[1]).__module__
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
    require_compiled(installed.__file__, REQUIRE_COMPILED)
    # driven from outside, as in the environments that vector envs pickle into subprocesses
    twin = installed.Twin(load_spec("bodyshop"), 3, None, log_events=True)
    _drive(twin, 150.0)
    copy = pickle.loads(pickle.dumps(twin))
    _drive(twin, 300.0)
    _drive(copy, 300.0)
    assert copy.log == twin.log and copy.kpis() == twin.kpis()
    assert len(twin.log) > 100


def test_a_pure_python_twin_fails_when_compilation_is_required_and_skips_otherwise() -> None:
    with pytest.raises(pytest.fail.Exception, match="TAKTLINE_REQUIRE_COMPILED is set"):
        require_compiled("/site-packages/taktline/envs/twin.py", required=True)
    with pytest.raises(pytest.skip.Exception, match="pure Python"):
        require_compiled("/site-packages/taktline/envs/twin.py", required=False)
    require_compiled("/site-packages/taktline/envs/twin.cpython-311-x86_64-linux-gnu.so", True)
