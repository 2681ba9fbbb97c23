"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def jssp_dir() -> Path:
    """The benchmark instances in ../shared/data/jssp (test data only)."""
    path = SHARED / "data" / "jssp"
    if not path.is_dir():
        pytest.fail(f"test data missing: {path} (CI lays ../shared beside the clone)")
    return path
