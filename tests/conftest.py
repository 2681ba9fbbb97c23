"""Shared fixtures."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.ray_support import Cluster

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def pytest_configure(config: pytest.Config) -> None:
    """One Ray auth token per test session, in the environment before anything imports Ray.

    Ray keeps token authentication on and reads its auth mode once, when ``ray`` is first
    imported; the token comes from ``RAY_AUTH_TOKEN`` before any file. Setting both here, for
    this process and every child (``ray start``, drivers, ``ray job submit``, Serve replicas),
    means the clusters a session starts and the clients that talk to them always agree, and a
    stale ``~/.ray/auth_token`` left by another run (or its absence) cannot matter.
    """
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(16)
    os.environ.pop("RAY_AUTH_TOKEN_PATH", None)


@pytest.fixture(scope="session")
def ray_cluster(request: pytest.FixtureRequest) -> Cluster:
    """The session's local Ray cluster (started on first use, stopped at the session's end)."""
    from tests.ray_support import shared_cluster

    return shared_cluster(request.config)


@pytest.fixture(scope="session")
def jssp_dir() -> Path:
    """The benchmark instances in ../shared/data/jssp (test data only)."""
    path = SHARED / "data" / "jssp"
    if not path.is_dir():
        pytest.fail(f"test data missing: {path} (CI lays ../shared beside the clone)")
    return path


# ---- MLflow (training and registry tests) ------------------------------------------------------
@pytest.fixture(autouse=True)
def _isolated_mlflow_uris(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees another's MLflow store.

    ``mlflow.set_tracking_uri``/``set_registry_uri`` (which ``training.tracking.configure``
    calls) write ``MLFLOW_TRACKING_URI``/``MLFLOW_REGISTRY_URI`` into ``os.environ`` for
    subprocesses to inherit, and keep module globals. Left over, a later test's server
    subprocess resolved aliases against an earlier test's registry. Both are reset here.
    """
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(var, raising=False)  # restored after the test when it was set
    yield
    # monkeypatch records nothing for a variable that was unset: what the test set goes here
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        os.environ.pop(var, None)
    import sys

    if "mlflow" in sys.modules:
        import mlflow.tracking._model_registry.utils as registry_utils
        import mlflow.tracking._tracking_service.utils as tracking_utils

        tracking_utils._tracking_uri = None
        registry_utils._registry_uri = None


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``mlflow server`` on 127.0.0.1 (a free port, a temporary SQLite backend store and
    artifact folder), started once per session and stopped at its end; yields its URI."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    root = tmp_path_factory.mktemp("mlflow-server")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    exe = Path(sys.executable).with_name("mlflow")
    store = f"sqlite:///{root / 'mlflow.db'}"
    args = f"server --host 127.0.0.1 --port {port} --workers 1 --backend-store-uri {store}"
    cmd = [str(exe), *args.split(), "--artifacts-destination", str(root / "artifacts")]
    log = (root / "server.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail(f"mlflow server did not start:\n{(root / 'server.log').read_text()}")
            time.sleep(0.5)
        yield uri
    finally:
        # the server runs in its own session: stop it and the workers it started
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()
