"""Attaching to Ray: a cluster address that nothing answers is named at once, from the helper
and from every command that puts work on Ray, instead of waiting out Ray's retries."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from taktline.errors import SpecError
from taktline.raycluster import check_reachable
from tests.ray_support import free_port


def test_an_address_something_listens_at_passes_and_symbolic_ones_are_not_checked() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        check_reachable(f"127.0.0.1:{port}")
        check_reachable(f"ray://127.0.0.1:{port}")
    check_reachable("auto")
    check_reachable("local")


@pytest.mark.parametrize(
    ("address", "needle"),
    [
        ("127.0.0.1", "RAY_ADDRESS: expected HOST:PORT"),
        ("127.0.0.1:http", "RAY_ADDRESS: expected HOST:PORT"),
        (":6379", "RAY_ADDRESS: expected HOST:PORT"),
        ("CLOSED", "RAY_ADDRESS: no Ray cluster answers at '127.0.0.1:"),
    ],
)
def test_a_malformed_or_silent_address_is_named_with_the_fix(address: str, needle: str) -> None:
    if address == "CLOSED":
        address = f"127.0.0.1:{free_port()}"
    with pytest.raises(SpecError) as err:
        check_reachable(address)
    assert needle in str(err.value)
    assert "ray start --head" in str(err.value) or "e.g. 127.0.0.1:6379" in str(err.value)


@pytest.mark.parametrize(
    "args",
    [
        ["compare", "paintshop", "--rules", "FIFO,SPT", "--episodes", "2", "--workers", "2"],
        ["train-jobshop", "--workers", "2", "--instances", "4", "--sizes", "6x6"],
        ["imitate", "paintshop", "--iterations", "1", "--episodes-per-iter", "2", "--workers", "2"],
    ],
)
def test_commands_on_ray_name_a_silent_cluster_address_and_exit_2(
    args: list[str], tmp_path: Path
) -> None:
    address = f"127.0.0.1:{free_port()}"
    proc = subprocess.run(
        [sys.executable, "-m", "taktline.cli", *args],
        cwd=tmp_path,
        env={**os.environ, "RAY_ADDRESS": address, "MLFLOW_TRACKING_URI": ""},
        capture_output=True,
        text=True,
        timeout=300,  # a guard against the old behaviour (minutes of Ray retries), not a timing
    )
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert f"RAY_ADDRESS: no Ray cluster answers at '{address}'" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
