"""The examples in the package's docstrings run and print what they show.

Every module of every ``taktline`` package is imported and its ``>>>`` examples are run with
:mod:`doctest` (``ELLIPSIS`` on); a module whose examples fail fails here, so a docstring
cannot drift from the code it documents.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

PACKAGES = (
    "taktline",
    "taktline.envs",
    "taktline.envs.jobshop",
    "taktline.envs.calibration",
    "taktline.agents",
    "taktline.training",
    "taktline.serving",
)


def _modules() -> list[str]:
    names = []
    for pkg in PACKAGES:
        names.append(pkg)
        path = importlib.import_module(pkg).__path__
        names += [m.name for m in pkgutil.iter_modules(path, pkg + ".") if not m.ispkg]
    return sorted(set(names))


def test_the_walk_finds_the_modules_with_examples() -> None:
    """Guards the walk itself: a packaging change must not make it find nothing."""
    found = _modules()
    for name in ("taktline.envs.twin", "taktline.agents.jobshop_policy", "taktline.raycluster"):
        assert name in found


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples_run_as_shown(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, report=True
    )
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed"
