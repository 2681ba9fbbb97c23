"""A real local Ray cluster for the Ray tests, and helpers to drive training against it.

:func:`shared_cluster` (wrapped in a fixture by each test module) runs ``ray start --head
--block --num-cpus 2`` with its own temp dir and free ports on 127.0.0.1, waits for the
dashboard (the job server), and terminates that one ``ray start`` process at the end of the
session, which takes down every process it started. ``ray stop`` is deliberately not used: it
stops *every* Ray on the machine, including other people's.

Token authentication stays on (Ray's default): ``tests/conftest.py`` puts a fresh session token
and ``RAY_AUTH_MODE=token`` into the environment before Ray is imported, so the cluster, drivers,
``ray job submit`` and the state API all present the same token.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

BIN = Path(sys.executable).parent
RAY = str(BIN / "ray")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    """A running local cluster: its GCS address and dashboard (job server) URL."""

    address: str
    dashboard_url: str
    temp_dir: str
    process: subprocess.Popen[bytes]

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a driver subprocess that attaches to this cluster."""
        return {
            **os.environ,
            "RAY_ADDRESS": self.address,
            "PYTHONUNBUFFERED": "1",
            **extra,
        }

    def run_cli(self, args: list[str], cwd: Path, timeout_s: float = 540.0) -> dict[str, Any]:
        """``taktline ARGS`` (with ``--json``) as a driver attached to this cluster; fails the
        test with the output's tail unless it exits 0, else returns the printed JSON."""
        proc = subprocess.run(
            [sys.executable, "-m", "taktline.cli", *args],
            cwd=cwd,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return dict(json.loads(proc.stdout[proc.stdout.index("{") :]))


def start_cluster(num_cpus: int = 2, timeout_s: float = 120.0) -> Cluster:
    """``ray start --head --block`` on free ports; returns once the dashboard answers."""
    tmp = tempfile.mkdtemp(prefix="tlray", dir="/tmp")  # short: Ray's socket paths are limited
    port, dash = free_port(), free_port()
    cmd = [
        RAY,
        "start",
        "--head",
        "--block",
        "--num-cpus",
        str(num_cpus),
        "--node-ip-address",
        "127.0.0.1",
        "--port",
        str(port),
        "--dashboard-host",
        "127.0.0.1",
        "--dashboard-port",
        str(dash),
        "--ray-client-server-port",
        str(free_port()),
        "--dashboard-agent-listen-port",
        str(free_port()),
        "--dashboard-agent-grpc-port",
        str(free_port()),
        "--runtime-env-agent-port",
        str(free_port()),
        "--metrics-export-port",
        str(free_port()),
        "--temp-dir",
        tmp,
        "--disable-usage-stats",
    ]
    log = open(Path(tmp) / "ray_start.log", "wb")  # noqa: SIM115  (lives as long as the cluster)
    proc = subprocess.Popen(
        cmd,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=dict(os.environ),
    )
    url = f"http://127.0.0.1:{dash}"
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited {proc.returncode}; see {tmp}/ray_start.log")
        try:
            urllib.request.urlopen(f"{url}/api/version", timeout=2)
            break
        except urllib.error.HTTPError:  # 401 without a token: the server is up
            break
        except OSError:
            if time.monotonic() > deadline:
                stop_cluster(proc)
                raise TimeoutError(f"Ray dashboard not up after {timeout_s}s ({tmp})") from None
            time.sleep(0.5)
    return Cluster(f"127.0.0.1:{port}", url, tmp, proc)


def stop_cluster(proc: subprocess.Popen[bytes]) -> None:
    """Terminate the blocking ``ray start`` (it stops the processes it started)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


_CLUSTER: Cluster | None = None


def shared_cluster(config: pytest.Config) -> Cluster:
    """The session's cluster, started on first use and stopped when the session ends.

    Test modules wrap it in a fixture (``return shared_cluster(request.config)``); the
    cluster is one per session whichever modules ask for it.
    """
    global _CLUSTER
    if _CLUSTER is None:
        cluster = _CLUSTER = start_cluster()

        def _stop() -> None:
            import ray

            if ray.is_initialized():
                ray.shutdown()
            stop_cluster(cluster.process)
            shutil.rmtree(cluster.temp_dir, ignore_errors=True)

        config.add_cleanup(_stop)
    return _CLUSTER


# ---- tiny training configs ---------------------------------------------------------------------
TINY_ENV = {
    "line": "bodyshop",
    "warmup": 60.0,
    "horizon": 400.0,
    "max_queue": 8,
    "action_mode": "rule",
    "rules": ["FIFO", "SPT", "EDD", "MWKR", "SAME"],
}


def tiny_config(name: str, **overrides: Any) -> dict[str, Any]:
    """A body-shop dispatch config that trains in a few RLlib iterations of 400 steps."""
    cfg: dict[str, Any] = {
        "name": name,
        "backend": "rllib",
        "env": {"id": "taktline/LineDispatch-v0", "kwargs": dict(TINY_ENV)},
        "algorithm": "maskable_ppo",
        "policy": {"network": "mlp", "kwargs": {"hidden": [16, 16]}},
        "hyperparameters": {
            "learning_rate": 3e-4,
            "n_steps": 400,
            "batch_size": 200,
            "n_epochs": 1,
            "num_env_runners": 1,
            "num_envs_per_env_runner": 1,
        },
        "budget": {"total_timesteps": 1200},
        "n_envs": 1,
        "eval": {"every_steps": 1_000_000, "episodes": 1, "seed": 500},
        "checkpoint": {"every_steps": 400},
        "tracking": {"experiment": "ray-tests"},
        "output_dir": "runs",
        "progress": False,
    }
    for key, value in overrides.items():
        node = cfg
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return cfg


def write_config(folder: Path, cfg: dict[str, Any]) -> Path:
    """``cfg`` as ``<folder>/<name>.yaml``."""
    path = folder / f"{cfg['name']}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def train_cmd(config: Path | str, *extra: str) -> list[str]:
    """The ``taktline train`` command line (through its module, so it runs from any venv)."""
    return [sys.executable, "-m", "taktline.cli_train", "train", str(config), *extra]


def mlflow_client(folder: Path) -> Any:
    """An MLflow client on the embedded store of ``folder``."""
    import mlflow

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    return mlflow.MlflowClient(uri, uri)


NO_TRAINER_CHECK = textwrap.dedent(
    """
    import sys
    banned = ("ray", "stable_baselines3", "sb3_contrib")
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in banned)
    assert not loaded, f"imported {loaded[:5]}"
    """
)
"""Python that fails when Ray, SB3 or sb3-contrib were imported (appended to a script)."""


# ---- several nodes on one machine --------------------------------------------------------------
@dataclass
class WorkerNode:
    """A second ``ray start --block`` joined to a head: its custom resource label and process."""

    label: str
    process: subprocess.Popen[bytes]
    node_id: str = ""


def start_worker_node(
    head: Cluster, label: str, num_cpus: int = 1, timeout_s: float = 120.0
) -> WorkerNode:
    """``ray start --address HEAD --block`` with ``num_cpus`` and the custom resource
    ``{label: 1}``, on free ports, in its own session (so :func:`kill_worker_node` can take
    down the node's raylet and workers at once); returns once the head sees the node alive.

    The caller must be connected to ``head`` (``ray.init(address=head.address)``): the node id
    is read from ``ray.nodes()``.
    """
    import json

    import ray

    cmd = [
        RAY,
        "start",
        "--address",
        head.address,
        "--block",
        "--num-cpus",
        str(num_cpus),
        "--resources",
        json.dumps({label: 1}),
        "--node-ip-address",
        "127.0.0.1",
        "--node-manager-port",
        str(free_port()),
        "--object-manager-port",
        str(free_port()),
        "--dashboard-agent-listen-port",
        str(free_port()),
        "--dashboard-agent-grpc-port",
        str(free_port()),
        "--runtime-env-agent-port",
        str(free_port()),
        "--metrics-export-port",
        str(free_port()),
        "--disable-usage-stats",
    ]
    log = open(Path(head.temp_dir) / f"ray_start_{label}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=dict(os.environ)
    )
    node = WorkerNode(label, proc)
    deadline = time.monotonic() + timeout_s
    while not node.node_id:
        alive = [n for n in ray.nodes() if n["Alive"] and label in n.get("Resources", {})]
        if alive:
            node.node_id = str(alive[0]["NodeID"])
            break
        if proc.poll() is not None or time.monotonic() > deadline:
            kill_worker_node(node)
            raise RuntimeError(f"node {label} did not join; see {head.temp_dir}/ray_start_*.log")
        time.sleep(0.5)
    return node


def kill_worker_node(node: WorkerNode) -> None:
    """SIGKILL the node's whole process group (its raylet, agents and workers), as when a
    machine is lost; no graceful ``ray stop``. Idempotent."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(node.process.pid, signal.SIGKILL)
    node.process.wait(30)


def head_node_id() -> str:
    """The id of the connected cluster's head node."""
    import ray

    for n in ray.nodes():
        if n["Alive"] and "node:__internal_head__" in n.get("Resources", {}):
            return str(n["NodeID"])
    raise RuntimeError("no alive head node in ray.nodes()")
