"""The built wheel contains every subpackage and the data files (a missing entry in the
package list would silently drop a folder from the wheel)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

ROOTS = {
    "core": "taktline",
    "envs": "taktline/envs",
    "agents": "taktline/agents",
    "training": "taktline/training",
    "serving": "taktline/serving",
}


@pytest.mark.slow
def test_wheel_contains_every_subpackage_and_data(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        timeout=600,
    )
    wheel = next(tmp_path.glob("taktline-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = set()
    for folder, target in ROOTS.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.relative_to(REPO / folder).as_posix()
            expected.add(f"{target}/{rel}")
        for data in (REPO / folder).rglob("*"):
            if data.suffix in (
                ".yaml",
                ".txt",
                ".json",
                ".typed",
                ".pt",
                ".npz",
            ) and "__pycache__" not in str(data):
                expected.add(f"{target}/{data.relative_to(REPO / folder).as_posix()}")
    missing = sorted(expected - names)
    assert not missing, f"missing from the wheel: {missing[:10]}"
    assert not any(n.startswith(("envs/", "agents/", "serving/")) for n in names), (
        "nothing may install under a bare generic name"
    )
